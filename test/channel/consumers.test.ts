/**
 * How a consumer stream ends: the application ends it (basic.cancel, buffered deliveries
 * requeued), the broker cancels it (its queue was deleted), or its channel or connection dies.
 */
import {
  AmqpChannel,
  AmqpChannelError,
  AmqpConnectionError,
  AmqpConsumerCancelled,
  AmqpConsumerTagInUse,
  ServerClosed
} from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Queue, Stream } from "effect"
import {
  checkRequeuedAfterEnd,
  confirmingChannel,
  onSharedBroker,
  poll,
  publishNumbered,
  text,
  unique,
  utf8
} from "../support/channelKit.ts"

/**
 * Consumes `queue` in a fiber of the scope until one delivery arrived; returns the fiber, which
 * ends with the stream's error.
 */
const consumeUntilFailure = (consumer: AmqpChannel.AmqpChannel, queue: string, consumerTag: string) =>
  Effect.gen(function*() {
    const seen = yield* Queue.unbounded<string>()
    const fiber = yield* consumer.consume(queue, { consumerTag, noAck: true }).pipe(
      Stream.runForEach((delivery) => Queue.offer(seen, text(delivery.body))),
      Effect.flip,
      Effect.forkScoped
    )
    assert.strictEqual(yield* Queue.take(seen), "m0")
    return fiber
  })

describe("consumer streams", () => {
  it.live("ends a consumer with basic.cancel when its stream ends, and requeues what it buffered", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const queue = unique("q-cancel")
        yield* channel.queueDeclare(queue)
        yield* publishNumbered(channel, queue, 10)
        const consumer = yield* AmqpChannel.make(connection)
        // No prefetch limit: the broker pushes all ten, and the client buffers what is not taken.
        // The third delivery waits until the queue has nothing ready, so all ten have arrived.
        const taken = yield* consumer.consume(queue, { consumerTag: "cancel-me" }).pipe(
          Stream.tap((delivery) =>
            delivery.deliveryTag === 3
              ? poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === 0)
              : Effect.void
          ),
          Stream.take(3),
          Stream.runCollect
        )
        assert.deepStrictEqual(taken.map((d) => text(d.body)), ["m0", "m1", "m2"])
        assert.deepStrictEqual(taken.map((d) => d.consumerTag), ["cancel-me", "cancel-me", "cancel-me"])
        // The seven buffered deliveries are back in the queue; the three taken stay unacknowledged.
        const rest = yield* checkRequeuedAfterEnd(broker, connection, channel, consumer, queue, taken, 7)
        assert.deepStrictEqual(rest, ["m3", "m4", "m5", "m6", "m7", "m8", "m9"])
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("fails with AmqpConsumerCancelled when another channel deletes the queue", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const queue = unique("q-deleted")
        yield* channel.queueDeclare(queue)
        yield* publishNumbered(channel, queue, 1)
        const consumer = yield* AmqpChannel.make(connection)
        const fiber = yield* consumeUntilFailure(consumer, queue, "doomed")
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.instanceOf(error, AmqpConsumerCancelled)
        assert.deepStrictEqual({ ...error }, { _tag: "AmqpConsumerCancelled", consumerTag: "doomed", queue })
        // Only the consumer ended: its channel carries on.
        assert.isTrue(yield* consumer.isOpen)
        const again = yield* consumer.queueDeclare("", { exclusive: true })
        assert.strictEqual(again.messageCount, 0)
      })
    ))

  it.live("fails with AmqpConsumerCancelled when rabbitmqctl deletes the queue", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const queue = unique("q-ctl-deleted")
        yield* channel.queueDeclare(queue)
        yield* publishNumbered(channel, queue, 1)
        const fiber = yield* consumeUntilFailure(channel, queue, "ctl-doomed")
        yield* broker.deleteQueue(queue)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.instanceOf(error, AmqpConsumerCancelled)
        assert.deepStrictEqual({ ...error }, { _tag: "AmqpConsumerCancelled", consumerTag: "ctl-doomed", queue })
        assert.isTrue(yield* channel.isOpen)
      })
    ))

  it.live("fails with the channel's error when the broker closes the consumer's channel", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, queue } = yield* confirmingChannel(yield* connect())
        yield* publishNumbered(channel, queue, 1)
        const fiber = yield* consumeUntilFailure(channel, queue, "on-a-dying-channel")
        const missing = unique("q-missing")
        yield* Effect.flip(channel.queueDeclare(missing, { passive: true }))
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.instanceOf(error, AmqpChannelError)
        assert.strictEqual((error as AmqpChannelError).replyCode, 404)
        assert.strictEqual((error as AmqpChannelError).method, "queue.declare")
      })
    ))

  it.live("fails with the connection's error when the broker closes the connection", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const { channel, queue } = yield* confirmingChannel(connection)
        yield* publishNumbered(channel, queue, 1)
        const fiber = yield* consumeUntilFailure(channel, queue, "on-a-dying-connection")
        assert.strictEqual(yield* broker.closeConnection(connection.name!, "consumer test"), 1)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.instanceOf(error, AmqpConnectionError)
        const reason = (error as AmqpConnectionError).reason
        assert.instanceOf(reason, ServerClosed)
        assert.strictEqual((reason as ServerClosed).replyCode, 320)
        assert.strictEqual((reason as ServerClosed).replyText, "CONNECTION_FORCED - consumer test")
      })
    ))

  it.live("refuses a consumer tag already in use on the channel, and the connection lives on", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const { channel, queue } = yield* confirmingChannel(connection)
        const consumeAs = (consumerTag: string) =>
          channel.consume(queue, { consumerTag }).pipe(
            Stream.take(1),
            Stream.runCollect,
            Effect.flip,
            Effect.forkScoped({ startImmediately: true })
          )
        // The second starts while the first's basic.consume is still on its way.
        const first = yield* consumeAs("same")
        const second = yield* consumeAs("same")
        const refused = yield* Fiber.join(second)
        assert.instanceOf(refused, AmqpConsumerTagInUse)
        assert.deepInclude(refused, { consumerTag: "same", channel: channel.id })
        // ... and once it is registered.
        const consumers = channel.queueDeclare(queue, { passive: true })
        assert.strictEqual((yield* poll(consumers, (ok) => ok.consumerCount === 1)).consumerCount, 1)
        assert.instanceOf(yield* Fiber.join(yield* consumeAs("same")), AmqpConsumerTagInUse)

        yield* channel.publish("", queue, utf8("to the first"))
        assert.deepStrictEqual(Array.from(yield* Effect.flip(Fiber.join(first)), (d) => text(d.body)), [
          "to the first"
        ])
        assert.isTrue(yield* connection.isOpen)
      })
    ))
})
