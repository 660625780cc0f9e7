/**
 * `amqp://` URLs as RabbitMQ's URI spec reads them: percent-decoded credentials, host and vhost
 * (one path segment), query parameters checked by range, and a typed `AmqpConfigError` that never
 * shows the password. The decoded vhost is checked on the wire too, against the broker.
 */
import { AmqpConnection, type AmqpConnectionError, ConnectionConfig, ServerClosed } from "@effect-amqp/client"
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("connection-config")

const password = "hunter2-Pa55"

/** Expects `url` to be refused; returns the message after checking that the password is hidden. */
const configError = (url: string) =>
  ConnectionConfig.fromUrl(url).pipe(
    Effect.flip,
    Effect.map((error) => {
      assert.strictEqual(error._tag, "AmqpConfigError")
      assert.notInclude(error.message, password)
      assert.notInclude(JSON.stringify(error), password)
      assert.notInclude(String(error), password)
      return error.message
    })
  )

describe("URL config", () => {
  it.live("percent-decodes the vhost: /%2f is /, /my%20vhost is 'my vhost', no path is /, an empty path is ''", () =>
    leakChecked(Effect.gen(function*() {
      const vhosts: ReadonlyArray<readonly [string, string]> = [
        ["amqp://127.0.0.1/%2f", "/"],
        ["amqp://127.0.0.1/%2F", "/"],
        ["amqp://127.0.0.1/my%20vhost", "my vhost"],
        ["amqp://127.0.0.1/a%2Fb", "a/b"],
        ["amqp://127.0.0.1/plain", "plain"],
        ["amqp://127.0.0.1", "/"],
        ["amqp://127.0.0.1?heartbeat=5", "/"],
        ["amqp://127.0.0.1/", ""],
        ["amqp://127.0.0.1:5672/?heartbeat=5", ""]
      ]
      for (const [url, vhost] of vhosts) {
        assert.strictEqual((yield* ConnectionConfig.fromUrl(url)).vhost, vhost, url)
      }
    })))

  it.live("reads credentials, port and every query parameter", () =>
    leakChecked(Effect.gen(function*() {
      const options = yield* ConnectionConfig.fromUrl(
        "amqp://us%40er:p%3As%2Fs@127.0.0.1:5673/v?heartbeat=0&frame_max=0&channel_max=10" +
          "&connection_timeout=2500&auth_mechanism=amqplain&connection_name=n%201"
      )
      assert.deepStrictEqual(
        { ...options, password: Redacted.value(options.password) },
        {
          ...ConnectionConfig.defaults,
          host: "127.0.0.1",
          port: 5673,
          username: "us@er",
          password: "p:s/s",
          vhost: "v",
          heartbeat: 0,
          frameMax: 0,
          channelMax: 10,
          connectionTimeout: 2500,
          authMechanism: "AMQPLAIN",
          connectionName: "n 1"
        }
      )
      const secure = yield* ConnectionConfig.fromUrl("amqps://[::1]")
      assert.deepStrictEqual([secure.host, secure.port, secure.tls], ["::1", 5671, {}])
    })))

  it.live("decodes a percent-encoded host like the URI spec's example", () =>
    leakChecked(Effect.gen(function*() {
      // https://www.rabbitmq.com/docs/uri-spec: user "usera", password "apass", host "hoast", vhost "v/host".
      const options = yield* ConnectionConfig.fromUrl("amqp://user%61:%61pass@ho%61st:10000/v%2fhost")
      assert.deepStrictEqual(
        [options.username, Redacted.value(options.password), options.host, options.port, options.vhost],
        ["usera", "apass", "hoast", 10000, "v/host"]
      )
    })))

  it.live("refuses malformed URLs and bad ports with the password hidden", () =>
    leakChecked(Effect.gen(function*() {
      assert.strictEqual(yield* configError("not a url"), "malformed AMQP URL: not a url")
      assert.strictEqual(
        yield* configError(`http://guest:${password}@127.0.0.1`),
        "AMQP URL must start with amqp:// or amqps://, got http://"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1:99999`),
        "malformed AMQP URL: amqp://guest:***@127.0.0.1:99999"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1:port`),
        "malformed AMQP URL: amqp://guest:***@127.0.0.1:port"
      )
      const zero = yield* configError(`amqp://guest:${password}@127.0.0.1:0`)
      assert.match(zero, /^invalid connection options: .*\n\s+at \["port"\]$/)
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1/a/b`),
        "the vhost in amqp://guest:***@127.0.0.1/a/b must be one path segment; encode \"/\" as %2f"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1/%zz`),
        "malformed percent-encoding in the vhost of amqp://guest:***@127.0.0.1/%zz"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}%zz@127.0.0.1/`),
        "malformed percent-encoding in the password of amqp://guest:***@127.0.0.1/"
      )
    })))

  it.live("refuses query values out of range or not integers, and unknown parameters", () =>
    leakChecked(Effect.gen(function*() {
      const base = `amqp://guest:${password}@127.0.0.1/`
      assert.strictEqual(
        yield* configError(`${base}?heartbeat=abc`),
        "query parameter heartbeat must be an integer, got \"abc\""
      )
      assert.strictEqual(
        yield* configError(`${base}?frame_max=1.5`),
        "query parameter frame_max must be an integer, got \"1.5\""
      )
      assert.strictEqual(
        yield* configError(`${base}?channel_max=`),
        "query parameter channel_max must be an integer, got \"\""
      )
      const outOfRange: ReadonlyArray<readonly [string, string]> = [
        ["frame_max=4096", "frame_max must be 0 (no limit) or at least 8192\n  at [\"frameMax\"]"],
        ["heartbeat=-1", "Expected a value between 0 and 65535\n  at [\"heartbeat\"]"],
        ["channel_max=65536", "Expected a value between 0 and 65535\n  at [\"channelMax\"]"],
        ["connection_timeout=0", "Expected a value between 1 and 3600000\n  at [\"connectionTimeout\"]"],
        ["auth_mechanism=cram-md5", "Expected \"PLAIN\" | \"AMQPLAIN\" | \"EXTERNAL\"\n  at [\"authMechanism\"]"]
      ]
      for (const [query, problem] of outOfRange) {
        assert.strictEqual(yield* configError(`${base}?${query}`), `invalid connection options: ${problem}`)
      }
      assert.strictEqual(
        yield* configError(`${base}?heartbeat=5&verify=none`),
        "unknown query parameter verify in amqp://guest:***@127.0.0.1/?heartbeat=5&verify=none"
      )
    })))

  it.live("sends the decoded vhost to the broker: /%2f opens /, /my%20vhost and / are refused by name", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const root = `amqp://guest:guest@127.0.0.1:${broker.amqpPort}`
          yield* Effect.scoped(AmqpConnection.fromUrl(`${root}/%2f`, { connectionName: names.next("root") }))
          // An empty path is the vhost "", which the broker has not either (hence two spaces).
          const refusals: ReadonlyArray<readonly [string, string]> = [
            ["/my%20vhost", "NOT_ALLOWED - vhost my vhost not found"],
            ["/", "NOT_ALLOWED - vhost  not found"]
          ]
          for (const [path, replyText] of refusals) {
            const error = yield* Effect.scoped(
              AmqpConnection.fromUrl(`${root}${path}`, { connectionName: names.next("missing") })
            ).pipe(Effect.flip, Effect.timeout("5 seconds"))
            assert.deepStrictEqual(
              (error as AmqpConnectionError).reason,
              new ServerClosed({ replyCode: 530, replyText, classId: 10, methodId: 40, method: "connection.open" }),
              path
            )
            assert.isTrue((error as AmqpConnectionError).isPermanent, path)
          }
        }),
        names.own(broker)
      )
    }))
})
