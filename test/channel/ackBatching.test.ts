/**
 * Acknowledgements share system calls: the acks a handler makes for the deliveries of one socket
 * read leave the client's socket in one write, in order. Writes are counted on the client's own
 * socket (by its local port), so the scripted peer's reads, which TCP may merge, cannot hide a
 * second write.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import * as Net from "node:net"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, delivery, recordUntilEnd } from "../support/scriptedAmqp.ts"

const DELIVERIES = 40

interface WritableInternals {
  _writeGeneric: (this: Net.Socket, ...args: Array<unknown>) => unknown
}

/** Counts the writes (single or gathered) that sockets bound to `localPort()` hand to the system. */
const countWrites = (localPort: () => number | undefined) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const proto = Net.Socket.prototype as unknown as WritableInternals
      const original = proto._writeGeneric
      const counter = { writes: 0, restore: () => (proto._writeGeneric = original) }
      proto._writeGeneric = function(this: Net.Socket, ...args) {
        if (this.localPort === localPort()) counter.writes++
        return original.apply(this, args)
      }
      return counter
    }),
    (counter) => Effect.sync(counter.restore)
  )

describe("acknowledgements", () => {
  it.live(`of ${DELIVERIES} deliveries read at once leave in one write, in order`, () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      let clientPort: number | undefined
      const counter = yield* countWrites(() => clientPort)
      const consuming = yield* Deferred.make<void>()
      const served = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (connection) =>
          Effect.gen(function*() {
            yield* connection.handshake({ tune: { heartbeat: 0 } })
            yield* connection.expect("channel.open")
            yield* connection.sendMethod(CHANNEL, Methods.channelOpenOk())
            yield* connection.expect("basic.consume")
            yield* connection.sendMethod(CHANNEL, Methods.basicConsumeOk({ consumerTag: "ctag" }))
            yield* Deferred.await(consuming)
            clientPort = connection.clientPort
            const frames = Array.from({ length: DELIVERIES }, (_, i) => delivery("ctag", i + 1, `m${i + 1}`))
            yield* connection.sendRaw(Buffer.concat(frames))
            const seen: Array<string> = []
            for (let i = 0; i < DELIVERIES; i++) {
              const ack = yield* connection.expect("basic.ack")
              seen.push(`ack ${ack.deliveryTag}`)
            }
            const writes = counter.writes
            return { seen, writes, rest: yield* recordUntilEnd(connection) }
          })),
        { startImmediately: true }
      )

      yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`)
        const channel = yield* AmqpChannel.make(connection)
        let handled = 0
        const done = yield* Deferred.make<void>()
        const consumer = yield* Effect.forkScoped(
          channel.consumeWith("q", (d) =>
            Effect.map(d.ack(), () => {
              if (++handled === DELIVERIES) Deferred.doneUnsafe(done, Exit.void)
            }), { consumerTag: "ctag" })
        )
        yield* Effect.sleep("50 millis")
        yield* Deferred.succeed(consuming, undefined)
        yield* Deferred.await(done).pipe(Effect.timeout("5 seconds"))
        yield* Fiber.interrupt(consumer)
      }))

      const outcome = yield* Fiber.join(served)
      assert.deepStrictEqual(outcome.seen, Array.from({ length: DELIVERIES }, (_, i) => `ack ${i + 1}`))
      assert.strictEqual(outcome.writes, 1)
      assert.deepStrictEqual(outcome.rest, ["cancel ctag", "channel.close", "connection.close"])
    })))
})
