/**
 * The basic class on a real broker: qos, consume (with arguments) and cancel, get, ack, nack,
 * reject, recover; and the confirm and tx classes. What the broker did is read back through
 * `basic.get`, passive declares and its channel listing.
 */
import { AmqpChannel, AmqpChannelError, AmqpUnknownDeliveryTag } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option, Queue, Stream } from "effect"
import {
  brokerChannel,
  confirmingChannel,
  onSharedBroker,
  poll,
  publishNumbered,
  readyCount,
  text,
  unique,
  utf8
} from "../support/channelKit.ts"

describe("basic.qos and basic.consume", () => {
  it.live("delivers exactly prefetch_count unacknowledged messages, and one more per ack", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const { channel, queue } = yield* confirmingChannel(connection)
        yield* publishNumbered(channel, queue, 20)
        const consumer = yield* AmqpChannel.make(connection)
        yield* consumer.qos(5)
        const inbox = yield* Queue.unbounded<AmqpChannel.Delivery>()
        const fiber = yield* consumer.consume(queue).pipe(
          Stream.runForEach((delivery) => Queue.offer(inbox, delivery)),
          Effect.forkScoped
        )
        const firstFive = yield* poll(Queue.size(inbox), (n) => n >= 5)
        assert.strictEqual(firstFive, 5)
        yield* Effect.sleep(300)
        assert.strictEqual(yield* Queue.size(inbox), 5)
        const listed = yield* brokerChannel(broker, connection.name, consumer.id)
        assert.deepStrictEqual(
          listed.map((c) => [c.prefetchCount, c.consumerCount, c.messagesUnacknowledged, c.confirm]),
          [[5, 1, 5, false]]
        )
        const taken = yield* Queue.takeAll(inbox)
        assert.deepStrictEqual(taken.map((d) => text(d.body)), ["m0", "m1", "m2", "m3", "m4"])
        assert.deepStrictEqual(taken.map((d) => d.deliveryTag), [1, 2, 3, 4, 5])
        yield* taken[0]!.ack()
        const next = yield* Queue.take(inbox)
        assert.strictEqual(text(next.body), "m5")
        yield* Effect.sleep(200)
        assert.strictEqual(yield* Queue.size(inbox), 0)
        // Acknowledge the rest with one multiple ack: the broker then has 14 left to deliver.
        yield* next.ack({ multiple: true })
        yield* Fiber.interrupt(fiber)
        assert.strictEqual(yield* poll(readyCount(channel, queue), (n) => n === 14), 14)
      })
    ))

  it.live("passes consumer arguments: x-stream-offset on a stream queue (with qos)", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const stream = unique("q-stream")
        yield* channel.queueDeclare(stream, { durable: true, arguments: { "x-queue-type": "stream" } })
        yield* publishNumbered(channel, stream, 5, "s")
        const readFrom = (offset: "first" | number, count: number) =>
          Effect.scoped(Effect.gen(function*() {
            const consumer = yield* AmqpChannel.make(connection)
            yield* consumer.qos(10)
            return yield* consumer.consume(stream, { arguments: { "x-stream-offset": offset } }).pipe(
              Stream.tap((delivery) => delivery.ack()),
              Stream.take(count),
              Stream.runCollect
            )
          }))
        const all = yield* readFrom("first", 5)
        assert.deepStrictEqual(all.map((d) => text(d.body)), ["s0", "s1", "s2", "s3", "s4"])
        // The broker stamps each delivery with its offset in the stream, a 64-bit integer read as a
        // number, which a consumer may pass back as its x-stream-offset.
        assert.deepStrictEqual(all.map((d) => d.properties.headers?.["x-stream-offset"]), [0, 1, 2, 3, 4])
        const tail = yield* readFrom(3, 2)
        assert.deepStrictEqual(tail.map((d) => text(d.body)), ["s3", "s4"])
        yield* channel.queueDelete(stream)
      })
    ))

  it.live("refuses a stream consumer without qos (406)", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        const stream = unique("q-stream-noqos")
        yield* channel.queueDeclare(stream, { durable: true, arguments: { "x-queue-type": "stream" } })
        const consumer = yield* AmqpChannel.make(connection)
        const error = yield* Effect.flip(
          consumer.consume(stream, { arguments: { "x-stream-offset": "first" } }).pipe(Stream.runDrain)
        )
        assert.instanceOf(error, AmqpChannelError)
        assert.strictEqual((error as AmqpChannelError).replyCode, 406)
        assert.strictEqual((error as AmqpChannelError).method, "basic.consume")
        yield* channel.queueDelete(stream)
      })
    ))
})

