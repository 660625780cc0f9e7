/**
 * Publisher confirms on a real broker: a window of outstanding confirms under load, nacks from a
 * full queue that rejects publishes, returns of unroutable mandatory publishes, and what waiting
 * publishes get when their channel or connection dies.
 */
import {
  AmqpChannel,
  AmqpChannelError,
  AmqpClosedError,
  AmqpConnectionError,
  AmqpPublishError,
  Nacked,
  type PublishFailure,
  Returned,
  ServerClosed,
  Unconfirmed
} from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import { confirmingChannel, onSharedBroker, poll, text, unique, utf8 } from "../support/channelKit.ts"

/**
 * How a publish ended: "acked", the reason of its `AmqpPublishError` (plain data, compared field
 * by field), or any other error.
 */
type Outcome = "acked" | PublishFailure | Exclude<AmqpChannel.ChannelError, AmqpPublishError>

const outcome = (publish: Effect.Effect<void, AmqpPublishError | AmqpChannel.ChannelError>): Effect.Effect<Outcome> =>
  publish.pipe(
    Effect.as<Outcome>("acked"),
    Effect.catch((error) => Effect.succeed<Outcome>(error instanceof AmqpPublishError ? error.reason : error))
  )

describe("publisher confirms", () => {
  it.live(
    "confirms 100,000 concurrent publishes through a window of 1,000",
    () =>
      onSharedBroker((connect) =>
        Effect.gen(function*() {
          const connection = yield* connect()
          const { channel, queue } = yield* confirmingChannel(connection, { maxOutstandingConfirms: 1000 })
          const total = 100_000
          const body = utf8("x")
          let acked = 0
          yield* Effect.forEach(
            Array.from({ length: total }, (_, i) => i),
            () => Effect.map(channel.publish("", queue, body), () => void acked++),
            { concurrency: 2000, discard: true }
          )
          assert.strictEqual(acked, total)
          // Every confirmed publish was routed: the queue holds exactly that many.
          assert.strictEqual((yield* channel.queueDeclare(queue, { passive: true })).messageCount, total)
          assert.strictEqual(yield* channel.queueDelete(queue), total)
        })
      ),
    90_000
  )

  it.live("fails exactly the publishes past x-max-length 10 with Nacked (x-overflow reject-publish)", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const channel = yield* AmqpChannel.make(yield* connect())
        yield* channel.confirmSelect
        const queue = (yield* channel.queueDeclare("", {
          exclusive: true,
          arguments: { "x-max-length": 10, "x-overflow": "reject-publish" }
        })).queue
        const outcomes: Array<Outcome> = []
        for (let i = 0; i < 15; i++) outcomes.push(yield* outcome(channel.publish("", queue, utf8(`m${i}`))))
        // Delivery tags count publishes on the channel from 1: the nacked ones are 11 to 15.
        assert.deepStrictEqual(outcomes, [
          ...Array.from({ length: 10 }, (): Outcome => "acked"),
          ...[11, 12, 13, 14, 15].map((deliveryTag) => new Nacked({ deliveryTag }))
        ])
        const passive = yield* channel.queueDeclare(queue, { passive: true })
        assert.strictEqual(passive.messageCount, 10)
        const first = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        assert.strictEqual(text(first.body), "m0")
        assert.isTrue(yield* channel.isOpen)
      })
    ))

  it.live("fails unroutable mandatory publishes with Returned and acks the routed ones among them", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, queue } = yield* confirmingChannel(yield* connect())
        const routed = unique("routed")
        yield* channel.queueBind(queue, "amq.direct", routed)
        const keys = Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? `nowhere-${i}` : routed))
        const outcomes = yield* Effect.forEach(
          keys,
          (key, i) => outcome(channel.publish("amq.direct", key, utf8(`m${i}`), { mandatory: true })),
          { concurrency: "unbounded" }
        )
        const expected = keys.map((key): Outcome =>
          key === routed
            ? "acked"
            : new Returned({ replyCode: 312, replyText: "NO_ROUTE", exchange: "amq.direct", routingKey: key })
        )
        assert.deepStrictEqual(outcomes, expected)
        const routedCount = keys.filter((key) => key === routed).length
        assert.strictEqual((yield* channel.queueDeclare(queue, { passive: true })).messageCount, routedCount)

        // Without mandatory the broker drops an unroutable message and acks it.
        yield* channel.publish("amq.direct", "nowhere", utf8("dropped"))
        // The default exchange returns a publish to a queue that does not exist.
        const missing = unique("q-missing")
        const failure = yield* outcome(channel.publish("", missing, utf8("x"), { mandatory: true }))
        assert.deepStrictEqual(
          failure,
          new Returned({ replyCode: 312, replyText: "NO_ROUTE", exchange: "", routingKey: missing })
        )
      })
    ))
})

