import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option } from "effect"
import * as Broker from "../src/Broker.ts"

const withEnv = (env: Record<string, string>) => Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))

describe("Broker", () => {
  it.effect("takes --url over AMQP_URL, and AMQP_URL over the local default", () =>
    Effect.gen(function*() {
      const env = { AMQP_URL: "amqp://u:p@127.0.0.1:5673" }
      assert.deepStrictEqual(yield* Broker.target(Option.some("amqp://127.0.0.1:5674")).pipe(withEnv(env)), {
        url: "amqp://127.0.0.1:5674",
        source: "flag"
      })
      assert.deepStrictEqual(yield* Broker.target(Option.none()).pipe(withEnv(env)), {
        url: "amqp://u:p@127.0.0.1:5673",
        source: "env"
      })
      const local = { url: Broker.defaultUrl, source: "default" }
      assert.deepStrictEqual(yield* Broker.target(Option.none()).pipe(withEnv({})), local)
      assert.deepStrictEqual(yield* Broker.target(Option.none()).pipe(withEnv({ AMQP_URL: " " })), local)
    }))

  it("hides the whole password, even one with @ or / in it", () => {
    assert.strictEqual(Broker.displayUrl("amqp://guest:guest@127.0.0.1:5672"), "amqp://guest:***@127.0.0.1:5672")
    assert.strictEqual(Broker.displayUrl("amqp://u:p@ss@h:1/v?heartbeat=5"), "amqp://u:***@h:1/v?heartbeat=5")
    assert.strictEqual(Broker.displayUrl("amqps://u:p/s@s@h"), "amqps://u:***@h")
    assert.strictEqual(Broker.displayUrl("amqp://h:5672/v"), "amqp://h:5672/v")
    assert.strictEqual(Broker.displayUrl("amqp://user@h"), "amqp://user@h")
  })

  it.live("does not replace a URL the user gave when it refuses the connection", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Broker.connect({ url: "amqp://guest:guest@127.0.0.1:1", source: "env" }, {
          connectionName: "effect-amqp cli test",
          privateFallback: true
        })
      )
      assert.strictEqual(error._tag, "AmqpConnectionError")
      assert.match(error.message, /^cannot connect to 127\.0\.0\.1:1: ECONNREFUSED/)
    }))

  it.live("starts a private node when the local default refuses the connection", () =>
    Effect.gen(function*() {
      const { connection, target } = yield* Broker.connect({
        url: "amqp://guest:guest@127.0.0.1:1",
        source: "default"
      }, { connectionName: "effect-amqp cli test", privateFallback: true })
      assert.strictEqual(target.source, "private node")
      assert.match(target.url, /^amqp:\/\/guest:guest@127\.0\.0\.1:\d+$/)
      assert.notStrictEqual(target.url, Broker.defaultUrl)
      assert.isTrue(yield* connection.isOpen)
    }), 60_000)
})
