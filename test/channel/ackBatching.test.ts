/**
 * Acknowledgements cost the broker as few frames as they can, and never acknowledge more than the
 * application did. Deliveries arrive from a scripted peer in one socket read:
 * - acked in turn, each covering every tag below it, they become one `ack <last> multiple` frame,
 *   in one write of the client's socket (counted on that socket, by its local port, so the peer's
 *   reads, which TCP may merge, cannot hide a second write);
 * - acked out of order, a tag with an unsettled one below it goes alone, without `multiple`;
 * - a nack between acks keeps its place: the acks before and after it are separate frames.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, delivery, recordUntilEnd } from "../support/scriptedAmqp.ts"
import { countWrites } from "../support/socketWrites.ts"

/**
 * Sends `count` deliveries in one chunk once the consumer is started, and returns what the client
 * sent from then on (acks, nacks, cancel, closes) and how many writes the client made until its
 * first frame after the deliveries had arrived whole.
 */
const serve = (peer: ScriptedPeer.ScriptedPeer, count: number, started: Deferred.Deferred<void>) =>
  Effect.gen(function*() {
    let clientPort: number | undefined
    const counter = yield* countWrites(() => clientPort)
    const connection = yield* peer.accept()
    yield* connection.handshake({ tune: { heartbeat: 0 } })
    yield* connection.expect("channel.open")
    yield* connection.sendMethod(CHANNEL, Methods.channelOpenOk())
    yield* connection.expect("basic.consume")
    yield* connection.sendMethod(CHANNEL, Methods.basicConsumeOk({ consumerTag: "ctag" }))
    yield* Deferred.await(started)
    clientPort = connection.clientPort
    yield* connection.sendRaw(
      Buffer.concat(Array.from({ length: count }, (_, i) => delivery("ctag", i + 1, `m${i + 1}`)))
    )
    const sent = yield* recordUntilEnd(connection)
    return { sent, writes: counter.writes }
  })

/** Consumes on a client connection to `peer` with `handle` until `count` deliveries are handled. */
const consume = (
  peer: ScriptedPeer.ScriptedPeer,
  count: number,
  started: Deferred.Deferred<void>,
  handle: (delivery: AmqpChannel.Delivery, index: number) => Effect.Effect<void, unknown>
) =>
  Effect.scoped(Effect.gen(function*() {
    const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`)
    const channel = yield* AmqpChannel.make(connection)
    let handled = 0
    const done = yield* Deferred.make<void>()
    const consumer = yield* Effect.forkScoped(
      channel.consumeWith("q", (d) =>
        Effect.map(handle(d, handled), () => {
          if (++handled === count) Deferred.doneUnsafe(done, Exit.void)
        }), { consumerTag: "ctag" })
    )
    yield* Effect.sleep("50 millis")
    yield* Deferred.succeed(started, undefined)
    yield* Deferred.await(done).pipe(Effect.timeout("5 seconds"))
    // What the handlers queued leaves before the consumer's cancel.
    yield* Effect.sleep("20 millis")
    yield* Fiber.interrupt(consumer)
  }))

const run = (count: number, handle: (delivery: AmqpChannel.Delivery, index: number) => Effect.Effect<void, unknown>) =>
  Effect.gen(function*() {
    const peer = yield* ScriptedPeer.make()
    const started = yield* Deferred.make<void>()
    const served = yield* Effect.forkScoped(serve(peer, count, started), { startImmediately: true })
    yield* consume(peer, count, started, handle)
    return yield* Fiber.join(served)
  })

const CLOSE = ["cancel ctag", "channel.close", "connection.close"]

describe("acknowledgements", () => {
  it.live("of 40 deliveries read at once, each acked in turn, leave as one frame in one write", () =>
    leakChecked(Effect.gen(function*() {
      const outcome = yield* run(40, (d) => d.ack())
      assert.deepStrictEqual(outcome.sent, ["ack 40 multiple", ...CLOSE])
      // The ack frame and nothing else until the cancel: one write.
      assert.strictEqual(outcome.writes, 1 + CLOSE.length)
    })))

  it.live("acked out of order: a tag with an unsettled one below it goes alone", () =>
    leakChecked(Effect.gen(function*() {
      const held: Array<AmqpChannel.Delivery> = []
      const outcome = yield* run(6, (d, index) => {
        // Even tags are acked as they come; odd ones once the last delivery is in, in turn.
        if (d.deliveryTag % 2 === 0) {
          const ack = d.ack()
          return index === 5 ? Effect.andThen(ack, Effect.forEach(held, (h) => h.ack(), { discard: true })) : ack
        }
        held.push(d)
        return Effect.void
      })
      // 2, 4 and 6 each had 1 unsettled below them; acking 1, 3 and 5 then settled all through 6,
      // but the frame says 5: the broker had 1, 3 and 5 outstanding, and gets exactly those.
      assert.deepStrictEqual(outcome.sent, ["ack 2", "ack 4", "ack 6", "ack 5 multiple", ...CLOSE])
    })))

  it.live("a nack between acks keeps its place", () =>
    leakChecked(Effect.gen(function*() {
      const outcome = yield* run(5, (d) => d.deliveryTag === 3 ? d.nack({ requeue: false }) : d.ack())
      assert.deepStrictEqual(outcome.sent, ["ack 2 multiple", "nack 3", "ack 5 multiple", ...CLOSE])
    })))
})