describe("basic.get and acknowledgements", () => {
  it.live("gets messages with the count left, and none from an empty queue", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, queue } = yield* confirmingChannel(yield* connect())
        yield* publishNumbered(channel, queue, 3)
        const first = Option.getOrThrow(yield* channel.get(queue))
        assert.deepStrictEqual(
          {
            body: text(first.body),
            messageCount: first.messageCount,
            deliveryTag: first.deliveryTag,
            redelivered: first.redelivered,
            exchange: first.exchange,
            routingKey: first.routingKey
          },
          { body: "m0", messageCount: 2, deliveryTag: 1, redelivered: false, exchange: "", routingKey: queue }
        )
        yield* channel.ack(first.deliveryTag)
        const second = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        assert.strictEqual(second.messageCount, 1)
        const third = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        assert.strictEqual(third.messageCount, 0)
        assert.isTrue(Option.isNone(yield* channel.get(queue)))
        assert.strictEqual(yield* readyCount(channel, queue), 0)
      })
    ))

  it.live("nack and reject with requeue redeliver with the redelivered flag; without, the message goes", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, queue } = yield* confirmingChannel(yield* connect())
        yield* publishNumbered(channel, queue, 1)

        const first = Option.getOrThrow(yield* channel.get(queue))
        assert.isFalse(first.redelivered)
        yield* first.nack({ requeue: true })
        const second = Option.getOrThrow(yield* channel.get(queue))
        assert.strictEqual(text(second.body), "m0")
        assert.isTrue(second.redelivered)
        yield* channel.reject(second.deliveryTag, true)
        const third = Option.getOrThrow(yield* channel.get(queue))
        assert.isTrue(third.redelivered)
        yield* third.reject({ requeue: false })
        assert.isTrue(Option.isNone(yield* channel.get(queue)))

        yield* publishNumbered(channel, queue, 3, "n")
        const a = Option.getOrThrow(yield* channel.get(queue))
        const b = Option.getOrThrow(yield* channel.get(queue))
        const c = Option.getOrThrow(yield* channel.get(queue))
        assert.deepStrictEqual([a, b, c].map((d) => text(d.body)), ["n0", "n1", "n2"])
        // nack multiple up to b, without requeue: n0 and n1 go; c is nacked by tag with requeue.
        yield* b.nack({ multiple: true, requeue: false })
        yield* channel.nack(c.deliveryTag, false, true)
        const back = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        assert.strictEqual(text(back.body), "n2")
        assert.isTrue(back.redelivered)
        assert.strictEqual(back.messageCount, 0)
      })
    ))

  it.live("dead-letters nacked and rejected messages with reason rejected", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const channel = yield* AmqpChannel.make(yield* connect())
        yield* channel.confirmSelect
        const dlq = (yield* channel.queueDeclare("", { exclusive: true })).queue
        const work = (yield* channel.queueDeclare("", {
          exclusive: true,
          arguments: { "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq }
        })).queue
        yield* publishNumbered(channel, work, 2)
        const nacked = Option.getOrThrow(yield* channel.get(work))
        yield* nacked.nack({ requeue: false })
        const rejected = Option.getOrThrow(yield* channel.get(work))
        yield* rejected.reject({ requeue: false })
        const dead = yield* poll(readyCount(channel, dlq), (n) => n === 2)
        assert.strictEqual(dead, 2)
        for (const expected of ["m0", "m1"]) {
          const got = Option.getOrThrow(yield* channel.get(dlq, { noAck: true }))
          assert.strictEqual(text(got.body), expected)
          assert.strictEqual(got.routingKey, dlq)
          const death = (got.properties.headers!["x-death"] as ReadonlyArray<Record<string, unknown>>)[0]!
          assert.strictEqual(death["reason"], "rejected")
          assert.strictEqual(death["queue"], work)
        }
        assert.strictEqual(yield* readyCount(channel, work), 0)
      })
    ))

  it.live("basic.recover redelivers every unacknowledged message, flagged redelivered", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, queue } = yield* confirmingChannel(yield* connect())
        yield* publishNumbered(channel, queue, 3)
        const a = Option.getOrThrow(yield* channel.get(queue))
        Option.getOrThrow(yield* channel.get(queue))
        yield* a.ack()
        assert.strictEqual(yield* readyCount(channel, queue), 1)
        yield* channel.recover()
        assert.strictEqual(yield* readyCount(channel, queue), 2)
        const again = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        assert.strictEqual(text(again.body), "m1")
        assert.isTrue(again.redelivered)
        const fresh = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        assert.strictEqual(text(fresh.body), "m2")
        assert.isFalse(fresh.redelivered)
      })
    ))

  it.live("refuses a second ack, in tx mode too, and takes a rolled-back ack again", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const channel = yield* AmqpChannel.make(yield* connect())
        const { queue } = yield* channel.queueDeclare("", { exclusive: true })
        yield* channel.publish("", queue, new Uint8Array([1]))
        yield* channel.publish("", queue, new Uint8Array([2]))
        yield* poll(channel.get(queue), Option.isSome)
        yield* channel.ack(1)
        assert.deepStrictEqual(yield* Effect.flip(channel.ack(1)), settled(1))

        yield* channel.txSelect
        yield* poll(channel.get(queue), Option.isSome)
        yield* channel.ack(2)
        assert.deepStrictEqual(yield* Effect.flip(channel.ack(2)), settled(2))
        // The rollback makes tag 2 outstanding again on the broker: its ack is taken, and committed.
        yield* channel.txRollback
        yield* channel.ack(2)
        yield* channel.txCommit
        assert.isTrue(yield* channel.isOpen)
        assert.strictEqual(yield* readyCount(channel, queue), 0)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))
})

