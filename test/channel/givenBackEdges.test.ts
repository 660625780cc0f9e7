/**
 * What the channel hands back for an operation given up (the message of a `get`, the deliveries of
 * a consumer that started after its start was given up), at the edges:
 * - on a channel closed before the reply arrives, nothing follows our `channel.close` (RabbitMQ
 *   would close the whole connection with 504): the connection stays open, and the channel's close
 *   puts every message back in the queue;
 * - in tx mode the reject that hands a delivery back belongs to the transaction: a rollback sends
 *   it again, so the next commit puts the message back, and an `ack(0, multiple)` in between does
 *   not acknowledge it.
 */
import { AmqpChannel } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope, Stream } from "effect"
import { onSharedBroker, readyCountOnceAt, unique } from "../support/channelKit.ts"

type Via = "get" | "consume" | "consumeWith"

const givenUp = (channel: AmqpChannel.AmqpChannel, via: Via, queue: string) =>
  Effect.gen(function*() {
    const operation = via === "get"
      ? channel.get(queue)
      : via === "consume"
      ? Stream.runDrain(channel.consume(queue))
      : channel.consumeWith(queue, () => Effect.void)
    // Given up as soon as its method went out, before the reply.
    yield* Fiber.interrupt(yield* Effect.forkChild(operation, { startImmediately: true }))
  })

describe("handing back what a given-up operation received", () => {
  for (const via of ["get", "consume", "consumeWith"] as const) {
    it.live(`(${via}) sends nothing after channel.close when the channel closes first`, () =>
      Effect.gen(function*() {
        const queue = unique("given-back-edges")
        const messages = 20
        const outcome = yield* onSharedBroker((connect) =>
          Effect.gen(function*() {
            const connection = yield* connect()
            const admin = yield* AmqpChannel.make(connection)
            yield* admin.queueDeclare(queue)
            for (let i = 0; i < messages; i++) yield* admin.publish("", queue, Buffer.from(`m${i}`))
            yield* readyCountOnceAt(admin, queue, messages)
            for (let round = 0; round < 10; round++) {
              const scope = yield* Scope.make()
              const channel = yield* Scope.provide(AmqpChannel.make(connection), scope)
              yield* givenUp(channel, via, queue)
              // Our channel.close goes out before the reply to the given-up method comes.
              yield* Scope.close(scope, Exit.void)
            }
            const open = yield* connection.isOpen
            const ready = yield* readyCountOnceAt(admin, queue, messages)
            yield* admin.queueDelete(queue)
            return { open, ready }
          })
        )
        assert.deepStrictEqual(outcome, { open: true, ready: messages })
      }))
  }

  for (const via of ["get", "consume"] as const) {
    it.live(`(${via}) in tx mode: the rollback sends the hand-back again, the next commit requeues it`, () =>
      Effect.gen(function*() {
        const queue = unique("given-back-edges")
        const outcome = yield* onSharedBroker((connect) =>
          Effect.gen(function*() {
            const connection = yield* connect()
            const admin = yield* AmqpChannel.make(connection)
            yield* admin.queueDeclare(queue)
            yield* admin.publish("", queue, Buffer.from("only"))
            yield* readyCountOnceAt(admin, queue, 1)
            const channel = yield* AmqpChannel.make(connection)
            yield* channel.txSelect
            yield* givenUp(channel, via, queue)
            // The reply owed has come by the time this one does; its message is handed back.
            yield* channel.queueDeclare(queue, { passive: true })
            yield* channel.txRollback
            // It stays settled: acknowledging everything received acknowledges nothing.
            yield* channel.ack(0, true)
            yield* channel.txCommit
            const ready = yield* readyCountOnceAt(admin, queue, 1)
            const open = yield* channel.isOpen
            yield* admin.queueDelete(queue)
            return { ready, open }
          })
        )
        assert.deepStrictEqual(outcome, { ready: 1, open: true })
      }))
  }
})
