/**
 * Which acknowledgements a channel refuses before they reach the broker (which would close the
 * channel with 406 "unknown delivery tag"), and which it must still send: settled tags after a
 * multiple ack, a no-ack delivery, a tag requeued by basic.recover, odd raw tags; an ack rolled
 * back by tx.rollback, and a delivery still on the wire when `ack(0, multiple)` went out.
 */
import { AmqpChannel, AmqpUnknownDeliveryTag } from "@effect-amqp/client"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Option, Queue, Scope, Stream } from "effect"
import {
  brokerChannel,
  onSharedBroker,
  poll,
  queueWithMessages,
  readyCount,
  text,
  utf8
} from "../support/channelKit.ts"
import { outcome } from "../support/Outcome.ts"

/** How an effect ended, as text: "ok", "<_tag>: <message>", or "defect: <message>". */
const refused = (
  deliveryTag: number,
  operation: "ack" | "nack" | "reject",
  reason: "settled" | "no-ack" | "never-delivered"
) => new AmqpUnknownDeliveryTag({ deliveryTag, operation, reason })

const getOne = (channel: AmqpChannel.AmqpChannel, queue: string, noAck = false) =>
  Effect.map(channel.get(queue, { noAck }), Option.getOrThrow)

describe("acknowledgements a channel must still send", () => {
  it.live("after tx.rollback the rolled-back ack can be sent again (the broker holds the message unacked)", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "q-rollback", 2)
        const scope = yield* Scope.make()
        const consumer = yield* Scope.provide(AmqpChannel.make(connection), scope)
        yield* consumer.txSelect
        const d1 = yield* getOne(consumer, queue)
        const d2 = yield* getOne(consumer, queue)
        assert.deepStrictEqual([d1.deliveryTag, d2.deliveryTag], [1, 2])
        yield* d1.ack()
        yield* d2.ack({ multiple: true })
        yield* consumer.txRollback
        // Both messages are unacknowledged again on the broker: acking them is legitimate.
        const results = [yield* outcome(d1.ack()), yield* outcome(consumer.ack(2, true))]
        assert.deepStrictEqual(results, ["ok", "ok"])
        yield* consumer.txCommit
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual(yield* readyCount(channel, queue), 0)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("after basic.recover an ack of a delivery from before it is refused, not sent", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "q-recover", 1)
        const scope = yield* Scope.make()
        const consumer = yield* Scope.provide(AmqpChannel.make(connection), scope)
        const before = yield* getOne(consumer, queue)
        yield* consumer.recover()
        const again = yield* getOne(consumer, queue)
        assert.deepStrictEqual([before.deliveryTag, again.deliveryTag, again.redelivered], [1, 2, true])
        assert.deepStrictEqual([text(before.body), text(again.body)], ["m0", "m0"])
        // Tag 1 was requeued by basic.recover: the broker answers its ack with 406.
        assert.deepStrictEqual(yield* Effect.flip(before.ack()), refused(1, "ack", "settled"))
        assert.strictEqual(yield* outcome(readyCount(consumer, queue)), "ok")
        yield* again.ack()
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("ack(0, multiple) while a delivery is on the wire leaves that delivery's own ack safe", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
        const { channel, queue } = yield* queueWithMessages(connect, "q-all-race", 1)
        const viaProxy = yield* connect({ port: proxy.port })
        const consumer = yield* AmqpChannel.make(viaProxy)
        const inbox = yield* Queue.unbounded<AmqpChannel.Delivery>()
        yield* consumer.consume(queue).pipe(
          Stream.runForEach((d) => Queue.offer(inbox, d)),
          Effect.ignore,
          Effect.forkScoped
        )
        const d1 = yield* Queue.take(inbox)
        assert.deepStrictEqual([d1.deliveryTag, text(d1.body)], [1, "m0"])
        // The broker delivers m1 as tag 2; the proxy holds it, so the client has seen tag 1 only.
        yield* proxy.pause("serverToClient")
        yield* channel.publish("", queue, utf8("m1"))
        assert.strictEqual(yield* poll(readyCount(channel, queue), (n) => n === 0), 0)
        // "Every outstanding delivery" as the client knows them: tag 1.
        yield* consumer.ack(0, true)
        yield* poll(
          brokerChannel(broker, viaProxy.name, consumer.id),
          (cs) => cs.length === 1 && cs[0]!.messagesUnacknowledged < 2
        )
        yield* proxy.resume("serverToClient")
        const d2 = yield* Queue.take(inbox)
        assert.deepStrictEqual([d2.deliveryTag, text(d2.body)], [2, "m1"])
        // Tag 0 went out as tag 1 with multiple: tag 2 is still outstanding, and its ack is valid.
        assert.deepStrictEqual([yield* outcome(d2.ack()), yield* outcome(readyCount(consumer, queue))], ["ok", "ok"])
        const listed = yield* brokerChannel(broker, viaProxy.name, consumer.id)
        assert.deepStrictEqual(listed.map((c) => c.messagesUnacknowledged), [0])
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("a raw ack of a no-ack delivery's tag is refused, not sent", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "q-raw-noack", 1)
        const consumer = yield* AmqpChannel.make(connection)
        const got = yield* getOne(consumer, queue, true)
        assert.strictEqual(got.deliveryTag, 1)
        assert.deepStrictEqual(yield* Effect.flip(consumer.ack(1)), refused(1, "ack", "settled"))
        assert.strictEqual(yield* outcome(readyCount(consumer, queue)), "ok")
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("a fractional, NaN or negative raw tag is refused with a typed error and the channel stays open", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "q-raw-odd", 2)
        const consumer = yield* AmqpChannel.make(connection)
        yield* getOne(consumer, queue)
        yield* getOne(consumer, queue)
        for (const tag of [1.5, Number.NaN, -1, 2 ** 53]) {
          assert.deepStrictEqual(yield* Effect.flip(consumer.ack(tag, true)), refused(tag, "ack", "never-delivered"))
        }
        assert.strictEqual(yield* outcome(readyCount(consumer, queue)), "ok")
        yield* consumer.ack(2, true)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))
})

