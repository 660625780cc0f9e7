/**
 * A consumer of a stream queue on an `AmqpClient` channel goes on after a reconnect from the
 * message after the last one it handed to the application, whatever offset it first asked for: a
 * stream does not requeue, so starting again from `first` would deliver everything again, and from
 * `next` would skip what was published during the outage. Deliveries that arrived on the lost link
 * but were never taken come again.
 */
import { AmqpChannel, AmqpClient, AmqpConnection, AmqpStreamRefused } from "@effect-amqp/client"
import { FaultProxy, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Option, Queue, Schedule, Stream } from "effect"
import { randomUUID } from "node:crypto"
import { leakChecked, Names } from "../support/Probe.ts"
import * as Support from "./support.ts"

const names = new Names("recovery-stream-consumers")

/** What the test checks of a delivery: its body, and the offset the stream gave it. */
const seen = (delivery: AmqpChannel.Delivery) => ({
  body: Support.text(delivery.body),
  offset: delivery.properties.headers?.["x-stream-offset"]
})

/** `count` bodies `m<from>`… and the offsets a fresh stream gives them, from `from` on. */
const expected = (from: number, count: number) =>
  Array.from({ length: count }, (_, i) => ({ body: `m${from + i}`, offset: from + i }))

/** The bodies alone, where the offsets are not the stream's. */
const bodies = (deliveries: ReadonlyArray<{ readonly body: string }>) => deliveries.map((d) => d.body)

/** What `expected` gives, with the `x-stream-offset` headers a publisher set (1000 + the number). */
const withPublisherHeaders = (from: number, count: number) =>
  expected(from, count).map(({ body }, i) => ({ body, offset: 1000 + from + i }))

/** Takes the deliveries of `m<from>`… `m<from + count - 1>` from `inbox`, acking each, as `seen`. */
const takeAcked = (inbox: Queue.Queue<AmqpChannel.Delivery, unknown>, from: number, count: number) =>
  Effect.forEach(expected(from, count), ({ body }) =>
    Effect.gen(function*() {
      const delivery = yield* Support.takeDelivery(inbox, body)
      yield* delivery.ack()
      return seen(delivery)
    }))

interface SetUpOptions {
  readonly queueType?: "stream" | "classic" | "quorum"
  /** Publish each message with an `x-stream-offset` header of the publisher's (1000 + its number). */
  readonly header?: boolean
  readonly typedHeaders?: boolean
}

/**
 * A fresh stream (or a queue of `queueType`), an observer connection that publishes to it with
 * confirms, and a client whose link goes through a fault proxy; everything is deleted and closed
 * with the scope.
 */
const setUp = (label: string, { header = false, queueType = "stream", typedHeaders = false }: SetUpOptions = {}) =>
  Effect.gen(function*() {
    const broker = yield* SharedBroker.acquire
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
    const stream = `${queueType}-recovery-${label}-${randomUUID().slice(0, 8)}`
    const observer = yield* AmqpConnection.fromUrl(broker.url, { connectionName: names.next(`${label}-observer`) })
    const publisher = yield* AmqpChannel.make(observer)
    yield* publisher.confirmSelect
    yield* Effect.acquireRelease(
      publisher.queueDeclare(stream, { durable: true, arguments: { "x-queue-type": queueType } }),
      () => Effect.ignore(publisher.queueDelete(stream))
    )
    // One batch, written before any confirm is awaited, so that the broker stores it in one chunk
    // (streams are read a chunk at a time): a consumer may go on from the middle of one.
    const publish = (from: number, count: number) =>
      Effect.gen(function*() {
        const confirms = []
        for (const [i, { body }] of expected(from, count).entries()) {
          const properties = header ? { headers: { "x-stream-offset": 1000 + from + i } } : {}
          confirms.push(yield* publisher.publishAsync("", stream, Buffer.from(body), { properties }))
        }
        yield* Effect.all(confirms, { discard: true })
      })
    const options = yield* Support.options(proxy.port, label, { connectionName: names.next(label), typedHeaders })
    const client = yield* AmqpClient.make(options, { reconnect: Schedule.spaced("200 millis") })
    const log = yield* Support.eventLog(client)
    const channel = yield* client.channel()
    // A stream consumer needs a prefetch, and credit comes back with each ack.
    yield* channel.qos(100)
    /** Drops the link and lets the client back only once `whileDown` has run. */
    const reconnect = <E>(whileDown: Effect.Effect<void, E> = Effect.void) =>
      Effect.gen(function*() {
        const from = log.events.length
        yield* proxy.refuseNew("reset")
        yield* proxy.reset()
        const disconnected = yield* log.next("Disconnected", from, 30_000)
        yield* whileDown
        yield* proxy.acceptNew
        yield* log.next("Recovered", disconnected.index, 30_000)
      })
    return { broker, stream, publish, channel, reconnect }
  })

