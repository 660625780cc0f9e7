/**
 * Orderings that broke the channel's bookkeeping once: a method whose caller gave up before the
 * reply, a return among publishes that route differently under one routing key, publishers woken
 * by a confirm that publish again at once, update-secret calls that overlap, and an ack or a
 * publish on a channel whose `channel.close` is already on its way (once answered by the broker
 * with 504 on channel 0, which closed the whole connection).
 */
import { AmqpChannel, AmqpClosedError, AmqpPublishError, AmqpStaleDelivery, Returned } from "@effect-amqp/client"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Redacted, Scope } from "effect"
import { onSharedBroker, poll, unique, utf8 } from "../support/channelKit.ts"

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

  it.live("returns the unroutable publish of two with the same body that differ in their headers", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const channel = yield* AmqpChannel.make(yield* connect())
        const exchange = unique("headers-same-body")
        const queue = unique("headers-same-body-queue")
        yield* channel.exchangeDeclare(exchange, "headers", { autoDelete: true })
        yield* channel.queueDeclare(queue, { durable: true })
        yield* channel.queueBind(queue, exchange, "", { "x-match": "all", route: "yes" })
        yield* channel.confirmSelect
        for (let round = 0; round < 20; round++) {
          // Persistent to a durable queue, the routed one is confirmed after the return of the other.
          const routed = yield* channel.publishAsync(exchange, "", utf8("same"), {
            mandatory: true,
            properties: { deliveryMode: 2, headers: { route: "yes", round } }
          })
          const unroutable = yield* channel.publishAsync(exchange, "", utf8("same"), {
            mandatory: true,
            properties: { deliveryMode: 2, headers: { route: "no", round } }
          })
          assert.isTrue(Exit.isSuccess(yield* Effect.exit(routed)), `round ${round}: the routed publish`)
          const returned = yield* Effect.flip(unroutable)
          assert.deepStrictEqual(
            returned,
            new AmqpPublishError({
              reason: new Returned({ replyCode: 312, replyText: "NO_ROUTE", exchange, routingKey: "" })
            })
          )
        }
        assert.strictEqual(yield* channel.queueDelete(queue), 20)
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

  it.live("refuses an ack and a publish once channel.close is on its way, and the connection lives on", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
        const connection = yield* connect({ port: proxy.port })
        const other = yield* AmqpChannel.make(connection)
        yield* other.confirmSelect
        const queue = unique("q-closing")
        yield* other.queueDeclare(queue)
        yield* other.publish("", queue, utf8("x"))
        const scope = yield* Scope.make()
        const closing = yield* Scope.provide(AmqpChannel.make(connection), scope)
        const got = Option.getOrThrow(yield* closing.get(queue))

        // The broker's close-ok comes 400 ms late: the channel is closing all that time.
        yield* proxy.setLatency(400, "serverToClient")
        const closer = yield* Effect.forkChild(Scope.close(scope, Exit.void), { startImmediately: true })
        yield* Effect.sleep("100 millis")
        const ack = yield* Effect.flip(got.ack())
        assert.deepStrictEqual(ack, new AmqpStaleDelivery({ deliveryTag: got.deliveryTag, operation: "ack" }))
        const publish = yield* Effect.flip(closing.publish("", queue, utf8("late")))
        assert.instanceOf(publish, AmqpClosedError)
        yield* Fiber.join(closer)
        yield* proxy.setLatency(0, "serverToClient")

        // The unacked message went back to the queue; the connection and its other channel carry on.
        const back = yield* poll(other.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === 1)
        assert.deepStrictEqual(back, { queue, messageCount: 1, consumerCount: 0 })
        assert.strictEqual(yield* other.queueDelete(queue), 1)
        assert.isTrue(yield* connection.isOpen)
      })
    ))
})
