/**
 * A recovering client against a scripted peer, where the timing of each reply is the test's: a
 * consumer that the application ends while a reconnect's `basic.consume` for it is in flight is
 * cancelled as soon as the `consume-ok` comes, and what was delivered to it meanwhile is requeued
 * instead of sitting unacknowledged in a buffer nobody reads.
 */
import { AmqpClient, ConnectionConfig } from "@effect-amqp/client"
import { encodeMethod, Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Schedule } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, delivery, recordUntilEnd } from "../support/scriptedAmqp.ts"

/** Connection handshake and `channel.open`, answered. */
const openChannel = (connection: ScriptedPeer.PeerConnection) =>
  Effect.gen(function*() {
    yield* connection.handshake({ tune: { heartbeat: 0 } })
    yield* connection.expect("channel.open")
    yield* connection.sendMethod(CHANNEL, Methods.channelOpenOk())
  })

describe("AmqpClient against a scripted peer", () => {
  it.live("a consumer ended while a reconnect's basic.consume is in flight is cancelled once consume-ok comes", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const consumeInFlight = yield* Deferred.make<void>()
      const consumerEnded = yield* Deferred.make<void>()
      const seen: Array<string> = []
      const served = yield* Effect.forkScoped(
        Effect.gen(function*() {
          const first = yield* peer.accept()
          yield* openChannel(first)
          yield* first.expect("basic.consume")
          yield* first.sendMethod(CHANNEL, Methods.basicConsumeOk({ consumerTag: "ctag" }))
          yield* first.close("reset")

          const second = yield* peer.accept({ timeoutMillis: 5_000 })
          yield* openChannel(second)
          const consume = yield* second.expect("basic.consume")
          assert.strictEqual(consume.consumerTag, "ctag")
          yield* Deferred.succeed(consumeInFlight, undefined)
          yield* Deferred.await(consumerEnded)
          // The reply the client waited for, and a delivery right behind it, in one read.
          yield* second.sendRaw(Buffer.concat([
            encodeMethod(CHANNEL, Methods.basicConsumeOk({ consumerTag: "ctag" })),
            delivery("ctag", 1, "late")
          ]))
          yield* recordUntilEnd(second, seen)
        }),
        { startImmediately: true }
      )

      const handled: Array<string> = []
      yield* Effect.scoped(Effect.gen(function*() {
        const options = yield* ConnectionConfig.make({ host: "127.0.0.1", port: peer.port, heartbeat: 0 })
        const client = yield* AmqpClient.make(options, { reconnect: Schedule.spaced("20 millis") })
        const channel = yield* client.channel()
        const consumer = yield* Effect.forkChild(
          channel.consumeWith("q", (d) => Effect.sync(() => handled.push(Buffer.from(d.body).toString())), {
            consumerTag: "ctag"
          }),
          { startImmediately: true }
        )
        yield* Deferred.await(consumeInFlight).pipe(Effect.timeout("5 seconds"))
        yield* Fiber.interrupt(consumer)
        yield* Deferred.succeed(consumerEnded, undefined)
        // The client closes once the peer has seen the cancel and the requeue, or after 5 s.
        for (let i = 0; i < 500 && seen.length < 2; i++) yield* Effect.sleep("10 millis")
      }))
      yield* Fiber.join(served)

      assert.deepStrictEqual(handled, [])
      assert.deepStrictEqual(seen, ["cancel ctag", "reject 1 requeue", "channel.close", "connection.close"])
    })))
})
