/**
 * `consumeWith`: a consumer that runs a handler on each delivery in turn. It receives what was
 * published, in order; interrupting it cancels the consumer and requeues what it had buffered and
 * the delivery whose handler it interrupted (unless that handler settled it); a handler's failure,
 * a broker cancel and a closed channel each end it with their own error.
 */
import {
  AmqpChannel,
  AmqpChannelError,
  AmqpClient,
  AmqpConnectionError,
  AmqpConsumerCancelled,
  ConnectionConfig,
  ServerClosed
} from "@effect-amqp/client"
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Data, Deferred, Effect, Exit, Fiber, Option } from "effect"
import {
  brokerChannel,
  checkRequeuedAfterEnd,
  onSharedBroker,
  poll,
  queueWithMessages,
  randomBytes,
  sha256,
  text,
  unique
} from "../support/channelKit.ts"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("consume-with")

class HandlerFailed extends Data.TaggedError("HandlerFailed")<{ readonly body: string }> {}

/** A confirm-mode channel, a fresh queue holding `m0`, `m1`, ... (`count` of them) and a consumer channel. */
describe("consumeWith", () => {
  it.live("hands every delivery to the handler in publish order, bodies intact", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const queue = unique("q-with-order")
        yield* channel.queueDeclare(queue)
        const bodies = Array.from({ length: 500 }, (_, i) => randomBytes(1 + (i * 37) % 3000))
        for (const body of bodies) yield* channel.publish("", queue, body)

        const consumer = yield* AmqpChannel.make(connection)
        yield* consumer.qos(50)
        const seen: Array<string> = []
        const done = yield* Deferred.make<void>()
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.andThen(delivery.ack(), () => {
            seen.push(sha256(delivery.body))
            return seen.length === bodies.length ? Deferred.done(done, Exit.void) : Effect.void
          })
        yield* Effect.raceFirst(consumer.consumeWith(queue, handle), Deferred.await(done)).pipe(
          Effect.timeout("10 seconds")
        )

        assert.deepStrictEqual(seen, bodies.map(sha256))
        const left = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.consumerCount === 0)
        assert.deepStrictEqual(left, { queue, messageCount: 0, consumerCount: 0 })
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("when interrupted, cancels the consumer and requeues what it had buffered and was handling", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        // No prefetch limit: the broker pushes all ten. The third delivery's handler waits until
        // the queue has nothing ready (all ten have arrived), then holds until interrupted.
        const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-with-cancel", 10)
        const handled: Array<AmqpChannel.Delivery> = []
        const third = yield* Deferred.make<void>()
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.suspend(() => {
            handled.push(delivery)
            if (handled.length < 3) return Effect.void
            return poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === 0).pipe(
              Effect.andThen(Deferred.done(third, Exit.void)),
              Effect.andThen(Effect.never)
            )
          })
        yield* Effect.raceFirst(
          consumer.consumeWith(queue, handle, { consumerTag: "with-me" }),
          Deferred.await(third)
        ).pipe(Effect.timeout("10 seconds"))

        assert.deepStrictEqual(handled.map((d) => text(d.body)), ["m0", "m1", "m2"])
        assert.deepStrictEqual(handled.map((d) => d.consumerTag), ["with-me", "with-me", "with-me"])
        // The third, whose handler was interrupted, and the seven buffered are back in the queue;
        // the two whose handlers returned without acknowledging them stay unacknowledged.
        const rest = yield* checkRequeuedAfterEnd(broker, connection, channel, consumer, queue, handled.slice(0, 2), 8)
        assert.deepStrictEqual(rest, ["m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"])
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("ends with the handler's error, cancels the consumer, requeues what it held; the channel carries on", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-with-fails", 5)
        yield* consumer.qos(1)
        const handle = (delivery: AmqpChannel.Delivery): Effect.Effect<void, HandlerFailed | AmqpChannel.AckError> =>
          text(delivery.body) === "m2"
            ? Effect.fail(new HandlerFailed({ body: "m2" }))
            : delivery.ack()
        const error = yield* Effect.flip(consumer.consumeWith(queue, handle)).pipe(Effect.timeout("10 seconds"))
        assert.deepStrictEqual(error, new HandlerFailed({ body: "m2" }))

        const onBroker = yield* brokerChannel(broker, connection.name, consumer.id)
        assert.deepStrictEqual(onBroker.map((c) => c.consumerCount), [0])
        assert.isTrue(yield* consumer.isOpen)
        // m0 and m1 were acked; m2, whose handler failed, is back in the queue, in front of m3
        // and m4, rather than unacknowledged for as long as the consumer's channel lives.
        const passive = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === 3)
        assert.deepStrictEqual(passive, { queue, messageCount: 3, consumerCount: 0 })
        const unacked = yield* brokerChannel(broker, connection.name, consumer.id)
        assert.deepStrictEqual(unacked.map((c) => c.messagesUnacknowledged), [0])
        const again = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        assert.deepStrictEqual([text(again.body), again.redelivered], ["m2", true])
        // queue.delete counts the ready messages: m3 and m4.
        assert.strictEqual(yield* channel.queueDelete(queue), 2)
      })
    ))

  it.live("a handler that settled its delivery before failing leaves it settled", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-with-settled", 3)
        yield* consumer.qos(1)
        // m0 is dropped (nack without requeue) and then its handler fails: giving it back as well
        // would settle its tag twice, which the broker answers by closing the channel (406).
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.andThen(
            delivery.nack({ requeue: false }),
            Effect.fail(new HandlerFailed({ body: text(delivery.body) }))
          )
        const error = yield* Effect.flip(consumer.consumeWith(queue, handle)).pipe(Effect.timeout("10 seconds"))
        assert.deepStrictEqual(error, new HandlerFailed({ body: "m0" }))
        // A round trip on the consumer's channel: the broker read whatever the client sent after the nack.
        yield* consumer.queueDeclare(queue, { passive: true })
        assert.isTrue(yield* consumer.isOpen)
        const passive = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === 2)
        assert.deepStrictEqual(passive, { queue, messageCount: 2, consumerCount: 0 })
        const unacked = yield* brokerChannel(broker, connection.name, consumer.id)
        assert.deepStrictEqual(unacked.map((c) => c.messagesUnacknowledged), [0])
        assert.strictEqual(yield* channel.queueDelete(queue), 2)
      })
    ))

  it.live(
    "without a prefetch, is not deadlocked by paused reading when its handler waits for confirms",
    () =>
      onSharedBroker((connect) =>
        Effect.gen(function*() {
          // More than the 8,192 buffered deliveries that make the connection stop reading. Each
          // handler waits for a confirm that only that same connection can read.
          const total = 12_000
          const { channel, consumer, queue } = yield* queueWithMessages(connect, "q-with-stall", total)
          const out = unique("q-with-stall-out")
          yield* channel.queueDeclare(out)
          let handled = 0
          const done = yield* Deferred.make<void>()
          const handle = (delivery: AmqpChannel.Delivery) =>
            Effect.gen(function*() {
              yield* channel.publish("", out, delivery.body)
              yield* delivery.ack()
              if (++handled === total) yield* Deferred.done(done, Exit.void)
            })
          yield* Effect.raceFirst(consumer.consumeWith(queue, handle), Deferred.await(done)).pipe(
            Effect.timeout("60 seconds")
          )
          assert.strictEqual(handled, total)
          assert.strictEqual(yield* channel.queueDelete(out), total)
          assert.strictEqual(yield* channel.queueDelete(queue), 0)
        })
      ),
    90_000
  )

  it.live(
    "pauses reading once 64 MiB of bodies wait, and resumes it when the handler takes nothing for 2 s",
    () =>
      onSharedBroker((connect) =>
        Effect.gen(function*() {
          // 1,200 bodies of 64 KiB: 75 MiB, far fewer than the 8,192 deliveries that also pause.
          const connection = yield* connect()
          const channel = yield* AmqpChannel.make(connection)
          yield* channel.confirmSelect
          const queue = unique("q-with-bytes")
          yield* channel.queueDeclare(queue)
          const body = new Uint8Array(64 * 1024)
          yield* Effect.forEach(Array.from({ length: 1_200 }), () => channel.publish("", queue, body), {
            concurrency: 100,
            discard: true
          })
          const consumer = yield* AmqpChannel.make(connection)
          const socket = connection.core.transport.socket
          // The handler holds its first delivery: everything else stays in the buffer.
          const fiber = yield* Effect.forkChild(consumer.consumeWith(queue, () => Effect.never), {
            startImmediately: true
          })
          let pausedAt: number | undefined
          for (let i = 0; i < 500 && pausedAt === undefined; i++) {
            if (socket.isPaused()) pausedAt = Date.now()
            else yield* Effect.sleep("10 millis")
          }
          assert.isDefined(pausedAt, "reading never paused")
          let resumedAt: number | undefined
          for (let i = 0; i < 500 && resumedAt === undefined; i++) {
            if (!socket.isPaused()) resumedAt = Date.now()
            else yield* Effect.sleep("10 millis")
          }
          assert.isDefined(resumedAt, "reading never resumed")
          assert.isAtLeast(resumedAt! - pausedAt!, 1_500)
          yield* Fiber.interrupt(fiber)
          // All back in the queue: the buffered ones, and the one whose handler was interrupted.
          const left = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === 1_200)
          assert.strictEqual(left.messageCount, 1_200)
          assert.strictEqual(yield* channel.queueDelete(queue), 1_200)
        })
      ),
    60_000
  )

  it.live(
    "when interrupted while its buffer paused reading, cancels at once and leaves nothing unaccounted",
    () =>
      onSharedBroker((connect, broker) =>
        Effect.gen(function*() {
          const total = 12_000
          const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-with-paused", total)
          let acked = 0
          const handle = (delivery: AmqpChannel.Delivery) =>
            Effect.sleep("1 millis").pipe(
              Effect.andThen(delivery.ack()),
              Effect.andThen(Effect.sync(() => acked++))
            )
          const fiber = yield* Effect.forkChild(consumer.consumeWith(queue, handle), { startImmediately: true })
          yield* Effect.sleep("700 millis")
          const started = Date.now()
          yield* Fiber.interrupt(fiber)
          const tookMillis = Date.now() - started
          // closeTimeout is 5 s: a cancel-ok that could not be read would have taken all of it.
          assert.isBelow(tookMillis, 2500)

          const onBroker = yield* brokerChannel(broker, connection.name, consumer.id)
          assert.deepStrictEqual(onBroker.map((c) => c.consumerCount), [0])
          const unacked = onBroker[0]!.messagesUnacknowledged
          assert.isAtMost(unacked, 1)
          // The channel has handed everything back by now; the queue counts some 11,000 requeues a
          // moment later. In one full run on a slow machine, 5 s were not enough (1,003 short).
          const ready = yield* poll(
            channel.queueDeclare(queue, { passive: true }),
            (ok) => ok.messageCount + acked + unacked === total,
            20_000
          )
          assert.strictEqual(ready.messageCount + acked + unacked, total)
          assert.isAbove(ready.messageCount, 0)
        })
      ),
    60_000
  )

  it.live("fails with AmqpConsumerCancelled when the queue is deleted", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        const queue = unique("q-with-deleted")
        yield* channel.queueDeclare(queue)
        const consumer = yield* AmqpChannel.make(connection)
        const fiber = yield* Effect.forkScoped(
          Effect.flip(consumer.consumeWith(queue, () => Effect.void, { consumerTag: "with-doomed" }))
        )
        yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.consumerCount === 1)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.deepStrictEqual(error, new AmqpConsumerCancelled({ consumerTag: "with-doomed", queue }))
        assert.isTrue(yield* consumer.isOpen)
      })
    ))

  it.live("fails with the connection's error when the broker closes the connection mid-handler", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { connection, consumer, queue } = yield* queueWithMessages(connect, "q-with-forced", 20)
        yield* consumer.qos(5)
        // Each handler acks after 100 ms: the close lands while one is running, and its ack finds
        // the channel gone. The consumer ends with why it went, not with that stale ack.
        const fiber = yield* Effect.forkScoped(
          Effect.flip(consumer.consumeWith(queue, (delivery) => Effect.andThen(Effect.sleep(100), delivery.ack())))
        )
        yield* Effect.sleep("250 millis")
        assert.strictEqual(yield* broker.closeConnection(connection.name!, "consumeWith test"), 1)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.instanceOf(error, AmqpConnectionError)
        const reason = (error as AmqpConnectionError).reason
        assert.instanceOf(reason, ServerClosed)
        assert.strictEqual((reason as ServerClosed).replyCode, 320)
      })
    ))

  it.live("fails with the channel's error when the broker closes the consumer's channel", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        const queue = unique("q-with-closed")
        yield* channel.queueDeclare(queue)
        const consumer = yield* AmqpChannel.make(connection)
        const fiber = yield* Effect.forkScoped(Effect.flip(consumer.consumeWith(queue, () => Effect.void)))
        yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.consumerCount === 1)
        // A passive declare of a missing queue closes the consumer's channel with 404.
        const declared = yield* Effect.flip(consumer.queueDeclare(unique("q-missing"), { passive: true }))
        assert.instanceOf(declared, AmqpChannelError)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.instanceOf(error, AmqpChannelError)
        if (error instanceof AmqpChannelError) assert.strictEqual(error.replyCode, 404)
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("on an AmqpClient channel, a failing handler's delivery goes back, and the channel carries on", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const options = yield* ConnectionConfig.fromUrl(broker.url, { connectionName: names.next("client") })
          const client = yield* AmqpClient.make(options)
          const channel = yield* client.channel()
          const queue = unique("q-with-client-fails")
          yield* channel.queueDeclare(queue)
          yield* channel.confirmSelect
          yield* channel.publish("", queue, Buffer.from("poison"))
          const error = yield* Effect.flip(
            channel.consumeWith(queue, (delivery) => Effect.fail(new HandlerFailed({ body: text(delivery.body) })))
          ).pipe(Effect.timeout("10 seconds"))
          assert.deepStrictEqual(error, new HandlerFailed({ body: "poison" }))
          // Back in the queue at once, not held for the life of the client's channel.
          const again = yield* poll(channel.get(queue), Option.isSome)
          assert.deepStrictEqual(Option.map(again, (d) => [text(d.body), d.redelivered]), Option.some(["poison", true]))
          yield* Option.getOrThrow(again).ack()
          assert.strictEqual(yield* channel.queueDelete(queue), 0)
        }),
        names.own(broker)
      )
    }))
})
