/**
 * A password with no "@host" after it must not show in any message, whatever
 * form the scheme takes; and forms with an "@" after host[:port] that must still parse.
 * Parsing only: nothing connects.
 */
import { ConnectionConfig } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Redacted } from "effect"
import { leakChecked } from "../support/Probe.ts"

const secret = "hunter2-Pa55"

const message = (url: string) =>
  Effect.map(Effect.exit(ConnectionConfig.fromUrl(url)), (exit) => Exit.isFailure(exit) ? String(exit.cause) : "ok")

describe("user:password without @host", () => {
  it.live("no message shows the password, with or without '//' or a leading space", () =>
    leakChecked(Effect.gen(function*() {
      const urls = [
        `amqp://user:${secret}`,
        `amqp:user:${secret}`,
        `amqp:/user:${secret}`,
        `AMQP:user:${secret}`,
        ` amqp://user:${secret}`,
        ` amqp://user:${secret}/vhost`
      ]
      const shown: Array<string> = []
      for (const url of urls) {
        if ((yield* message(url)).includes(secret)) shown.push(url)
      }
      assert.deepStrictEqual(shown, [])
    })))

  it.live("redactUrl hides the password of a URL without '//' and without '@host'", () =>
    leakChecked(Effect.sync(() => {
      assert.deepStrictEqual(
        [`amqp:user:${secret}`, ` amqp://user:${secret}`].map(ConnectionConfig.redactUrl).filter((s) =>
          s.includes(secret)
        ),
        []
      )
    })))

  it.live("forms with '@' after the host that parse", () =>
    leakChecked(Effect.gen(function*() {
      const got: Array<unknown> = []
      for (
        const url of [
          "amqp://host/v?connection_name=a@b&heartbeat=5",
          "amqp://host?heartbeat=5&connection_name=a@b",
          "amqp:///v@x",
          "amqp://:5673/v@x",
          "amqp://[::1]:5673/v@x"
        ]
      ) {
        const exit = yield* Effect.exit(ConnectionConfig.fromUrl(url))
        got.push(
          Exit.isSuccess(exit)
            ? [
              exit.value.host,
              exit.value.port,
              exit.value.vhost,
              exit.value.connectionName,
              exit.value.heartbeat,
              Redacted.value(exit.value.password)
            ]
            : String(exit.cause)
        )
      }
      assert.deepStrictEqual(got, [
        ["host", 5672, "v", "a@b", 5, "guest"],
        ["host", 5672, "/", "a@b", 5, "guest"],
        ["127.0.0.1", 5672, "v@x", undefined, 60, "guest"],
        ["127.0.0.1", 5673, "v@x", undefined, 60, "guest"],
        ["::1", 5673, "v@x", undefined, 60, "guest"]
      ])
    })))
})
