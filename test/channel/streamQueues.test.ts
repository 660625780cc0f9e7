/**
 * Consumers of a stream queue that end while deliveries wait in their buffer. A classic or quorum
 * queue takes such deliveries back with `basic.reject` and requeue; a stream requeues nothing and
 * answers a reject or nack by closing the whole connection (540 NOT_IMPLEMENTED). The client
 * acknowledges a stream's delivery instead, which returns its credit, and the message stays in the
 * stream for the next reader, also when a transaction is rolled back. A consumer reads a stream
 * when it was started with an `x-stream-offset` argument: a header of that name on a classic
 * queue's messages, set by a publisher, changes nothing.
 */
import { AmqpChannel, type AmqpConnection, AmqpStreamRefused, AmqpUnknownDeliveryTag } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option, Stream } from "effect"
import {
  brokerChannel,
  type Connect,
  onSharedBroker,
  poll,
  readyCount,
  type SharedBroker,
  text,
  unique,
  utf8
} from "../support/channelKit.ts"

const MESSAGES = 10

/**
 * A connection, a fresh queue of `queueType` holding `s0`… (with a publisher's `x-stream-offset`
 * header when `header`), and a consumer channel whose prefetch takes them all.
 */
const setUp = (connect: Connect, queueType: "stream" | "classic" = "stream", header = false) =>
  Effect.gen(function*() {
    const connection = yield* connect()
    const admin = yield* AmqpChannel.make(connection)
    yield* admin.confirmSelect
    const stream = unique(`${queueType}-ended`)
    yield* Effect.acquireRelease(
      admin.queueDeclare(stream, { durable: true, arguments: { "x-queue-type": queueType } }),
      () => Effect.ignore(admin.queueDelete(stream))
    )
    const confirms = []
    for (let i = 0; i < MESSAGES; i++) {
      const properties = header ? { headers: { "x-stream-offset": 1000 + i } } : {}
      confirms.push(yield* admin.publishAsync("", stream, utf8(`s${i}`), { properties }))
    }
    yield* Effect.all(confirms, { discard: true })
    const consumer = yield* AmqpChannel.make(connection)
    // The whole stream fits the prefetch: what the application does not take waits in the buffer.
    yield* consumer.qos(MESSAGES)
    return { connection, stream, consumer }
  })

/** After the consumer ended: the connection lives, and the broker holds nothing unacknowledged. */
const checkEndedCleanly = (
  broker: SharedBroker,
  connection: AmqpConnection.AmqpConnection,
  consumer: AmqpChannel.AmqpChannel,
  stream: string
) =>
  Effect.gen(function*() {
    // A round trip on the consumer's channel after the hand-back, which the broker reads first.
    yield* consumer.queueDeclare(stream, { durable: true, arguments: { "x-queue-type": "stream" } })
    assert.isTrue(yield* connection.isOpen)
    const listed = yield* poll(
      brokerChannel(broker, connection.name, consumer.id),
      (channels) => channels.length === 1 && channels[0]!.messagesUnacknowledged === 0
    )
    assert.deepStrictEqual(listed.map((c) => [c.consumerCount, c.messagesUnacknowledged]), [[0, 0]])
    // Every message is still in the stream, for the next reader.
    const again = yield* consumer.consume(stream, { arguments: { "x-stream-offset": 3 } }).pipe(
      Stream.tap((delivery) => delivery.ack()),
      Stream.take(MESSAGES - 3),
      Stream.runCollect
    )
    assert.deepStrictEqual(
      again.map((d) => text(d.body)),
      Array.from({ length: MESSAGES - 3 }, (_, i) => `s${i + 3}`)
    )
    assert.isTrue(yield* connection.isOpen)
  })