describe("AmqpClient stream consumers across a reconnect", () => {
  it.live("read their offsets from typed headers too", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const { channel, publish, reconnect, stream } = yield* setUp("typed", { typedHeaders: true })
          yield* publish(0, 5)
          const inbox = yield* Support.consumeInto(channel, stream, { arguments: { "x-stream-offset": "first" } })
          assert.deepStrictEqual(bodies(yield* takeAcked(inbox, 0, 5)), bodies(expected(0, 5)))
          yield* reconnect()
          yield* publish(5, 2)
          assert.deepStrictEqual(bodies(yield* takeAcked(inbox, 5, 2)), bodies(expected(5, 2)))
        }),
        names.own(broker)
      )
    }), 60_000)

  for (const queueType of ["classic", "quorum"] as const) {
    it.live(
      `leave a ${queueType} queue whose messages carry a publisher's x-stream-offset header as it is`,
      () =>
        Effect.gen(function*() {
          const broker = yield* SharedBroker.acquire
          yield* leakChecked(
            Effect.gen(function*() {
              const { channel, publish, reconnect, stream: queue } = yield* setUp(queueType, {
                header: true,
                queueType
              })
              yield* publish(0, 3)
              const inbox = yield* Support.consumeInto(channel, queue)
              assert.deepStrictEqual(yield* takeAcked(inbox, 0, 3), withPublisherHeaders(0, 3))
              // A round trip behind the acks: the broker has them before the link goes.
              yield* channel.queueDeclare(queue, { passive: true })
              // The consumer starts again as it started: no x-stream-offset argument, which the
              // broker would refuse on this queue (406), ending it.
              yield* reconnect()
              yield* publish(3, 2)
              assert.deepStrictEqual(yield* takeAcked(inbox, 3, 2), withPublisherHeaders(3, 2))
            }),
            names.own(broker)
          )
        }),
      60_000
    )
  }

  it.live(
    "go on after the last delivery taken, not from the offset they first asked for",
    () =>
      Effect.gen(function*() {
        const broker = yield* SharedBroker.acquire
        yield* leakChecked(
          Effect.gen(function*() {
            const { channel, publish, reconnect, stream } = yield* setUp("first")
            yield* publish(0, 10)
            const inbox = yield* Support.consumeInto(channel, stream, { arguments: { "x-stream-offset": "first" } })
            assert.deepStrictEqual(yield* takeAcked(inbox, 0, 10), expected(0, 10))

            yield* reconnect()
            yield* publish(10, 5)
            assert.deepStrictEqual(yield* takeAcked(inbox, 10, 5), expected(10, 5))
          }),
          names.own(broker)
        )
      }),
    60_000
  )

  it.live("started at `next`, get what was published while their link was down", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const { channel, publish, reconnect, stream } = yield* setUp("next")
          const inbox = yield* Support.consumeInto(channel, stream, { arguments: { "x-stream-offset": "next" } })
          // `next` starts at the stream's end once the consumer is in place, which the broker does
          // not tell: publish one at a time until one arrives, then take the rest in order.
          let published = 0
          let first: AmqpChannel.Delivery | undefined
          while (first === undefined) {
            yield* publish(published++, 1)
            first = Option.getOrUndefined(yield* Effect.timeoutOption(Queue.take(inbox), 500))
          }
          yield* first.ack()
          const start = seen(first).offset as number
          const before = [seen(first), ...yield* takeAcked(inbox, start + 1, published - start - 1)]
          assert.deepStrictEqual(before, expected(start, published - start))

          yield* reconnect(publish(published, 3))
          assert.deepStrictEqual(yield* takeAcked(inbox, published, 3), expected(published, 3))
        }),
        names.own(broker)
      )
    }), 60_000)

  it.live("deliver again, once, what arrived on the lost link but was never taken", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const { channel, publish, reconnect, stream } = yield* setUp("untaken")
          yield* publish(0, 10)
          // The application takes three, then stops taking until the link is back: the other
          // seven wait in the consumer's buffer when the link goes.
          const got: Array<{ readonly body: string; readonly offset: unknown }> = []
          const holding = yield* Deferred.make<void>()
          const resume = yield* Deferred.make<void>()
          const consumer = yield* channel.consume(stream, { arguments: { "x-stream-offset": "first" } }).pipe(
            Stream.runForEach((delivery) =>
              Effect.gen(function*() {
                got.push(seen(delivery))
                yield* delivery.ack()
                if (got.length === 3) {
                  yield* Deferred.succeed(holding, undefined)
                  yield* Deferred.await(resume)
                }
              })
            ),
            Effect.forkScoped
          )
          yield* Deferred.await(holding)
          // The other seven reached the buffer (the prefetch is 100).
          yield* Support.realDelay(500)
          yield* reconnect()
          yield* Deferred.succeed(resume, undefined)
          yield* publish(10, 1)
          yield* Effect.gen(function*() {
            while (got.length < 11) yield* Support.realDelay(20)
          }).pipe(Effect.timeout("10 seconds"))
          // Nothing more comes: a duplicate would arrive within this time.
          yield* Support.realDelay(500)
          yield* Fiber.interrupt(consumer)
          assert.deepStrictEqual(got, expected(0, 11))
        }),
        names.own(broker)
      )
    }), 60_000)

  it.live("make their channel refuse a get of the stream, before and after a reconnect", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          // Declared by the observer's connection: the client knows it as a stream by consuming it.
          const { channel, publish, reconnect, stream } = yield* setUp("get")
          yield* publish(0, 3)
          const inbox = yield* Support.consumeInto(channel, stream, { arguments: { "x-stream-offset": "first" } })
          assert.deepStrictEqual(bodies(yield* takeAcked(inbox, 0, 3)), bodies(expected(0, 3)))
          const refused = Effect.map(Effect.flip(channel.get(stream)), (error) =>
            error instanceof AmqpStreamRefused ? [error.operation, error.queue] : error)
          assert.deepStrictEqual(yield* refused, ["basic.get", stream])

          yield* reconnect()
          assert.deepStrictEqual(yield* refused, ["basic.get", stream])
          // The link is whole: the consumer goes on.
          yield* publish(3, 1)
          assert.deepStrictEqual(bodies(yield* takeAcked(inbox, 3, 1)), bodies(expected(3, 1)))
        }),
        names.own(broker)
      )
    }), 60_000)
})
