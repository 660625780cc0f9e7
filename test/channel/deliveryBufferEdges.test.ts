/**
 * Edge cases of a consumer's buffer (`DeliveryBuffer`) against the run's private broker node:
 * deliveries not taken are requeued when a stream ends early, a consumer interrupted while it
 * waits leaves no waiter behind, the buffer's array compaction keeps every body in order while
 * more keep arriving, a broker cancel hands over what was buffered before it ends the consumer,
 * a closed channel drops its buffered deliveries, two consumers on one channel keep their own
 * order, and reading resumes when a consumer that paused it ends.
 */
import {
  AmqpChannel,
  AmqpChannelError,
  AmqpClient,
  AmqpConnection,
  AmqpConsumerCancelled,
  ConnectionConfig
} from "@effect-amqp/client"
import { SharedBroker as Shared } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Data, Deferred, Effect, Exit, Fiber, Option, Stream } from "effect"
import {
  brokerChannel,
  checkRequeuedAfterEnd,
  onSharedBroker,
  poll,
  publishNumbered,
  queueWithMessages,
  randomBytes,
  readyCount,
  sha256,
  type SharedBroker,
  text,
  unique
} from "../support/channelKit.ts"
import { leakChecked, Names } from "../support/Probe.ts"

class HandlerFailed extends Data.TaggedError("HandlerFailed")<{ readonly body: string }> {}

/** Publishes `bodies` in order on a confirm-mode channel, keeping a window of confirms in flight. */
const publishAll = (channel: AmqpChannel.AmqpChannel, queue: string, bodies: ReadonlyArray<Uint8Array>) =>
  Effect.gen(function*() {
    const confirms: Array<Effect.Effect<void, unknown>> = []
    for (const body of bodies) confirms.push(yield* channel.publishAsync("", queue, body))
    yield* Effect.forEach(confirms, (confirm) => confirm, { discard: true })
  })

/** A confirm-mode channel, a fresh queue holding `m0`, `m1`, ... (`count` of them) and a consumer channel. */
const waitUntil = (condition: () => boolean, what: string, timeoutMillis = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMillis
    while (!condition()) {
      if (Date.now() >= deadline) return yield* Effect.die(new Error(`timed out waiting for ${what}`))
      yield* Effect.sleep("5 millis")
    }
  })