describe("stream queue consumers that end with deliveries buffered", () => {
  it.live("a consumer stream cut short by `Stream.take`", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { connection, consumer, stream } = yield* setUp(connect)
        const taken = yield* consumer.consume(stream, { arguments: { "x-stream-offset": "first" } }).pipe(
          Stream.tap((delivery) => delivery.ack()),
          Stream.take(3),
          Stream.runCollect
        )
        assert.deepStrictEqual(taken.map((d) => text(d.body)), ["s0", "s1", "s2"])
        yield* checkEndedCleanly(broker, connection, consumer, stream)
      })
    ))

  it.live("a `consumeWith` interrupted in its handler", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { connection, consumer, stream } = yield* setUp(connect)
        const handled: Array<string> = []
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.gen(function*() {
            handled.push(text(delivery.body))
            // The third is left unacknowledged: the interruption hands it back with the rest.
            if (handled.length < 3) return yield* delivery.ack()
            return yield* Effect.never
          })
        const running = yield* Effect.forkChild(
          consumer.consumeWith(stream, handle, { arguments: { "x-stream-offset": "first" } }),
          { startImmediately: true }
        )
        yield* poll(Effect.sync(() => handled.length), (n) => n === 3)
        yield* Fiber.interrupt(running)
        assert.deepStrictEqual(handled, ["s0", "s1", "s2"])
        yield* checkEndedCleanly(broker, connection, consumer, stream)
      })
    ))

  it.live("in tx mode: a rollback hands them back again as acks, and the commit leaves nothing held", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { connection, consumer, stream } = yield* setUp(connect)
        yield* consumer.txSelect
        const taken = yield* consumer.consume(stream, { arguments: { "x-stream-offset": "first" } }).pipe(
          Stream.tap((delivery) => delivery.ack()),
          Stream.take(3),
          Stream.runCollect
        )
        assert.deepStrictEqual(taken.map((d) => text(d.body)), ["s0", "s1", "s2"])
        // The rollback undoes the application's acks and the hand-back alike; the application
        // acks its three again, and the client hands back the rest again.
        yield* consumer.txRollback
        for (const delivery of taken) yield* delivery.ack()
        yield* consumer.txCommit
        yield* checkEndedCleanly(broker, connection, consumer, stream)
      })
    ))
})

describe("a stream consumer's deliveries", () => {
  it.live("refuse nack and reject, which RabbitMQ answers by closing the connection, and still take an ack", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { connection, consumer, stream } = yield* setUp(connect)
        const [first, second] = yield* consumer.consume(stream, { arguments: { "x-stream-offset": "first" } }).pipe(
          Stream.take(2),
          Stream.runCollect
        )
        const refused = [
          yield* Effect.flip(first!.nack()),
          yield* Effect.flip(first!.nack({ requeue: false })),
          yield* Effect.flip(second!.reject({ requeue: false }))
        ]
        assert.deepStrictEqual(refused, [
          new AmqpUnknownDeliveryTag({ deliveryTag: first!.deliveryTag, operation: "nack", reason: "stream" }),
          new AmqpUnknownDeliveryTag({ deliveryTag: first!.deliveryTag, operation: "nack", reason: "stream" }),
          new AmqpUnknownDeliveryTag({ deliveryTag: second!.deliveryTag, operation: "reject", reason: "stream" })
        ])
        // Nothing was sent, and nothing settled: both still take their ack.
        yield* first!.ack()
        yield* second!.ack()
        yield* checkEndedCleanly(broker, connection, consumer, stream)
      })
    ))
})

/** The refusal of a nack or reject that names a stream's delivery. */
const refused = (deliveryTag: number, operation: "nack" | "reject") =>
  new AmqpUnknownDeliveryTag({ deliveryTag, operation, reason: "stream" })

describe("a channel holding a stream consumer's deliveries", () => {
  it.live("refuses nack and reject of them by tag, also as `multiple` and tag 0, and nacks others", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { connection, consumer, stream } = yield* setUp(connect)
        const taken = yield* consumer.consume(stream, { arguments: { "x-stream-offset": "first" } }).pipe(
          Stream.take(3),
          Stream.runCollect
        )
        const [s0, s1, s2] = taken.map((delivery) => delivery.deliveryTag)
        // A classic queue's delivery on the same channel, after the stream's.
        const classic = unique("classic-beside-stream")
        yield* consumer.queueDeclare(classic)
        yield* consumer.publish("", classic, utf8("c0"))
        const [c0] = yield* consumer.consume(classic).pipe(Stream.take(1), Stream.runCollect)
        assert.isAbove(c0!.deliveryTag, s2!)

        assert.deepStrictEqual(
          [
            yield* Effect.flip(consumer.nack(s1!)),
            yield* Effect.flip(consumer.reject(s0!, false)),
            yield* Effect.flip(consumer.nack(s2!, true, false)),
            yield* Effect.flip(consumer.nack(c0!.deliveryTag, true)),
            yield* Effect.flip(consumer.nack(0, true))
          ],
          [
            refused(s1!, "nack"),
            refused(s0!, "reject"),
            refused(s2!, "nack"),
            refused(c0!.deliveryTag, "nack"),
            refused(0, "nack")
          ]
        )
        // The classic queue's delivery alone is nacked back to its queue.
        yield* consumer.nack(c0!.deliveryTag)
        assert.strictEqual(yield* poll(readyCount(consumer, classic), (n) => n === 1), 1)
        // Acked, a stream delivery is settled like any other; the rest still take their ack.
        yield* consumer.ack(s0!)
        assert.deepStrictEqual(
          yield* Effect.flip(consumer.nack(s0!)),
          new AmqpUnknownDeliveryTag({ deliveryTag: s0!, operation: "nack", reason: "settled" })
        )
        yield* consumer.ack(s2!, true)
        assert.strictEqual(yield* consumer.queueDelete(classic), 1)
        yield* checkEndedCleanly(broker, connection, consumer, stream)
      })
    ))
})

