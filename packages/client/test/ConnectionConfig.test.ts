import { ConnectionConfig } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"

describe("ConnectionConfig", () => {
  it("hides the password of a URL, even one with an unencoded @", () => {
    assert.strictEqual(ConnectionConfig.redactUrl("amqp://u:p@ss@host/?foo=1"), "amqp://u:***@host/?foo=1")
    assert.strictEqual(ConnectionConfig.redactUrl("amqp://guest:secret@h:1/v"), "amqp://guest:***@h:1/v")
    assert.strictEqual(ConnectionConfig.redactUrl("amqp://h/"), "amqp://h/")
    assert.strictEqual(ConnectionConfig.redactUrl("amqps://user@h"), "amqps://user@h")
  })

  it.effect("never shows the password in the error of a bad URL", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ConnectionConfig.fromUrl("amqp://u:p@ss-word@host/?foo=1"))
      assert.strictEqual(error._tag, "AmqpConfigError")
      assert.notInclude(error.message, "ss-word")
    }))

  it.effect("decodes vhost, credentials and query parameters", () =>
    Effect.gen(function*() {
      const options = yield* ConnectionConfig.fromUrl(
        "amqps://us%40er:p%2Fw@rabbit.local:5999/my%2fvhost?heartbeat=7&frame_max=16384&channel_max=9" +
          "&connection_timeout=1500&auth_mechanism=amqplain"
      )
      assert.deepStrictEqual(
        [options.username, Redacted.value(options.password), options.host, options.port, options.vhost],
        ["us@er", "p/w", "rabbit.local", 5999, "my/vhost"]
      )
      assert.deepStrictEqual(
        [options.heartbeat, options.frameMax, options.channelMax, options.connectionTimeout, options.authMechanism],
        [7, 16384, 9, 1500, "AMQPLAIN"]
      )
      assert.isDefined(options.tls)
      assert.strictEqual((yield* ConnectionConfig.fromUrl("amqp://h")).vhost, "/")
      assert.strictEqual((yield* ConnectionConfig.fromUrl("amqp://h/%2f")).vhost, "/")
      assert.strictEqual((yield* ConnectionConfig.fromUrl("amqp://h/")).vhost, "")
      assert.strictEqual((yield* ConnectionConfig.fromUrl("amqps://h")).port, 5671)
    }))

  it.effect("refuses a frame_max below 8192, unknown parameters, two-segment vhosts and fragments", () =>
    Effect.gen(function*() {
      const small = yield* Effect.flip(ConnectionConfig.fromUrl("amqp://h/?frame_max=4096"))
      assert.strictEqual(
        small.message,
        "invalid connection options: frameMax must be 0 (no limit) or at least 8192, got 4096"
      )
      const unknown = yield* Effect.flip(ConnectionConfig.fromUrl("amqp://h/?nope=1"))
      assert.include(unknown.message, "unknown query parameter nope")
      const segments = yield* Effect.flip(ConnectionConfig.fromUrl("amqp://h/a/b"))
      assert.include(segments.message, "one path segment")
      const scheme = yield* Effect.flip(ConnectionConfig.fromUrl("http://h/"))
      assert.include(scheme.message, "amqp:// or amqps://")
      for (const url of ["amqp:rabbit.example:5672", "amqp:user:pw@rabbit", "amqps:/h", "http://h/"]) {
        // http:// is refused for its scheme, the others for their missing "//".
        const slashes = yield* Effect.flip(ConnectionConfig.fromUrl(url))
        assert.include(slashes.message, "must start with amqp:// or amqps://", url)
        assert.notInclude(slashes.message, ":pw@", url)
      }
      for (const url of ["amqp://h/v#frag", "amqp://h#", "amqp://guest:pa#ss@h/"]) {
        const fragment = yield* Effect.flip(ConnectionConfig.fromUrl(url))
        assert.include(fragment.message, "must not have a fragment", url)
        assert.notInclude(fragment.message, "pa#ss", url)
      }
      const port = yield* Effect.flip(ConnectionConfig.make({ port: 70000 }))
      assert.include(port.message, "port")
    }))

  it.effect("refuses clientProperties that cannot be sent, and a start-ok no server would take", () =>
    Effect.gen(function*() {
      const longKey = yield* Effect.flip(ConnectionConfig.make({ clientProperties: { ["k".repeat(256)]: 1 } }))
      assert.include(longKey.message, "clientProperties cannot be encoded")
      const notTable = yield* Effect.flip(ConnectionConfig.make({ clientProperties: [] as never }))
      assert.include(notTable.message, "clientProperties must be a field table")
      const huge = yield* Effect.flip(ConnectionConfig.make({ clientProperties: { note: "n".repeat(140_000) } }))
      assert.match(huge.message, /make connection\.start-ok 14\d{4} bytes, over the 131072/)
      // A large token for a password passes: RabbitMQ takes it when its initial_frame_max allows.
      const token = yield* ConnectionConfig.make({ password: "t".repeat(6_000) })
      assert.strictEqual(token.username, "guest")
    }))
})