describe("a consumer's buffer, at its edges", () => {
  it.live("Stream.take(n) hands over n deliveries and requeues every other buffered one, in order", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        // No prefetch: the broker pushes all 50 before the stream takes its 5.
        const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-edge-take", 50)
        const arrived = yield* Deferred.make<void>()
        const taken = yield* consumer.consume(queue).pipe(
          Stream.tap((delivery) =>
            text(delivery.body) === "m0"
              // The first pull waits until the broker has pushed everything (nothing ready).
              ? poll(readyCount(channel, queue), (n) => n === 0).pipe(
                Effect.andThen(Deferred.done(arrived, Exit.void))
              )
              : Effect.void
          ),
          Stream.take(5),
          Stream.runCollect,
          Effect.timeout("10 seconds")
        )
        assert.isTrue(yield* Deferred.isDone(arrived))
        assert.deepStrictEqual(taken.map((d) => text(d.body)), ["m0", "m1", "m2", "m3", "m4"])
        const rest = yield* checkRequeuedAfterEnd(broker, connection, channel, consumer, queue, taken, 45)
        assert.deepStrictEqual(rest, Array.from({ length: 45 }, (_, i) => `m${i + 5}`))
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("a consumer interrupted while it waits on an empty buffer leaves the next message in the queue", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-edge-idle", 0)
        const handled: Array<string> = []
        const withFiber = yield* Effect.forkChild(
          consumer.consumeWith(queue, (d) => Effect.sync(() => handled.push(text(d.body)))),
          { startImmediately: true }
        )
        const streamFiber = yield* Effect.forkChild(
          consumer.consume(queue).pipe(Stream.runForEach((d) => Effect.sync(() => handled.push(text(d.body))))),
          { startImmediately: true }
        )
        yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.consumerCount === 2)
        yield* Fiber.interrupt(withFiber)
        yield* Fiber.interrupt(streamFiber)
        const onBroker = yield* brokerChannel(broker, connection.name, consumer.id)
        assert.deepStrictEqual(onBroker.map((c) => c.consumerCount), [0])
        yield* publishNumbered(channel, queue, 3)
        yield* Effect.sleep("100 millis")
        assert.deepStrictEqual(handled, [])
        assert.strictEqual(yield* readyCount(channel, queue), 3)
        // The channel still consumes: a new consumer gets all three, in order.
        const again = yield* consumer.consume(queue, { noAck: true }).pipe(
          Stream.take(3),
          Stream.runCollect,
          Effect.timeout("5 seconds")
        )
        assert.deepStrictEqual(again.map((d) => text(d.body)), ["m0", "m1", "m2"])
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live(
    "compacts its array while more keep arriving: every body, in order, through consumeWith and consume",
    () =>
      onSharedBroker((connect) =>
        Effect.gen(function*() {
          const connection = yield* connect()
          const channel = yield* AmqpChannel.make(connection)
          yield* channel.confirmSelect
          const queue = unique("q-edge-compact")
          yield* channel.queueDeclare(queue)
          const total = 6_000
          const bodies = Array.from({ length: total }, (_, i) => randomBytes(1 + (i * 131) % 700))
          const expected = bodies.map(sha256)
          // Half before the consumer starts (a backlog of more than 1,024), half while it runs.
          yield* publishAll(channel, queue, bodies.slice(0, total / 2))
          const consumer = yield* AmqpChannel.make(connection)
          const seen: Array<string> = []
          const done = yield* Deferred.make<void>()
          const handle = (delivery: AmqpChannel.Delivery) =>
            Effect.andThen(delivery.ack(), () => {
              seen.push(sha256(delivery.body))
              return seen.length === total ? Deferred.done(done, Exit.void) : Effect.void
            })
          const fiber = yield* Effect.forkChild(consumer.consumeWith(queue, handle), { startImmediately: true })
          yield* publishAll(channel, queue, bodies.slice(total / 2))
          yield* Deferred.await(done).pipe(Effect.timeout("20 seconds"))
          yield* Fiber.interrupt(fiber)
          assert.strictEqual(seen.length, total)
          assert.deepStrictEqual(seen, expected)

          // The same through the stream, one delivery per pull, without acknowledgements.
          yield* publishAll(channel, queue, bodies)
          const streamed = yield* consumer.consume(queue, { noAck: true }).pipe(
            Stream.map((d) => sha256(d.body)),
            Stream.take(total),
            Stream.runCollect,
            Effect.timeout("20 seconds")
          )
          assert.deepStrictEqual(streamed, expected)
          const left = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.consumerCount === 0)
          assert.deepStrictEqual(left, { queue, messageCount: 0, consumerCount: 0 })
          assert.strictEqual(yield* channel.queueDelete(queue), 0)
        })
      ),
    60_000
  )

  it.live("a handler that sleeps between deliveries sees them all, in order", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, consumer, queue } = yield* queueWithMessages(connect, "q-edge-sleepy", 200)
        const seen: Array<string> = []
        const done = yield* Deferred.make<void>()
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.gen(function*() {
            if (seen.length % 3 === 0) yield* Effect.sleep("1 millis")
            else yield* Effect.yieldNow
            seen.push(text(delivery.body))
            yield* delivery.ack()
            if (seen.length === 200) yield* Deferred.done(done, Exit.void)
          })
        yield* Effect.raceFirst(consumer.consumeWith(queue, handle), Deferred.await(done)).pipe(
          Effect.timeout("10 seconds")
        )
        assert.deepStrictEqual(seen, Array.from({ length: 200 }, (_, i) => `m${i}`))
        const left = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.consumerCount === 0)
        assert.deepStrictEqual(left, { queue, messageCount: 0, consumerCount: 0 })
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("a handler failing on the 7th of 40 buffered deliveries: its error, 6 acked, 34 requeued", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-edge-fail", 40)
        const seen: Array<string> = []
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.gen(function*() {
            const body = text(delivery.body)
            seen.push(body)
            // Hold the first until the broker has pushed all 40, so the rest sit in the buffer.
            if (body === "m0") yield* poll(readyCount(channel, queue), (n) => n === 0)
            if (body === "m6") return yield* new HandlerFailed({ body })
            yield* delivery.ack()
          })
        const error = yield* Effect.flip(consumer.consumeWith(queue, handle)).pipe(Effect.timeout("10 seconds"))
        assert.deepStrictEqual(error, new HandlerFailed({ body: "m6" }))
        assert.deepStrictEqual(seen, ["m0", "m1", "m2", "m3", "m4", "m5", "m6"])
        // m6, whose handler failed, goes back with the 33 buffered behind it.
        const ready = yield* poll(readyCount(channel, queue), (n) => n === 34)
        assert.strictEqual(ready, 34)
        const onBroker = yield* brokerChannel(broker, connection.name, consumer.id)
        assert.deepStrictEqual(onBroker.map((c) => [c.consumerCount, c.messagesUnacknowledged]), [[0, 0]])
        assert.isTrue(yield* consumer.isOpen)
        assert.strictEqual(yield* channel.queueDelete(queue), 34)
      })
    ))

  it.live("a broker cancel hands over the deliveries buffered before it, then ends with AmqpConsumerCancelled", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, consumer, queue } = yield* queueWithMessages(connect, "q-edge-cancel", 20)
        const seen: Array<string> = []
        const acked: Array<string> = []
        const first = yield* Deferred.make<void>()
        const go = yield* Deferred.make<void>()
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.gen(function*() {
            seen.push(text(delivery.body))
            if (seen.length === 1) {
              yield* Deferred.done(first, Exit.void)
              yield* Deferred.await(go)
            }
            yield* delivery.ack()
            acked.push(text(delivery.body))
          })
        const fiber = yield* Effect.forkChild(
          Effect.flip(consumer.consumeWith(queue, handle, { consumerTag: "edge-doomed" })),
          { startImmediately: true }
        )
        yield* Deferred.await(first)
        yield* poll(readyCount(channel, queue), (n) => n === 0)
        // The broker pushed all 20 before its basic.cancel, on the same channel.
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
        yield* Effect.sleep("100 millis")
        yield* Deferred.done(go, Exit.void)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.deepStrictEqual(error, new AmqpConsumerCancelled({ consumerTag: "edge-doomed", queue }))
        const expected = Array.from({ length: 20 }, (_, i) => `m${i}`)
        assert.deepStrictEqual(seen, expected)
        assert.deepStrictEqual(acked, expected)
        assert.isTrue(yield* consumer.isOpen)
      })
    ))

  it.live("a channel closed with deliveries buffered ends the consumer with its error; they are not handed out", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, consumer, queue } = yield* queueWithMessages(connect, "q-edge-closed", 10)
        const seen: Array<string> = []
        const first = yield* Deferred.make<void>()
        const go = yield* Deferred.make<void>()
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.gen(function*() {
            seen.push(text(delivery.body))
            yield* Deferred.done(first, Exit.void)
            yield* Deferred.await(go)
          })
        const fiber = yield* Effect.forkChild(Effect.flip(consumer.consumeWith(queue, handle)), {
          startImmediately: true
        })
        yield* Deferred.await(first)
        yield* poll(readyCount(channel, queue), (n) => n === 0)
        // A passive declare of a missing queue closes the consumer's channel with 404.
        const declared = yield* Effect.flip(consumer.queueDeclare(unique("q-missing"), { passive: true }))
        assert.instanceOf(declared, AmqpChannelError)
        yield* Deferred.done(go, Exit.void)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.instanceOf(error, AmqpChannelError)
        assert.strictEqual((error as AmqpChannelError).replyCode, 404)
        assert.deepStrictEqual(seen, ["m0"])
        // All ten are back in the queue, none lost.
        assert.strictEqual(yield* poll(readyCount(channel, queue), (n) => n === 10), 10)
        assert.strictEqual(yield* channel.queueDelete(queue), 10)
      })
    ))

  it.live(
    "two consumers on one channel, no prefetch: each sees its own queue whole and in order",
    () =>
      onSharedBroker((connect) =>
        Effect.gen(function*() {
          const connection = yield* connect()
          const channel = yield* AmqpChannel.make(connection)
          yield* channel.confirmSelect
          const queueA = unique("q-edge-two-a")
          const queueB = unique("q-edge-two-b")
          yield* channel.queueDeclare(queueA)
          yield* channel.queueDeclare(queueB)
          const total = 3_000
          const bodiesA = Array.from({ length: total }, (_, i) => randomBytes(1 + (i * 17) % 500))
          const bodiesB = Array.from({ length: total }, (_, i) => randomBytes(1 + (i * 29) % 500))
          yield* publishAll(channel, queueA, bodiesA)
          yield* publishAll(channel, queueB, bodiesB)
          const consumer = yield* AmqpChannel.make(connection)
          const seenA: Array<string> = []
          const seenB: Array<string> = []
          const byStream = consumer.consume(queueA).pipe(
            Stream.mapEffect((d) => Effect.as(d.ack(), sha256(d.body))),
            Stream.take(total),
            Stream.runForEach((hash) => Effect.sync(() => seenA.push(hash)))
          )
          const doneB = yield* Deferred.make<void>()
          const byHandler = consumer.consumeWith(queueB, (d) =>
            Effect.andThen(d.ack(), () => {
              seenB.push(sha256(d.body))
              return seenB.length === total ? Deferred.done(doneB, Exit.void) : Effect.void
            }))
          yield* Effect.all([byStream, Effect.raceFirst(byHandler, Deferred.await(doneB))], { concurrency: 2 }).pipe(
            Effect.timeout("20 seconds")
          )
          assert.deepStrictEqual(seenA, bodiesA.map(sha256))
          assert.deepStrictEqual(seenB, bodiesB.map(sha256))
          yield* poll(channel.queueDeclare(queueA, { passive: true }), (ok) => ok.consumerCount === 0)
          yield* poll(channel.queueDeclare(queueB, { passive: true }), (ok) => ok.consumerCount === 0)
          assert.strictEqual(yield* channel.queueDelete(queueA), 0)
          assert.strictEqual(yield* channel.queueDelete(queueB), 0)
        })
      ),
    60_000
  )

  it.live(
    "a stream that ends while its buffer paused reading: reading resumes and the rest is requeued",
    () =>
      onSharedBroker((connect, broker) =>
        Effect.gen(function*() {
          const total = 10_000
          const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-edge-paused", total)
          const socket = connection.core.transport.socket
          const taken = yield* consumer.consume(queue).pipe(
            Stream.tap((d) =>
              text(d.body) === "m0"
                ? waitUntil(() => socket.isPaused(), "reading to pause")
                : Effect.void
            ),
            Stream.take(10),
            Stream.runCollect,
            Effect.timeout("10 seconds")
          )
          assert.isFalse(socket.isPaused())
          assert.deepStrictEqual(taken.map((d) => text(d.body)), Array.from({ length: 10 }, (_, i) => `m${i}`))
          const onBroker = yield* brokerChannel(broker, connection.name, consumer.id)
          assert.deepStrictEqual(onBroker.map((c) => c.consumerCount), [0])
          const ready = yield* poll(readyCount(channel, queue), (n) => n === total - 10)
          assert.strictEqual(ready, total - 10)
          yield* taken[9]!.ack({ multiple: true })
          assert.strictEqual(yield* channel.queueDelete(queue), total - 10)
        })
      ),
    60_000
  )

  it.live(
    "noAck with a backlog that pauses reading: every body arrives once, in order, and reading resumes",
    () =>
      onSharedBroker((connect) =>
        Effect.gen(function*() {
          const total = 12_000
          const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-edge-noack", total)
          const socket = connection.core.transport.socket
          let sawPaused = false
          const seen = yield* consumer.consume(queue, { noAck: true }).pipe(
            Stream.tap((d) =>
              text(d.body) === "m0"
                ? Effect.andThen(
                  waitUntil(() => socket.isPaused(), "reading to pause"),
                  Effect.sync(() => {
                    sawPaused = true
                  })
                )
                : Effect.void
            ),
            Stream.map((d) => text(d.body)),
            Stream.take(total),
            Stream.runCollect,
            Effect.timeout("20 seconds")
          )
          assert.isTrue(sawPaused)
          assert.isFalse(socket.isPaused())
          assert.deepStrictEqual(seen, Array.from({ length: total }, (_, i) => `m${i}`))
          const left = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.consumerCount === 0)
          assert.deepStrictEqual(left, { queue, messageCount: 0, consumerCount: 0 })
          assert.strictEqual(yield* channel.queueDelete(queue), 0)
        })
      ),
    60_000
  )
})

