/**
 * A consumer whose `basic.cancel` is not answered within `closeTimeout` stays registered until the
 * cancel-ok comes: the deliveries the broker sent before that, arriving late, go back to the queue
 * (rejected with requeue) instead of lying unacknowledged on the channel for its whole life, and
 * its tag stays taken meanwhile (the broker still holds the consumer).
 */
import { AmqpChannel, AmqpConsumerTagInUse } from "@effect-amqp/client"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import { onSharedBroker, poll, unique } from "../support/channelKit.ts"

const count = 200

describe("deliveries after a cancel that timed out", () => {
  it.live("go back to the queue, and the consumer's tag stays taken until the cancel-ok", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
        const admin = yield* AmqpChannel.make(yield* connect())
        const queue = unique("late-deliveries")
        yield* admin.confirmSelect
        yield* admin.queueDeclare(queue)
        const ready = Effect.map(admin.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount)

        const channel = yield* AmqpChannel.make(yield* connect({ port: proxy.port, closeTimeout: 500 }))
        const consumer = yield* Effect.forkChild(
          channel.consume(queue, { consumerTag: "late" }).pipe(Stream.runDrain),
          { startImmediately: true }
        )
        yield* Effect.sleep(300)
        // From now on what the broker sends is held back: the deliveries, then the cancel-ok.
        yield* proxy.pause("serverToClient")
        for (let i = 0; i < count; i++) yield* admin.publish("", queue, Buffer.from(`m${i}`))
        yield* Fiber.interrupt(consumer)
        const reused = yield* channel.consume(queue, { consumerTag: "late" }).pipe(
          Stream.runDrain,
          Effect.timeout(2_000),
          Effect.flip
        )
        yield* proxy.resume("serverToClient")

        assert.strictEqual(yield* poll(ready, (n) => n === count, 5_000), count)
        assert.instanceOf(reused, AmqpConsumerTagInUse)
        assert.isTrue(yield* channel.isOpen)
        yield* admin.queueDelete(queue)
      })
    ))
})
