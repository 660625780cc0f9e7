/**
 * A client that gives up: every failed attempt is reported, and what waits on its channels (an
 * operation, a consumer stream, `closed`) ends with the cause. While the link is down, an
 * operation waits `linkTimeout` once, and a consumer stream waiting to start can be interrupted at
 * once. A private node for the file behind a fault proxy; real clock.
 */
import { AmqpClient, AmqpClosedError, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Queue, Schedule, Stream } from "effect"
import * as Support from "../recovery/support.ts"

const upTo = (times: number) =>
  Schedule.spaced("100 millis").pipe(Schedule.upTo({ times }), Schedule.setInputType<AmqpConnectionError>())

/** How `effect` ended, if it did within 3 s. */
const within = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.map(Effect.timeoutOption(Effect.exit(effect), "3 seconds"), Option.getOrUndefined)

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("AmqpClient giving up", (it) => {
  it.effect("reports every failed attempt in order, and GaveUp with the last one's error", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "attempts"), { reconnect: upTo(2) })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        const gaveUp = yield* log.next("GaveUp", disconnected.index)
        const failed = log.all("AttemptFailed", disconnected.index)
        const connecting = log.all("Connecting", disconnected.index)
        assert.deepStrictEqual(failed.map((e) => [e.port, e.attempt]), connecting.map((e) => [e.port, e.attempt]))
        assert.deepStrictEqual(failed.map((e) => e.attempt), [2, 3, 4])
        assert.deepStrictEqual(failed.map((e) => e.error.reason._tag), [
          "ConnectFailed",
          "ConnectFailed",
          "ConnectFailed"
        ])
        assert.strictEqual(failed[2]!.error, gaveUp.event.cause)
        const declare = yield* Effect.flip(channel.queueDeclare("", { exclusive: true }))
        assert.deepStrictEqual(declare, new AmqpClosedError({ what: "channel", cause: gaveUp.event.cause }))
        yield* proxy.acceptNew
      })
    ))

  it.effect("once it gives up, a waiting operation, a consumer stream and channel.closed end with the cause", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "gave-up-waiting"), {
          reconnect: upTo(2),
          linkTimeout: 20_000
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const queue = (yield* channel.queueDeclare("", { exclusive: true })).queue
        const inbox = yield* Support.consumeInto(channel, queue)
        // The consumer is running on the broker before the link goes.
        yield* Support.roundTrip(channel, inbox, queue, "", queue, "before")
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        // Made while the link is down: it waits for the next link, which never comes.
        const pending = yield* Effect.forkScoped(Effect.flip(channel.queueDeclare(queue, { passive: true })))
        const gaveUp = yield* log.next("GaveUp", disconnected.index)
        const expected = new AmqpClosedError({ what: "channel", cause: gaveUp.event.cause })
        const ended = {
          pendingOperation: yield* within(Fiber.join(pending)),
          consumerStream: yield* within(Effect.flip(Queue.take(inbox))),
          channelClosed: yield* within(channel.closed),
          isOpen: yield* channel.isOpen
        }
        assert.deepStrictEqual(ended, {
          pendingOperation: Exit.succeed(expected),
          consumerStream: Exit.succeed(expected),
          channelClosed: Exit.succeed(expected),
          isOpen: false
        })
        yield* proxy.acceptNew
      })
    ))

  it.effect("an operation made while the link is down fails after linkTimeout, not four times it", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "link-timeout"), {
          reconnect: Schedule.spaced("200 millis").pipe(Schedule.setInputType<AmqpConnectionError>()),
          linkTimeout: 1_000
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        yield* log.next("Disconnected")
        const started = Date.now()
        const error = yield* Effect.flip(channel.queueDeclare("", { exclusive: true }))
        const elapsed = Date.now() - started
        assert.instanceOf(error, AmqpClosedError)
        const reason = error.cause?._tag === "AmqpConnectionError" ? error.cause.reason._tag : undefined
        assert.deepStrictEqual([error.what, reason], ["connection", "ConnectFailed"])
        assert.isBelow(elapsed, 2_000)
        yield* proxy.acceptNew
      })
    ))

  it.effect("a consumer stream that is waiting for the link to start can be interrupted at once", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "interrupt-waiting"), {
          reconnect: Schedule.spaced("200 millis").pipe(Schedule.setInputType<AmqpConnectionError>()),
          linkTimeout: 10_000
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const queue = (yield* channel.queueDeclare("", { exclusive: true })).queue
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        yield* log.next("Disconnected")
        const consumer = yield* Effect.forkScoped(Stream.runDrain(channel.consume(queue)), { startImmediately: true })
        yield* Effect.sleep(200)
        const started = Date.now()
        yield* Fiber.interrupt(consumer)
        const elapsed = Date.now() - started
        assert.isBelow(elapsed, 1_000)
        yield* proxy.acceptNew
        yield* log.next("Recovered")
      })
    ))
})