describe("basic.recover on a channel reading a stream", () => {
  it.live("is refused while a stream consumer runs or its deliveries are unsettled, and sent once neither holds", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { connection, consumer, stream } = yield* setUp(connect)
        const refusal = new AmqpStreamRefused({ channel: consumer.id, operation: "basic.recover", queue: undefined })
        // A running stream consumer: whatever it has on its way would be reached.
        const running = yield* Effect.forkChild(
          consumer.consume(stream, { arguments: { "x-stream-offset": "last" } }).pipe(
            Stream.mapEffect((delivery) => delivery.ack()),
            Stream.runDrain
          )
        )
        yield* poll(
          brokerChannel(broker, connection.name, consumer.id),
          (channels) => channels[0]?.consumerCount === 1
        )
        assert.deepStrictEqual(yield* Effect.flip(consumer.recover()), refusal)
        yield* Fiber.interrupt(running)

        // Deliveries taken and not settled, their consumer ended.
        const taken = yield* consumer.consume(stream, { arguments: { "x-stream-offset": "first" } }).pipe(
          Stream.take(3),
          Stream.runCollect
        )
        assert.deepStrictEqual(yield* Effect.flip(consumer.recover()), refusal)
        assert.deepStrictEqual(yield* Effect.flip(consumer.recover(false)), refusal)

        // Settled, nothing of the stream is left for it to reach: it goes, and the connection lives.
        yield* taken[2]!.ack({ multiple: true })
        yield* consumer.recover()
        yield* checkEndedCleanly(broker, connection, consumer, stream)
      })
    ))
})

describe("basic.get of a stream", () => {
  it.live("is refused for a queue the connection declared or consumes as a stream, and the connection lives", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        // Declared as a stream on this connection (by `setUp`'s admin channel).
        const { connection, consumer, stream } = yield* setUp(connect)
        const refusal = (channel: number) => new AmqpStreamRefused({ channel, operation: "basic.get", queue: stream })
        assert.deepStrictEqual(yield* Effect.flip(consumer.get(stream)), refusal(consumer.id))
        assert.deepStrictEqual(yield* Effect.flip(consumer.get(stream, { noAck: true })), refusal(consumer.id))

        // Another connection knows it once it consumes it as a stream.
        const other = yield* connect()
        const reader = yield* AmqpChannel.make(other)
        yield* reader.qos(MESSAGES)
        const [first] = yield* reader.consume(stream, { arguments: { "x-stream-offset": "first" } }).pipe(
          Stream.take(1),
          Stream.runCollect
        )
        yield* first!.ack()
        assert.deepStrictEqual(yield* Effect.flip(reader.get(stream)), refusal(reader.id))
        assert.isTrue(yield* connection.isOpen)
        assert.isTrue(yield* other.isOpen)

        // Deleted and declared again as a classic queue, it is one to `get` from.
        yield* consumer.queueDelete(stream)
        yield* consumer.queueDeclare(stream, { durable: true })
        yield* consumer.publish("", stream, utf8("classic now"))
        const got = yield* poll(consumer.get(stream, { noAck: true }), Option.isSome)
        assert.deepStrictEqual(Option.map(got, (message) => text(message.body)), Option.some("classic now"))
        assert.isTrue(yield* connection.isOpen)
      })
    ))
})

describe("a classic queue whose messages carry a publisher's x-stream-offset header", () => {
  it.live("a consumer stream cut short requeues the rest", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { consumer, stream: queue } = yield* setUp(connect, "classic", true)
        const taken = yield* consumer.consume(queue).pipe(
          Stream.tap((delivery) => delivery.ack()),
          Stream.take(3),
          Stream.runCollect
        )
        assert.deepStrictEqual(taken.map((d) => text(d.body)), ["s0", "s1", "s2"])
        const ready = yield* poll(readyCount(consumer, queue), (n) => n === MESSAGES - 3)
        assert.strictEqual(ready, MESSAGES - 3)
        const rest = yield* consumer.consume(queue).pipe(
          Stream.tap((delivery) => delivery.ack()),
          Stream.take(MESSAGES - 3),
          Stream.runCollect
        )
        assert.deepStrictEqual(
          rest.map((d) => [text(d.body), d.redelivered]),
          Array.from({ length: MESSAGES - 3 }, (_, i) => [`s${i + 3}`, true])
        )
      })
    ))
})
