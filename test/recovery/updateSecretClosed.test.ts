/**
 * `AmqpClient.updateSecret` on a client that is closed (its scope ended) or has given up fails
 * with `AmqpClosedError`, as every other operation of such a client does: no link will ever come
 * to take the secret.
 */
import { AmqpClient, ConnectionConfig } from "@effect-amqp/client"
import { ScriptedPeer, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, PubSub, Redacted, Schedule, Scope } from "effect"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("secret-closed")

describe("updateSecret used after close", () => {
  it.live("on a client whose scope has closed fails with AmqpClosedError", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const options = yield* ConnectionConfig.make({
            host: "127.0.0.1",
            port: broker.amqpPort,
            connectionName: names.next("closed")
          })
          const scope = yield* Scope.make()
          const client = yield* AmqpClient.make(options).pipe(Scope.provide(scope))
          yield* Scope.close(scope, Exit.void)
          const exit = yield* Effect.exit(client.updateSecret(Redacted.make("guest2"), "after close"))
          assert.isTrue(Exit.isFailure(exit), "updateSecret on a closed client succeeded")
          const channelExit = yield* Effect.exit(Effect.scoped(client.channel()))
          assert.isTrue(Exit.isFailure(channelExit))
        }),
        names.own(broker)
      )
    }))

  it.live("on a client that gave up fails with AmqpClosedError", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      yield* Effect.forkScoped(
        Effect.gen(function*() {
          const first = yield* peer.accept()
          yield* first.handshake({ tune: { heartbeat: 0 } })
          yield* first.close("reset")
        }),
        { startImmediately: true }
      )
      const options = yield* ConnectionConfig.make({
        host: "127.0.0.1",
        port: peer.port,
        heartbeat: 0,
        connectionTimeout: 300,
        handshakeTimeout: 300,
        closeTimeout: 300
      })
      const client = yield* AmqpClient.make(options, {
        reconnect: Schedule.spaced("20 millis").pipe(Schedule.upTo({ times: 1 }))
      })
      const events = yield* client.subscribe
      const last = yield* PubSub.take(events).pipe(
        Effect.repeat({ until: (e) => e._tag === "GaveUp" }),
        Effect.timeout("10 seconds")
      )
      assert.strictEqual(last._tag, "GaveUp")
      const error = yield* client.updateSecret(Redacted.make("x"), "after giving up").pipe(
        Effect.flip,
        Effect.timeout("3 seconds"),
        Effect.option
      )
      assert.strictEqual(
        error._tag === "Some" ? error.value._tag : "succeeded",
        "AmqpClosedError",
        "updateSecret on a client that gave up"
      )
    })))
})
