/**
 * While a `tx.commit` is on its way, RabbitMQ takes no other method on that channel: a publish or
 * an ack arriving before its commit-ok closes the whole connection with 504. The channel holds
 * them until the commit-ok and then sends them, in order, into the next transaction:
 * - publishes made while the commit is pending (concurrently, or after a commit whose caller gave
 *   up waiting) wait, and the next commit makes them visible;
 * - an ack made while the commit is pending is sent after it, and the next commit settles it.
 * `channel.close`, which the broker does take, is not held. A commit that the application's own
 * close of the channel cuts off (RabbitMQ then sends the close-ok and no commit-ok, though it may
 * have committed) fails as that channel closed by the application; the connection stays open.
 */
import { AmqpChannel, AmqpConnectionError, ClosedByApplication } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Scope } from "effect"
import { onQueue, readyCountOnceAt } from "../support/channelKit.ts"

describe("a pending tx.commit", () => {
  it.live("holds publishes made meanwhile, concurrently or after a commit given up, for the next transaction", () =>
    Effect.gen(function*() {
      const outcome = yield* onQueue(
        "tx-commit-pending",
        ({ connection, admin, channel, queue }) =>
          Effect.gen(function*() {
            yield* channel.txSelect
            const rounds = 10
            for (let i = 0; i < rounds; i++) {
              // A large publish makes the commit take a moment; the second publish races it.
              yield* channel.publish("", queue, new Uint8Array(64 * 1024))
              yield* Effect.all([channel.txCommit, channel.publish("", queue, Buffer.from("during"))], {
                concurrency: 2
              })
            }
            const afterRaces = yield* connection.isOpen
            // A commit given up as soon as it went out, then a publish: held until its commit-ok.
            const given = yield* Effect.forkChild(channel.txCommit, { startImmediately: true })
            yield* Fiber.interrupt(given)
            yield* channel.publish("", queue, Buffer.from("after"))
            yield* channel.txCommit
            const stored = yield* readyCountOnceAt(admin, queue, 2 * rounds + 1)
            const open = yield* connection.isOpen
            yield* admin.queueDelete(queue)
            return { afterRaces, stored, open, rounds }
          })
      )
      assert.isTrue(outcome.afterRaces)
      assert.isTrue(outcome.open)
      assert.strictEqual(outcome.stored, 2 * outcome.rounds + 1)
    }))

  it.live("sends an ack made meanwhile after it, into the next transaction", () =>
    Effect.gen(function*() {
      const outcome = yield* onQueue("tx-commit-pending", ({ connection, admin, channel, queue }) =>
        Effect.gen(function*() {
          yield* admin.publish("", queue, Buffer.from("to ack"))
          yield* readyCountOnceAt(admin, queue, 1)
          const got = Option.getOrThrow(yield* channel.get(queue))
          yield* channel.txSelect
          // Publishes make the commit take a moment; the ack is made while it is on its way.
          for (let i = 0; i < 20; i++) {
            yield* channel.publish("", queue, new Uint8Array(16 * 1024))
          }
          const commit = yield* Effect.forkChild(channel.txCommit, { startImmediately: true })
          yield* got.ack()
          yield* Fiber.join(commit)
          const openAfterCommit = yield* connection.isOpen
          // The ack belongs to the transaction after the commit: rolled back, the message is
          // unacked again; acked and committed, it is gone.
          yield* channel.txRollback
          yield* channel.ack(got.deliveryTag)
          yield* channel.txCommit
          const stored = yield* readyCountOnceAt(admin, queue, 20)
          yield* admin.queueDelete(queue)
          return { openAfterCommit, stored }
        }))
      assert.isTrue(outcome.openAfterCommit)
      assert.strictEqual(outcome.stored, 20)
    }))

  it.live("cut off by the application closing its channel, fails as that channel closed, not the connection", () =>
    Effect.gen(function*() {
      const outcome = yield* onQueue("tx-commit-cut-off", ({ connection, admin, queue }) =>
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          const channel = yield* Scope.provide(AmqpChannel.make(connection), scope)
          const id = channel.id
          yield* channel.txSelect
          yield* channel.publish("", queue, new Uint8Array(1024))
          const commit = yield* Effect.forkChild(Effect.flip(channel.txCommit), { startImmediately: true })
          yield* Scope.close(scope, Exit.void)
          const error = yield* Fiber.join(commit)
          const open = yield* connection.isOpen
          yield* admin.queueDelete(queue)
          return { error, id, open }
        }))
      assert.deepStrictEqual(
        outcome.error,
        new AmqpConnectionError({
          reason: new ClosedByApplication({ channel: outcome.id }),
          connectionName: outcome.error instanceof AmqpConnectionError ? outcome.error.connectionName : undefined
        })
      )
      assert.strictEqual(outcome.error.message, `channel ${outcome.id} closed by the application`)
      assert.isTrue(outcome.open)
    }))
})
