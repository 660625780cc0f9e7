/**
 * A `get` whose caller is interrupted after the `basic.get` went out, before its get-ok came: the
 * broker hands the message to the channel all the same, unacknowledged. The channel gives it back
 * (reject with requeue) as its get-ok arrives, so that it does not stay invisible to every
 * consumer for as long as the channel lives; the queue has all its messages again while the
 * channel is still open.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option } from "effect"
import { onQueue, readyCountOnceAt } from "../support/channelKit.ts"

const MESSAGES = 20
const GIVEN_UP = 10

describe("a get given up before its reply", () => {
  it.live("gives the message back to the queue while the channel stays open", () =>
    Effect.gen(function*() {
      const outcome = yield* onQueue("get-interrupted", ({ admin, channel, queue }) =>
        Effect.gen(function*() {
          for (let i = 0; i < MESSAGES; i++) yield* admin.publish("", queue, Buffer.from(`m${i}`))
          yield* readyCountOnceAt(admin, queue, MESSAGES)
          const exits: Array<Exit.Exit<unknown, unknown>> = []
          for (let i = 0; i < GIVEN_UP; i++) {
            // Sent as it starts, interrupted before the get-ok can have come.
            const get = yield* Effect.forkChild(channel.get(queue), { startImmediately: true })
            yield* Fiber.interrupt(get)
            exits.push(yield* Fiber.await(get))
            // The channel's next method waits for the get-ok still owed, so each has come by now.
            yield* channel.queueDeclare(queue, { passive: true })
          }
          // The rejects went out before this declare's reply came back.
          const stored = yield* readyCountOnceAt(admin, queue, MESSAGES)
          const open = yield* channel.isOpen
          // A get that is not given up still takes a message.
          const taken = yield* channel.get(queue)
          assert.isTrue(Option.isSome(taken))
          yield* admin.queueDelete(queue)
          return { exits, stored, open }
        }))
      assert.isTrue(outcome.exits.every((exit) => Exit.hasInterrupts(exit)))
      assert.strictEqual(outcome.stored, MESSAGES)
      assert.isTrue(outcome.open)
    }))
})
