/**
 * `consumeWith` with `concurrency`: up to that many handlers run at once, each on its own
 * delivery, and never more. The first handler's failure interrupts the others, whose deliveries
 * go back unless they settled them; a consumer's end waits for the handlers still running; a
 * concurrency that is not a whole number from 1 is refused before anything is sent.
 */
import {
  AmqpChannel,
  AmqpChannelError,
  AmqpClient,
  AmqpConfigError,
  AmqpConsumerCancelled,
  ConnectionConfig
} from "@effect-amqp/client"
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Data, Deferred, Effect, Exit, Fiber, Option } from "effect"
import {
  brokerChannel,
  onSharedBroker,
  poll,
  queueWithMessages,
  readyCount,
  sha256,
  text,
  unique,
  utf8
} from "../support/channelKit.ts"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("consume-with-n")

class HandlerFailed extends Data.TaggedError("HandlerFailed")<{ readonly body: string }> {}

/** Resolves once `count` handlers have arrived: a barrier none of them passes before all have come. */
const barrier = (count: number) =>
  Effect.map(Deferred.make<void>(), (all) => {
    let arrived = 0
    return Effect.suspend(() => {
      if (++arrived === count) Deferred.doneUnsafe(all, Exit.void)
      return Deferred.await(all)
    })
  })

