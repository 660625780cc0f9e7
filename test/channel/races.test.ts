/**
 * Orderings that broke the channel's bookkeeping once: a method whose caller gave up before the
 * reply, a return among publishes that route differently under one routing key, publishers woken
 * by a confirm that publish again at once, and update-secret calls that overlap.
 */
import { AmqpChannel, AmqpPublishError, Returned } from "@effect-amqp/client"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Redacted } from "effect"
import { onSharedBroker, unique, utf8 } from "../support/channelKit.ts"

describe("a channel under awkward orderings", () => {
  it.live("gives the next method its own reply after a caller was interrupted while waiting", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const channel = yield* AmqpChannel.make(yield* connect())
        const first = unique("interrupted")
        const second = unique("next")
        const waiting = yield* Effect.forkChild(channel.queueDeclare(first, { autoDelete: true }), {
          startImmediately: true
        })
        yield* Fiber.interrupt(waiting)
        const ok = yield* channel.queueDeclare(second, { autoDelete: true })
        assert.strictEqual(ok.queue, second)
        yield* channel.queueDelete(first)
        yield* channel.queueDelete(second)
      })
    ))

  it.live("returns the unroutable publish, not an earlier routed one with the same routing key", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const channel = yield* AmqpChannel.make(yield* connect())
        const exchange = unique("headers")
        const queue = unique("headers-queue")
        yield* channel.exchangeDeclare(exchange, "headers", { autoDelete: true })
        yield* channel.queueDeclare(queue, { durable: true })
        yield* channel.queueBind(queue, exchange, "", { "x-match": "all", route: "yes" })
        yield* channel.confirmSelect
        for (let round = 0; round < 10; round++) {
          const routed = yield* channel.publishAsync(exchange, "", utf8("routed"), {
            mandatory: true,
            properties: { deliveryMode: 2, headers: { route: "yes" } }
          })
          const unroutable = yield* channel.publishAsync(exchange, "", utf8("unroutable"), {
            mandatory: true,
            properties: { headers: { route: "no" } }
          })
          assert.isTrue(Exit.isSuccess(yield* Effect.exit(routed)), `round ${round}: the routed publish`)
          const returned = yield* Effect.flip(unroutable)
          assert.instanceOf(returned, AmqpPublishError)
          assert.instanceOf(returned.reason, Returned)
          assert.strictEqual((returned.reason as Returned).replyCode, 312)
        }
        assert.strictEqual(yield* channel.queueDelete(queue), 10)
      })
    ))

  it.live("keeps the whole confirm window after publishers woken by confirms publish again", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
        const connection = yield* connect({ port: proxy.port })
        const channel = yield* AmqpChannel.make(connection, { maxOutstandingConfirms: 5 })
        yield* channel.confirmSelect
        const { queue } = yield* channel.queueDeclare("", { exclusive: true })
        for (let i = 0; i < 20; i++) yield* channel.publish("", queue, utf8(`m${i}`))
        // With the broker's confirms held back, five publishes must still all be admitted: none
        // may wait for a slot that a settled publish kept.
        yield* proxy.pause("serverToClient")
        const written = yield* Effect.forEach(
          Array.from({ length: 5 }, (_, i) => i),
          (i) => channel.publishAsync("", queue, utf8(`w${i}`)),
          { concurrency: "unbounded" }
        ).pipe(Effect.timeoutOption("2 seconds"))
        yield* proxy.resume("serverToClient")
        assert.strictEqual(written._tag, "Some")
        if (written._tag === "Some") yield* Effect.forEach(written.value, (confirm) => confirm, { discard: true })
        assert.strictEqual((yield* channel.queueDeclare(queue, { passive: true })).messageCount, 25)
      })
    ))

  it.live("answers overlapping update-secret calls each, and none is left waiting", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const both = yield* Effect.all(
          [
            connection.updateSecret(Redacted.make("guest"), "first"),
            connection.updateSecret(Redacted.make("guest"), "second")
          ],
          { concurrency: "unbounded" }
        ).pipe(Effect.timeoutOption("3 seconds"))
        assert.strictEqual(both._tag, "Some")
      })
    ))
})