describe("publishes waiting for confirms when the channel or connection dies", () => {
  it.live("a channel error fails the waiting publishes with Unconfirmed and later ones with AmqpClosedError", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const { channel, queue } = yield* confirmingChannel(connection)
        const missing = unique("ex-missing")
        const before = yield* Effect.forEach(
          Array.from({ length: 2000 }, (_, i) => i),
          (i) => outcome(channel.publish("", queue, utf8(`m${i}`))),
          { concurrency: "unbounded" }
        ).pipe(Effect.forkScoped({ startImmediately: true }))
        // Published after the 2000 on the same channel: the broker closes the channel with 404.
        const doomed = yield* outcome(channel.publish(missing, "", utf8("doomed"))).pipe(
          Effect.timeout("5 seconds")
        )
        const cause = new AmqpChannelError({
          channel: channel.id,
          replyCode: 404,
          replyText: `NOT_FOUND - no exchange '${missing}' in vhost '/'`,
          classId: 60,
          methodId: 40,
          method: "basic.publish"
        })
        assert.instanceOf(doomed, Unconfirmed)
        assert.instanceOf((doomed as Unconfirmed).cause, AmqpChannelError)
        assert.deepStrictEqual({ ...(doomed as Unconfirmed).cause }, { ...cause })

        // The earlier publishes end acked, or Unconfirmed with the same cause if their ack had
        // not come when the channel closed.
        const earlier = yield* Fiber.join(before).pipe(Effect.timeout("5 seconds"))
        for (const o of earlier) {
          if (o === "acked") continue
          assert.instanceOf(o, Unconfirmed)
          assert.strictEqual((o as Unconfirmed).cause, (doomed as Unconfirmed).cause)
        }
        // The broker routed every one of them before it met the bad publish.
        const observer = yield* AmqpChannel.make(connection)
        assert.strictEqual((yield* observer.queueDeclare(queue, { passive: true })).messageCount, 2000)

        const later = yield* outcome(channel.publish("", queue, utf8("too late")))
        assert.instanceOf(later, AmqpClosedError)
        assert.strictEqual((later as AmqpClosedError).what, "channel")
        assert.strictEqual((later as AmqpClosedError).cause, (doomed as Unconfirmed).cause)
      })
    ))

  it.live(
    "closing the connection from the broker ends every waiting publish at once, as Unconfirmed",
    () =>
      onSharedBroker((connect, broker) =>
        Effect.gen(function*() {
          const connection = yield* connect()
          const { channel, queue } = yield* confirmingChannel(connection, { maxOutstandingConfirms: 1000 })
          const body = utf8("x")
          let acked = 0
          // 2000 publishers, each publishing until its publish fails; the window lets 1000 wait
          // for confirms and the rest for a slot.
          const publisher = Effect.gen(function*() {
            while (true) {
              const result = yield* outcome(channel.publish("", queue, body))
              if (result !== "acked") return result
              acked++
            }
          })
          const publishers = yield* Effect.forEach(
            Array.from({ length: 2000 }, () => publisher),
            (p) => Effect.forkScoped(p, { startImmediately: true })
          )
          assert.isAtLeast(yield* poll(Effect.sync(() => acked), (n) => n >= 5000, 30_000), 5000)
          assert.strictEqual(yield* broker.closeConnection(connection.name!, "confirms test"), 1)
          const closedAt = yield* connection.closed
          const ended = Date.now()
          const errors = yield* Effect.forEach(publishers, Fiber.join).pipe(Effect.timeout("2 seconds"))
          assert.isBelow(Date.now() - ended, 2000)

          assert.instanceOf(closedAt.reason, ServerClosed)
          assert.deepStrictEqual(
            closedAt.reason,
            new ServerClosed({
              replyCode: 320,
              replyText: "CONNECTION_FORCED - confirms test",
              classId: 0,
              methodId: 0,
              method: undefined,
              duringHandshake: false
            })
          )
          let unconfirmed = 0
          let neverSent = 0
          for (const error of errors) {
            assert.instanceOf(error, Unconfirmed)
            assert.strictEqual((error as Unconfirmed).cause, closedAt)
            // Written and waiting for its confirm, or waiting for a window slot and never written.
            if ((error as Unconfirmed).sent) unconfirmed++
            else neverSent++
          }
          assert.strictEqual(unconfirmed + neverSent, 2000)
          assert.isAtLeast(unconfirmed, 1)
          assert.isAtMost(unconfirmed, 1000)
          assert.instanceOf(closedAt, AmqpConnectionError)
        })
      ),
    60_000
  )
})