const settled = (deliveryTag: number) =>
  new AmqpUnknownDeliveryTag({ deliveryTag, operation: "ack", reason: "settled" })

describe("confirm and tx", () => {
  it.live("confirm.select puts the channel in confirm mode and tx.select is then refused", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        yield* channel.qos(3)
        const listed = yield* brokerChannel(broker, connection.name, channel.id)
        assert.deepStrictEqual(listed.map((c) => [c.confirm, c.prefetchCount, c.consumerCount]), [[true, 3, 0]])
        const error = yield* Effect.flip(channel.txSelect)
        assert.instanceOf(error, AmqpChannelError)
        assert.strictEqual((error as AmqpChannelError).replyCode, 406)
        assert.strictEqual((error as AmqpChannelError).method, "tx.select")
      })
    ))

  it.live("tx.rollback discards a publish and an ack; tx.commit makes them happen", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const observer = yield* AmqpChannel.make(connection)
        const queue = (yield* observer.queueDeclare("", { exclusive: true })).queue
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.txSelect
        yield* channel.publish("", queue, utf8("rolled back"))
        yield* channel.txRollback
        assert.strictEqual(yield* readyCount(observer, queue), 0)

        yield* channel.publish("", queue, utf8("committed"))
        assert.strictEqual(yield* readyCount(observer, queue), 0)
        yield* channel.txCommit
        assert.strictEqual(yield* readyCount(observer, queue), 1)

        // A rolled-back ack leaves the message unacknowledged: basic.recover puts it back.
        const got = Option.getOrThrow(yield* channel.get(queue))
        assert.strictEqual(text(got.body), "committed")
        yield* got.ack()
        yield* channel.txRollback
        yield* channel.recover()
        assert.strictEqual(yield* readyCount(observer, queue), 1)

        // A committed ack removes it: basic.recover has nothing to put back.
        const again = Option.getOrThrow(yield* channel.get(queue))
        assert.strictEqual(text(again.body), "committed")
        assert.isTrue(again.redelivered)
        yield* again.ack()
        yield* channel.txCommit
        yield* channel.recover()
        assert.strictEqual(yield* readyCount(observer, queue), 0)
        assert.isTrue(Option.isNone(yield* observer.get(queue)))
      })
    ))
})
