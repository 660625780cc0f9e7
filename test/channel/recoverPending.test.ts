/**
 * While a `basic.recover` is on its way, the broker has requeued (or will have, as it reads the
 * recover) every delivery the channel had outstanding, those still on their way to it included:
 * an ack of one then would close the channel with 406 "unknown delivery tag". Such an ack fails
 * with `AmqpUnknownDeliveryTag` and is not sent, whether the delivery had arrived before the
 * recover went out or arrives before its recover-ok; the channel stays open.
 */
import { AmqpChannel, AmqpConnection, AmqpUnknownDeliveryTag } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Queue, Stream } from "effect"
import { onSharedBroker } from "../support/channelKit.ts"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, delivery, recordUntilEnd } from "../support/scriptedAmqp.ts"

describe("an ack while basic.recover is on its way", () => {
  it.live("of a delivery received before it: refused unsent, and the broker keeps the channel open", () =>
    Effect.gen(function*() {
      const outcome = yield* onSharedBroker((connect) =>
        Effect.gen(function*() {
          const connection = yield* connect()
          const channel = yield* AmqpChannel.make(connection)
          const { queue } = yield* channel.queueDeclare("", { exclusive: true })
          for (let i = 0; i < 5; i++) yield* channel.publish("", queue, Buffer.from(`m${i}`))
          const held = Array.from(yield* channel.consume(queue).pipe(Stream.take(5), Stream.runCollect))
          const recover = yield* Effect.forkChild(channel.recover(true), { startImmediately: true })
          const ack = yield* Effect.flip(held[0]!.ack())
          yield* Fiber.join(recover)
          // A method's reply shows the broker took everything before it without closing the channel.
          yield* channel.queueDeclare(queue, { passive: true })
          return { ack, open: yield* channel.isOpen, tag: held[0]!.deliveryTag }
        })
      )
      assert.deepStrictEqual(
        outcome.ack,
        new AmqpUnknownDeliveryTag({ deliveryTag: outcome.tag, operation: "ack", reason: "settled" })
      )
      assert.isTrue(outcome.open)
    }))

  it.live("of a delivery arriving before its recover-ok: refused unsent", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const acked = yield* Deferred.make<void>()
      const served = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.handshake({ tune: { heartbeat: 0 } })
            yield* client.expect("channel.open")
            yield* client.sendMethod(CHANNEL, Methods.channelOpenOk())
            yield* client.expect("basic.consume")
            yield* client.sendMethod(CHANNEL, Methods.basicConsumeOk({ consumerTag: "ctag" }))
            yield* client.sendRaw(delivery("ctag", 1, "before"))
            yield* client.expect("basic.recover")
            // Sent before the broker read the recover, it arrives after the recover went out.
            yield* client.sendRaw(delivery("ctag", 2, "crossing"))
            yield* Deferred.await(acked)
            yield* client.sendMethod(CHANNEL, Methods.basicRecoverOk())
            return yield* recordUntilEnd(client)
          })),
        { startImmediately: true }
      )
      const outcome = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`, {
          heartbeat: 0
        })
        const channel = yield* AmqpChannel.make(connection)
        const deliveries = yield* Queue.unbounded<AmqpChannel.Delivery>()
        const consumer = yield* Effect.forkChild(
          channel.consumeWith("q", (d) => Queue.offer(deliveries, d), { consumerTag: "ctag" }),
          { startImmediately: true }
        )
        yield* Queue.take(deliveries)
        const recover = yield* Effect.forkChild(channel.recover(true), { startImmediately: true })
        const crossing = yield* Queue.take(deliveries)
        const ack = yield* Effect.flip(crossing.ack())
        yield* Deferred.succeed(acked, undefined)
        yield* Fiber.join(recover)
        yield* Fiber.interrupt(consumer)
        return { ack, tag: crossing.deliveryTag }
      }))
      const sent = yield* Fiber.join(served)
      assert.deepStrictEqual(
        outcome.ack,
        new AmqpUnknownDeliveryTag({ deliveryTag: outcome.tag, operation: "ack", reason: "settled" })
      )
      // No ack of either delivery: both went back with the recover.
      assert.deepStrictEqual(sent, ["cancel ctag", "channel.close", "connection.close"])
    })))
})
