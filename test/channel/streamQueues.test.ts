/**
 * Consumers of a stream queue that end while deliveries wait in their buffer. A classic or quorum
 * queue takes such deliveries back with `basic.reject` and requeue; a stream requeues nothing and
 * answers a reject or nack by closing the whole connection (540 NOT_IMPLEMENTED). The client
 * acknowledges a stream's delivery instead, which returns its credit, and the message stays in the
 * stream for the next reader.
 */
import { AmqpChannel } from "@effect-amqp/client"
import { type AmqpConnection } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import {
  brokerChannel,
  type Connect,
  onSharedBroker,
  poll,
  type SharedBroker,
  text,
  unique,
  utf8
} from "../support/channelKit.ts"

const MESSAGES = 10

const setUp = (connect: Connect) =>
  Effect.gen(function*() {
    const connection = yield* connect()
    const admin = yield* AmqpChannel.make(connection)
    yield* admin.confirmSelect
    const stream = unique("stream-ended")
    yield* Effect.acquireRelease(
      admin.queueDeclare(stream, { durable: true, arguments: { "x-queue-type": "stream" } }),
      () => Effect.ignore(admin.queueDelete(stream))
    )
    const confirms = []
    for (let i = 0; i < MESSAGES; i++) confirms.push(yield* admin.publishAsync("", stream, utf8(`s${i}`)))
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
})