describe("consumeWith with concurrency", () => {
  it.live("runs up to that many handlers at once, never more, and handles every delivery once", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const total = 40
        const { channel, consumer, queue } = yield* queueWithMessages(connect, "q-with-n", total)
        yield* consumer.qos(10)
        // The first four handlers wait for one another: with fewer running at once, they would
        // wait for ever and the timeout below would fail the test.
        const firstFour = yield* barrier(4)
        let started = 0
        let running = 0
        let mostRunning = 0
        const seen: Array<string> = []
        const done = yield* Deferred.make<void>()
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.gen(function*() {
            running++
            mostRunning = Math.max(mostRunning, running)
            if (++started <= 4) yield* firstFour
            else yield* Effect.sleep("2 millis")
            running--
            yield* delivery.ack()
            seen.push(text(delivery.body))
            if (seen.length === total) yield* Deferred.done(done, Exit.void)
          })
        yield* Effect.raceFirst(consumer.consumeWith(queue, handle, { concurrency: 4 }), Deferred.await(done)).pipe(
          Effect.timeout("10 seconds")
        )

        assert.strictEqual(mostRunning, 4)
        const expected = Array.from({ length: total }, (_, i) => `m${i}`)
        assert.deepStrictEqual(seen.toSorted(), expected.toSorted())
        const left = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.consumerCount === 0)
        assert.deepStrictEqual(left, { queue, messageCount: 0, consumerCount: 0 })
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("a handler's failure interrupts the others; deliveries they had not settled go back", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-with-n-fails", 3)
        yield* consumer.qos(3)
        // All three start. m0's handler acks and then waits for ever, m1's waits for ever without
        // settling, m2's fails once the other two are running.
        const allThree = yield* barrier(3)
        const interrupted: Array<string> = []
        const handle = (delivery: AmqpChannel.Delivery) => {
          const body = text(delivery.body)
          const waitForEver = Effect.never.pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted.push(body))))
          return Effect.gen(function*() {
            yield* allThree
            if (body === "m0") yield* delivery.ack()
            if (body === "m2") return yield* new HandlerFailed({ body })
            return yield* waitForEver
          })
        }
        const error = yield* Effect.flip(consumer.consumeWith(queue, handle, { concurrency: 3 })).pipe(
          Effect.timeout("10 seconds")
        )
        assert.deepStrictEqual(error, new HandlerFailed({ body: "m2" }))
        assert.deepStrictEqual(interrupted.toSorted(), ["m0", "m1"])

        // m0 stays acknowledged; m1 and m2 are back in the queue, nothing is held unacknowledged.
        const passive = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === 2)
        assert.deepStrictEqual(passive, { queue, messageCount: 2, consumerCount: 0 })
        const onBroker = yield* brokerChannel(broker, connection.name, consumer.id)
        assert.deepStrictEqual(onBroker.map((c) => [c.consumerCount, c.messagesUnacknowledged]), [[0, 0]])
        assert.isTrue(yield* consumer.isOpen)
        const back: Array<[string, boolean]> = []
        for (let i = 0; i < 2; i++) {
          const got = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
          back.push([text(got.body), got.redelivered])
        }
        assert.deepStrictEqual(back.toSorted(), [["m1", true], ["m2", true]])
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("a broker cancel ends it only once the handlers still running are done", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, consumer, queue } = yield* queueWithMessages(connect, "q-with-n-cancel", 2)
        yield* consumer.qos(2)
        // m0's handler returns once both run, so its turn comes back to the buffer and finds the
        // consumer's end; m1's runs until released.
        const bothRunning = yield* barrier(2)
        const release = yield* Deferred.make<void>()
        const finished: Array<string> = []
        const interrupted: Array<string> = []
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.gen(function*() {
            const body = text(delivery.body)
            yield* bothRunning
            if (body === "m0") yield* delivery.ack()
            else yield* Deferred.await(release)
            finished.push(body)
          }).pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted.push(text(delivery.body)))))
        const fiber = yield* Effect.forkScoped(
          Effect.flip(consumer.consumeWith(queue, handle, { concurrency: 2, consumerTag: "with-n-doomed" }))
        )
        yield* poll(Effect.sync(() => finished), (done) => done.length === 1)
        // Deleting the queue cancels the consumer while m1's handler still holds its delivery.
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
        yield* Effect.sleep("300 millis")
        assert.isUndefined(fiber.pollUnsafe(), "ended while a handler was running")
        assert.deepStrictEqual([finished, interrupted], [["m0"], []])

        yield* Deferred.done(release, Exit.void)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))
        assert.deepStrictEqual(error, new AmqpConsumerCancelled({ consumerTag: "with-n-doomed", queue }))
        assert.deepStrictEqual([finished, interrupted], [["m0", "m1"], []])
        assert.isTrue(yield* consumer.isOpen)
      })
    ))

  it.live("a closed channel ends it once the running handlers are done, also after one's ack was refused", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, consumer, queue } = yield* queueWithMessages(connect, "q-with-n-closed", 3)
        yield* consumer.qos(3)
        // All three run when the channel closes. m0's ack, soon after, fails as stale; m1 and m2
        // finish later. The stale ack is the channel's end, not a handler failure that would
        // interrupt the other two.
        const allThree = yield* barrier(3)
        const closed = yield* Deferred.make<void>()
        const finished: Array<string> = []
        const interrupted: Array<string> = []
        const ackErrors: Array<string> = []
        const handle = (delivery: AmqpChannel.Delivery) => {
          const body = text(delivery.body)
          return Effect.gen(function*() {
            yield* allThree
            yield* Deferred.await(closed)
            if (body === "m0") {
              yield* Effect.tapError(delivery.ack(), (error) => Effect.sync(() => ackErrors.push(error._tag)))
            } else yield* Effect.sleep("300 millis")
            finished.push(body)
          }).pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted.push(body))))
        }
        const fiber = yield* Effect.forkScoped(Effect.flip(consumer.consumeWith(queue, handle, { concurrency: 3 })))
        yield* poll(
          channel.queueDeclare(queue, { passive: true }),
          (ok) => ok.messageCount === 0 && ok.consumerCount === 1
        )
        // A passive declare of a missing queue on the consumer's own channel closes it with 404.
        const notFound = yield* Effect.flip(consumer.queueDeclare(unique("q-missing"), { passive: true }))
        yield* Deferred.done(closed, Exit.void)
        const error = yield* Fiber.join(fiber).pipe(Effect.timeout("5 seconds"))

        assert.strictEqual(error, notFound)
        assert.instanceOf(error, AmqpChannelError)
        assert.deepStrictEqual([ackErrors, interrupted, finished.toSorted()], [["AmqpStaleDelivery"], [], ["m1", "m2"]])
        const ready = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === 3)
        assert.deepStrictEqual(ready, { queue, messageCount: 3, consumerCount: 0 })
        assert.strictEqual(yield* channel.queueDelete(queue), 3)
      })
    ))

  it.live("a handler failing with its own channel's error interrupts the others, though that closed the channel", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const total = 10
        const { channel, connection, consumer, queue } = yield* queueWithMessages(connect, "q-with-n-404", total)
        yield* consumer.qos(total)
        // The third handler's passive declare of a missing queue closes the consumer's channel
        // (404): the channel's end and that handler's failure are one error. The other two would
        // work for ever.
        const allThree = yield* barrier(3)
        let started = 0
        const interrupted: Array<string> = []
        const handle = (delivery: AmqpChannel.Delivery) =>
          Effect.gen(function*() {
            const third = ++started === 3
            yield* allThree
            if (third) yield* consumer.queueDeclare(unique("q-missing"), { passive: true })
            yield* Effect.never
          }).pipe(Effect.onInterrupt(() => Effect.sync(() => interrupted.push(text(delivery.body)))))
        const error = yield* Effect.flip(consumer.consumeWith(queue, handle, { concurrency: 3 })).pipe(
          Effect.timeout("5 seconds")
        )

        assert.instanceOf(error, AmqpChannelError)
        assert.strictEqual((error as AmqpChannelError).replyCode, 404)
        assert.deepStrictEqual(yield* consumer.closed, error)
        assert.strictEqual(interrupted.length, 2)
        assert.strictEqual(yield* poll(readyCount(channel, queue), (n) => n === total), total)
        assert.deepStrictEqual(yield* brokerChannel(broker, connection.name, consumer.id), [])
        assert.strictEqual(yield* channel.queueDelete(queue), total)
      })
    ))

  it.live("refuses a concurrency that is not a whole number from 1, sending nothing", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, consumer, queue } = yield* queueWithMessages(connect, "q-with-n-bad", 1)
        for (const concurrency of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
          const error = yield* Effect.flip(consumer.consumeWith(queue, () => Effect.void, { concurrency }))
          assert.deepStrictEqual(
            error,
            new AmqpConfigError({ message: `invalid consumeWith concurrency: ${concurrency}` })
          )
        }
        // No consumer was started: the message is still ready and the consumer's channel is open.
        assert.deepStrictEqual(yield* channel.queueDeclare(queue, { passive: true }), {
          queue,
          messageCount: 1,
          consumerCount: 0
        })
        assert.isTrue(yield* consumer.isOpen)
        assert.strictEqual(yield* channel.queueDelete(queue), 1)
      })
    ))

  it.live("on an AmqpClient channel, handles every message once with several handlers at once", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const options = yield* ConnectionConfig.fromUrl(broker.url, { connectionName: names.next("client") })
          const client = yield* AmqpClient.make(options)
          const channel = yield* client.channel()
          const queue = unique("q-with-n-client")
          yield* channel.queueDeclare(queue)
          yield* channel.confirmSelect
          const bodies = Array.from({ length: 200 }, (_, i) => utf8(`body ${i} ${"x".repeat(i)}`))
          for (const body of bodies) yield* channel.publish("", queue, body)

          const consumer = yield* client.channel()
          yield* consumer.qos(16)
          const seen: Array<string> = []
          let running = 0
          let mostRunning = 0
          const done = yield* Deferred.make<void>()
          const handle = (delivery: AmqpChannel.Delivery) =>
            Effect.gen(function*() {
              mostRunning = Math.max(mostRunning, ++running)
              yield* Effect.sleep("1 millis")
              running--
              yield* delivery.ack()
              seen.push(sha256(delivery.body))
              if (seen.length === bodies.length) yield* Deferred.done(done, Exit.void)
            })
          yield* Effect.raceFirst(consumer.consumeWith(queue, handle, { concurrency: 8 }), Deferred.await(done)).pipe(
            Effect.timeout("20 seconds")
          )
          assert.deepStrictEqual(seen.toSorted(), bodies.map(sha256).toSorted())
          assert.isAtMost(mostRunning, 8)
          assert.isAtLeast(mostRunning, 2)
          const left = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.consumerCount === 0)
          assert.deepStrictEqual(left, { queue, messageCount: 0, consumerCount: 0 })
          assert.strictEqual(yield* channel.queueDelete(queue), 0)
        }),
        names.own(broker)
      )
    }))
})