describe("acknowledgements a channel refuses", () => {
  it.live("are refused without being sent: twice, after a multiple ack, on a no-ack delivery, never delivered", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "q-settled", 6)
        const consumerScope = yield* Scope.make()
        const consumer = yield* Scope.provide(AmqpChannel.make(connection), consumerScope)
        const take = Effect.map(consumer.get(queue), Option.getOrThrow)
        const [d1, d2, d3, d4] = [yield* take, yield* take, yield* take, yield* take]
        assert.deepStrictEqual([d1, d2, d3, d4].map((d) => d.deliveryTag), [1, 2, 3, 4])

        yield* d1.ack()
        assert.deepStrictEqual(yield* Effect.flip(d1.ack()), refused(1, "ack", "settled"))
        assert.deepStrictEqual(yield* Effect.flip(d1.nack()), refused(1, "nack", "settled"))

        yield* d3.ack({ multiple: true })
        assert.deepStrictEqual(yield* Effect.flip(d2.reject()), refused(2, "reject", "settled"))
        assert.deepStrictEqual(yield* Effect.flip(consumer.ack(2)), refused(2, "ack", "settled"))
        assert.deepStrictEqual(yield* Effect.flip(consumer.nack(99)), refused(99, "nack", "never-delivered"))

        const unacknowledged = Option.getOrThrow(yield* consumer.get(queue, { noAck: true }))
        assert.strictEqual(unacknowledged.deliveryTag, 5)
        assert.deepStrictEqual(yield* Effect.flip(unacknowledged.ack()), refused(5, "ack", "no-ack"))
        yield* d4.ack()

        // Nothing refused reached the broker: the channel is open, and closing it requeues nothing.
        assert.strictEqual(yield* readyCount(consumer, queue), 1)
        yield* Scope.close(consumerScope, Exit.void)
        assert.strictEqual(yield* readyCount(channel, queue), 1)
        assert.deepStrictEqual(
          [d1, d2, d3, d4, unacknowledged].map((d) => text(d.body)),
          ["m0", "m1", "m2", "m3", "m4"]
        )
        assert.strictEqual(yield* channel.queueDelete(queue), 1)
      })
    ))

  it.live("no-ack consume deliveries and a nacked-then-redelivered message", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "q-noack-nack", 2)
        const scope = yield* Scope.make()
        const consumer = yield* Scope.provide(AmqpChannel.make(connection), scope)
        const first = yield* getOne(consumer, queue)
        yield* first.nack({ requeue: true })
        assert.deepStrictEqual(yield* Effect.flip(first.ack()), refused(1, "ack", "settled"))
        const noAcked = yield* consumer.consume(queue, { noAck: true }).pipe(Stream.take(2), Stream.runCollect)
        assert.deepStrictEqual(noAcked.map((d) => [d.deliveryTag, text(d.body), d.redelivered]), [
          [2, "m0", true],
          [3, "m1", false]
        ])
        assert.deepStrictEqual(yield* Effect.flip(noAcked[1]!.nack({ multiple: true })), refused(3, "nack", "no-ack"))
        assert.strictEqual(yield* readyCount(consumer, queue), 0)
        yield* Scope.close(scope, Exit.void)
        assert.strictEqual(yield* readyCount(channel, queue), 0)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("ack(0, multiple) with deliveries still buffered: ending the stream sends no reject for them", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "q-all-buffered", 5)
        const consumer = yield* AmqpChannel.make(connection)
        const taken = yield* consumer.consume(queue).pipe(
          Stream.tap(() =>
            Effect.andThen(
              poll(readyCount(channel, queue), (n) => n === 0),
              consumer.ack(0, true)
            )
          ),
          Stream.take(1),
          Stream.runCollect
        )
        assert.deepStrictEqual(taken.map((d) => d.deliveryTag), [1])
        // The four buffered deliveries were acked by tag 0; their rejects were refused locally.
        assert.strictEqual(yield* readyCount(consumer, queue), 0)
        const listed = yield* brokerChannel(broker, connection.name, consumer.id)
        assert.deepStrictEqual(listed.map((c) => [c.messagesUnacknowledged, c.consumerCount]), [[0, 0]])
        assert.deepStrictEqual(yield* Effect.flip(taken[0]!.ack()), refused(1, "ack", "settled"))
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("a consumeWith handler that acks twice ends with AmqpUnknownDeliveryTag; the channel stays open", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "q-handler-twice", 1)
        const consumer = yield* AmqpChannel.make(connection)
        const error = yield* Effect.flip(
          consumer.consumeWith(queue, (d) => Effect.andThen(d.ack(), d.ack()))
        )
        assert.deepStrictEqual(error, refused(1, "ack", "settled"))
        assert.strictEqual(yield* readyCount(consumer, queue), 0)
        assert.isTrue(yield* consumer.isOpen)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))
})
