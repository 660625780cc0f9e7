/**
 * More settled-tag cases on a plain channel, none of which may reach the broker as a 406 nor be
 * refused wrongly: a double ack in tx mode, ack(0, multiple) in tx mode with deliveries buffered,
 * an interrupted no-ack get followed by ack(0, multiple), a no-ack and a manual-ack consumer on one
 * channel.
 */
import { AmqpChannel, AmqpUnknownDeliveryTag } from "@effect-amqp/client"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Queue, Stream } from "effect"
import { brokerChannel, onSharedBroker, poll, queueWithMessages, readyCount, text } from "../support/channelKit.ts"
import { outcome } from "../support/Outcome.ts"

const getOne = (channel: AmqpChannel.AmqpChannel, queue: string, noAck = false) =>
  Effect.map(channel.get(queue, { noAck }), Option.getOrThrow)

describe("settled tags in tx mode", () => {
  it.live("a second ack of the same delivery in tx mode does not close the channel", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "r2-tx-twice", 1)
        const consumer = yield* AmqpChannel.make(connection)
        yield* consumer.txSelect
        const d1 = yield* getOne(consumer, queue)
        yield* d1.ack()
        const second = yield* outcome(d1.ack())
        // Whatever the client answers, the channel must survive: the broker holds no unacked tag 1.
        const afterwards = yield* outcome(consumer.txCommit)
        assert.deepStrictEqual({ second, afterwards }, {
          second: new AmqpUnknownDeliveryTag({ deliveryTag: 1, operation: "ack", reason: "settled" }).pipe(
            (e) => `${e._tag}: ${e.message}`
          ),
          afterwards: "ok"
        })
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("tx mode: ack(0, multiple) while deliveries are buffered, then the stream ends: channel stays open", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "r2-tx-all-buffered", 5)
        const consumer = yield* AmqpChannel.make(connection)
        yield* consumer.txSelect
        const taken = yield* consumer.consume(queue).pipe(
          Stream.tap(() => Effect.andThen(poll(readyCount(channel, queue), (n) => n === 0), consumer.ack(0, true))),
          Stream.take(1),
          Stream.runCollect
        )
        assert.deepStrictEqual(taken.map((d) => d.deliveryTag), [1])
        assert.deepStrictEqual(
          { commit: yield* outcome(consumer.txCommit), open: yield* consumer.isOpen },
          { commit: "ok", open: true }
        )
        assert.strictEqual(yield* readyCount(channel, queue), 0)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))
})

describe("a no-ack get interrupted before its get-ok", () => {
  it.live("ack(0, multiple) afterwards acknowledges only the manual-ack delivery; the channel stays open", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
        const { channel, queue } = yield* queueWithMessages(connect, "r2-get-interrupted", 2)
        const viaProxy = yield* connect({ port: proxy.port })
        const consumer = yield* AmqpChannel.make(viaProxy)
        const d1 = yield* getOne(consumer, queue)
        assert.strictEqual(d1.deliveryTag, 1)
        yield* proxy.setLatency(300, "serverToClient")
        const interrupted = yield* consumer.get(queue, { noAck: true }).pipe(Effect.timeoutOption("30 millis"))
        assert.isTrue(Option.isNone(interrupted))
        // The next method waits for the get-ok still owed: tag 2, no-ack, has arrived by then.
        assert.strictEqual(yield* readyCount(consumer, queue), 0)
        yield* proxy.setLatency(0, "serverToClient")
        const all = yield* outcome(consumer.ack(0, true))
        const after = yield* outcome(readyCount(consumer, queue))
        assert.deepStrictEqual({ all, after }, { all: "ok", after: "ok" })
        const listed = yield* brokerChannel(broker, viaProxy.name, consumer.id)
        assert.deepStrictEqual(listed.map((c) => c.messagesUnacknowledged), [0])
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))
})

describe("a no-ack and a manual-ack consumer on one channel", () => {
  it.live("a no-ack and a manual-ack consumer, a nack with requeue: acks by tag and ack(0, multiple) are right", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, queue } = yield* queueWithMessages(connect, "r2-mixed", 0)
        const other = `${queue}-noack`
        yield* channel.queueDeclare(other)
        const consumer = yield* AmqpChannel.make(connection)
        const manual = yield* Queue.unbounded<AmqpChannel.Delivery>()
        const auto = yield* Queue.unbounded<AmqpChannel.Delivery>()
        yield* consumer.consume(queue).pipe(Stream.runForEach((d) => Queue.offer(manual, d)), Effect.forkScoped)
        yield* consumer.consume(other, { noAck: true }).pipe(
          Stream.runForEach((d) => Queue.offer(auto, d)),
          Effect.forkScoped
        )
        // Wait until both consumers are registered on the broker.
        yield* poll(
          brokerChannel(broker, connection.name, consumer.id),
          (cs) => cs.length === 1 && cs[0]!.consumerCount === 2
        )
        const tags: Array<[string, number, string]> = []
        const send = (q: string, body: string) => channel.publish("", q, Buffer.from(body))
        yield* send(queue, "a1")
        const a1 = yield* Queue.take(manual)
        yield* send(other, "n1")
        const n1 = yield* Queue.take(auto)
        yield* send(queue, "a2")
        const a2 = yield* Queue.take(manual)
        yield* send(other, "n2")
        const n2 = yield* Queue.take(auto)
        for (const [k, d] of [["a", a1], ["n", n1], ["a", a2], ["n", n2]] as const) {
          tags.push([k, d.deliveryTag, text(d.body)])
        }
        assert.deepStrictEqual(tags, [["a", 1, "a1"], ["n", 2, "n1"], ["a", 3, "a2"], ["n", 4, "n2"]])
        // A raw ack of a no-ack tag is refused; a nack with requeue of a1 is sent.
        const rawNoAck = yield* outcome(consumer.ack(2))
        const nackA1 = yield* outcome(a1.nack({ requeue: true }))
        const again = yield* Queue.take(manual)
        assert.deepStrictEqual([again.deliveryTag, text(again.body), again.redelivered], [5, "a1", true])
        // Now ack everything: sent as tag 5 with multiple, covering 3 and 5.
        const all = yield* outcome(consumer.ack(0, true))
        const a2Again = yield* outcome(a2.ack())
        const open = yield* outcome(readyCount(consumer, queue))
        assert.deepStrictEqual({ rawNoAck, nackA1, all, a2Again, open }, {
          rawNoAck: "AmqpUnknownDeliveryTag: " + new AmqpUnknownDeliveryTag({
            deliveryTag: 2,
            operation: "ack",
            reason: "settled"
          }).message,
          nackA1: "ok",
          all: "ok",
          a2Again: "AmqpUnknownDeliveryTag: " + new AmqpUnknownDeliveryTag({
            deliveryTag: 3,
            operation: "ack",
            reason: "settled"
          }).message,
          open: "ok"
        })
        const listed = yield* brokerChannel(broker, connection.name, consumer.id)
        assert.deepStrictEqual(listed.map((c) => c.messagesUnacknowledged), [0])
        assert.strictEqual(yield* channel.queueDelete(other), 0)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))
})