describe("a recovering client channel's buffer", () => {
  const names = new Names("deliveryBufferEdges")

  /** A client on the shared node, a plain channel with a fresh queue of `count` messages, and a client channel. */
  const clientSetup = (broker: SharedBroker, prefix: string, count: number) =>
    Effect.gen(function*() {
      const options = yield* ConnectionConfig.make({
        host: "127.0.0.1",
        port: broker.amqpPort,
        connectionName: names.next(prefix),
        closeTimeout: 2_000
      }).pipe(Effect.orDie)
      const client = yield* AmqpClient.make(options)
      const admin = yield* AmqpConnection.fromUrl(broker.url, { connectionName: names.next(`${prefix}-admin`) })
      const channel = yield* AmqpChannel.make(admin)
      yield* channel.confirmSelect
      const queue = unique(prefix)
      yield* channel.queueDeclare(queue)
      yield* publishAll(channel, queue, Array.from({ length: count }, (_, i) => Buffer.from(`m${i}`)))
      const consumer = yield* client.channel()
      return { channel, consumer, queue }
    })

  it.live("Stream.take(5) requeues the 25 buffered deliveries it did not take", () =>
    Effect.flatMap(Shared.acquire, (broker) =>
      leakChecked(
        Effect.gen(function*() {
          const { channel, consumer, queue } = yield* clientSetup(broker, "q-edge-client-take", 30)
          const taken = yield* consumer.consume(queue).pipe(
            Stream.tap((d) => text(d.body) === "m0" ? poll(readyCount(channel, queue), (n) => n === 0) : Effect.void),
            Stream.take(5),
            Stream.runCollect,
            Effect.timeout("10 seconds")
          )
          assert.deepStrictEqual(taken.map((d) => text(d.body)), ["m0", "m1", "m2", "m3", "m4"])
          assert.strictEqual(yield* poll(readyCount(channel, queue), (n) => n === 25), 25)
          yield* taken[4]!.ack({ multiple: true })
          const rest: Array<string> = []
          for (let i = 0; i < 25; i++) {
            const got = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
            assert.isTrue(got.redelivered)
            rest.push(text(got.body))
          }
          assert.deepStrictEqual(rest, Array.from({ length: 25 }, (_, i) => `m${i + 5}`))
          assert.strictEqual(yield* channel.queueDelete(queue), 0)
        }),
        names.own(broker)
      )))

  it.live("a broker cancel hands over the 30 buffered deliveries first, then AmqpConsumerCancelled", () =>
    Effect.flatMap(Shared.acquire, (broker) =>
      leakChecked(
        Effect.gen(function*() {
          const { channel, consumer, queue } = yield* clientSetup(broker, "q-edge-client-cancel", 30)
          const seen: Array<string> = []
          const first = yield* Deferred.make<void>()
          const go = yield* Deferred.make<void>()
          const fiber = yield* Effect.forkChild(
            Effect.flip(consumer.consumeWith(queue, (d) =>
              Effect.gen(function*() {
                seen.push(text(d.body))
                if (seen.length === 1) {
                  yield* Deferred.done(first, Exit.void)
                  yield* Deferred.await(go)
                }
                yield* d.ack()
              }), { consumerTag: "edge-client-doomed" })),
            { startImmediately: true }
          )
          yield* Deferred.await(first)
          yield* poll(readyCount(channel, queue), (n) => n === 0)
          assert.strictEqual(yield* channel.queueDelete(queue), 0)
          yield* Effect.sleep("100 millis")
          yield* Deferred.done(go, Exit.void)
          const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
          assert.deepStrictEqual(error, new AmqpConsumerCancelled({ consumerTag: "edge-client-doomed", queue }))
          assert.deepStrictEqual(seen, Array.from({ length: 30 }, (_, i) => `m${i}`))
        }),
        names.own(broker)
      )))
})
