/**
 * The waits `ConfirmTracker` hands out: each ends with its own publish's outcome however many
 * fibers run it and whenever they do, an interrupted one is never resumed nor kept, a fiber woken
 * by a confirm may publish, fail the channel or wait again before the others are woken, and a
 * model of unsettled tags agrees with the tracker over random acks and nacks.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as fc from "fast-check"
import { AmqpChannelError, AmqpPublishError, Nacked, Returned, Unconfirmed } from "../src/AmqpError.ts"
import { ConfirmTracker, PendingConfirm } from "../src/internal/confirms.ts"

const channelClosed = new AmqpChannelError({
  channel: 1,
  replyCode: 406,
  replyText: "PRECONDITION_FAILED",
  classId: 0,
  methodId: 0,
  method: undefined
})

const pending = (mandatory = false, body?: Uint8Array) =>
  new PendingConfirm("x", "k", mandatory, body, mandatory ? {} : undefined)

/** What a wait ended with: "acked", a nacked tag, or the tag of the reason's kind. */
const outcomeOf = (exit: Exit.Exit<void, AmqpPublishError>): string => {
  if (Exit.isSuccess(exit)) return "acked"
  const error = exit.cause.reasons[0]
  if (error?._tag !== "Fail") return "defect"
  const reason = error.error.reason
  return reason instanceof Nacked ? `nacked ${reason.deliveryTag}` : reason._tag
}

describe("ConfirmTracker", () => {
  it.effect("wakes every fiber waiting on one publish, before and after its confirm, with its outcome", () =>
    Effect.gen(function*() {
      const tracker = new ConfirmTracker()
      const first = pending()
      const second = pending()
      tracker.add(first)
      tracker.add(second)
      const waiters = yield* Effect.forEach(
        [first, first, first, second, second],
        (entry) => Effect.forkChild(Effect.exit(entry.wait))
      )
      yield* Effect.yieldNow
      for (const fiber of waiters) assert.isUndefined(fiber.pollUnsafe(), "waiting before any confirm")

      tracker.nack(2, false)
      tracker.ack(1, false)
      const outcomes = yield* Effect.forEach(waiters, (fiber) => Effect.map(Fiber.join(fiber), outcomeOf))
      assert.deepStrictEqual(outcomes, ["acked", "acked", "acked", "nacked 2", "nacked 2"])
      assert.strictEqual(outcomeOf(yield* Effect.exit(first.wait)), "acked", "run after the confirm")
      assert.strictEqual(outcomeOf(yield* Effect.exit(second.wait)), "nacked 2", "run after the confirm")
      assert.strictEqual(tracker.outstanding, 0)
    }))

  it.effect("leaves an interrupted waiter alone when the confirm comes, and wakes the others", () =>
    Effect.gen(function*() {
      const tracker = new ConfirmTracker()
      const entry = pending()
      tracker.add(entry)
      const interrupted = yield* Effect.forkChild(entry.wait)
      const kept = yield* Effect.forkChild(Effect.exit(entry.wait))
      yield* Effect.yieldNow
      yield* Fiber.interrupt(interrupted)
      tracker.ack(1, false)
      assert.strictEqual(outcomeOf(yield* Fiber.join(kept)), "acked")
      const exit = yield* Fiber.await(interrupted)
      assert.isTrue(Exit.hasInterrupts(exit), "still interrupted, not resumed by the ack")
    }))

  it.effect("keeps no fiber that stopped waiting: a wait polled a thousand times holds nothing", () =>
    Effect.gen(function*() {
      const tracker = new ConfirmTracker()
      const entry = pending()
      tracker.add(entry)
      for (let i = 0; i < 1000; i++) {
        const fiber = yield* Effect.forkChild(entry.wait)
        yield* Effect.yieldNow
        yield* Fiber.interrupt(fiber)
        assert.isTrue(Exit.isFailure(yield* Effect.exit(Effect.timeout(entry.wait, "0 millis"))), "not confirmed yet")
      }
      assert.strictEqual(entry.waiterCount, 0)

      const kept = yield* Effect.forEach([1, 2, 3], () => Effect.forkChild(Effect.exit(entry.wait)))
      const dropped = yield* Effect.forkChild(entry.wait)
      yield* Effect.yieldNow
      assert.strictEqual(entry.waiterCount, 4)
      yield* Fiber.interrupt(dropped)
      assert.strictEqual(entry.waiterCount, 3)
      tracker.ack(1, false)
      const outcomes = yield* Effect.forEach(kept, (fiber) => Effect.map(Fiber.join(fiber), outcomeOf))
      assert.deepStrictEqual(outcomes, ["acked", "acked", "acked"])
      assert.strictEqual(entry.waiterCount, 0)
    }))

  it.effect("lets a fiber woken by a multiple ack publish again and fail the channel before the rest wake", () =>
    Effect.gen(function*() {
      const tracker = new ConfirmTracker()
      let freed = 0
      tracker.onSettled = (count) => {
        freed += count
      }
      const entries = Array.from({ length: 5 }, () => pending())
      for (const entry of entries) tracker.add(entry)
      const seen: Array<string> = []
      const first = yield* Effect.forkChild(Effect.gen(function*() {
        seen.push(`1 ${outcomeOf(yield* Effect.exit(entries[0]!.wait))}`)
        const again = pending()
        tracker.add(again)
        tracker.failAll(channelClosed)
        seen.push(`again ${outcomeOf(yield* Effect.exit(again.wait))}`)
        seen.push(`3 ${outcomeOf(yield* Effect.exit(entries[2]!.wait))}`)
      }))
      const others = yield* Effect.forEach(entries.slice(1), (entry) => Effect.forkChild(Effect.exit(entry.wait)))
      yield* Effect.yieldNow

      tracker.ack(3, true)
      yield* Fiber.join(first)
      assert.deepStrictEqual(seen, ["1 acked", "again Unconfirmed", "3 acked"])
      const outcomes = yield* Effect.forEach(others, (fiber) => Effect.map(Fiber.join(fiber), outcomeOf))
      assert.deepStrictEqual(outcomes, ["acked", "acked", "Unconfirmed", "Unconfirmed"])
      assert.strictEqual(tracker.outstanding, 0)
      assert.strictEqual(freed, 6, "every slot freed once")
    }))

  it.effect("gives a fiber woken by a multiple nack the outcomes of the later entries it settles", () =>
    Effect.gen(function*() {
      const tracker = new ConfirmTracker()
      const entries = Array.from({ length: 3 }, () => pending())
      for (const entry of entries) tracker.add(entry)
      const inTurn = yield* Effect.forkChild(
        Effect.forEach(entries, (entry) => Effect.map(Effect.exit(entry.wait), outcomeOf))
      )
      yield* Effect.yieldNow
      tracker.nack(3, true)
      assert.deepStrictEqual(yield* Fiber.join(inTurn), ["nacked 1", "nacked 2", "nacked 3"])
    }))

  it.effect("records every outcome of an ack before waking anyone: a woken publisher runs on without waiting", () =>
    Effect.gen(function*() {
      const tracker = new ConfirmTracker()
      const entries = Array.from({ length: 3 }, () => pending())
      for (const entry of entries) tracker.add(entry)
      const order: Array<string> = []
      const publisher = yield* Effect.forkChild(Effect.forEach(entries, (entry, i) =>
        Effect.map(entry.wait, () => {
          order.push(`publisher ${i + 1}`)
        })))
      const other = yield* Effect.forkChild(Effect.map(entries[1]!.wait, () => {
        order.push("other 2")
      }))
      yield* Effect.yieldNow

      tracker.ack(3, true)
      assert.deepStrictEqual(order, ["publisher 1", "publisher 2", "publisher 3", "other 2"])
      yield* Fiber.join(publisher)
      yield* Fiber.join(other)
    }))

  it.effect("ends a returned mandatory publish as returned, and every wait as unconfirmed when the channel ends", () =>
    Effect.gen(function*() {
      const tracker = new ConfirmTracker()
      const body = new Uint8Array([1, 2, 3])
      const returned = pending(true, body)
      const lost = [pending(), pending()]
      tracker.add(returned)
      for (const entry of lost) tracker.add(entry)
      const waiting = yield* Effect.forkChild(Effect.exit(lost[1]!.wait))
      yield* Effect.yieldNow

      const reason = new Returned({ replyCode: 312, replyText: "NO_ROUTE", exchange: "x", routingKey: "k" })
      assert.isTrue(tracker.returned(reason, body, {}))
      tracker.ack(1, false)
      tracker.failAll(channelClosed)
      assert.strictEqual(outcomeOf(yield* Effect.exit(returned.wait)), "Returned")
      assert.strictEqual(outcomeOf(yield* Fiber.join(waiting)), "Unconfirmed")
      const first = yield* Effect.flip(lost[0]!.wait)
      assert.instanceOf(first.reason, Unconfirmed)
      assert.strictEqual(tracker.outstanding, 0)
    }))

  it("settles what a model of unsettled tags says, over random acks and nacks", () => {
    const step = fc.record({ tag: fc.integer({ min: 0, max: 60 }), multiple: fc.boolean(), ack: fc.boolean() })
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 50 }), fc.array(step, { minLength: 1, maxLength: 40 }), (count, steps) => {
        const tracker = new ConfirmTracker()
        const entries = Array.from({ length: count }, () => pending())
        const outcomes = new Map<number, string>()
        entries.forEach((entry, i) => {
          tracker.add(entry)
          Effect.runFork(Effect.exit(entry.wait)).addObserver((exit) => {
            if (Exit.isSuccess(exit)) outcomes.set(i + 1, outcomeOf(exit.value))
          })
        })
        const model = new Map<number, string>()
        for (const { ack, multiple, tag } of steps) {
          if (!tracker.names(tag, multiple)) continue
          const last = tag === 0 ? count : tag
          for (let t = multiple ? 1 : last; t <= last; t++) {
            if (!model.has(t)) model.set(t, ack ? "acked" : `nacked ${t}`)
          }
          if (ack) tracker.ack(tag, multiple)
          else tracker.nack(tag, multiple)
        }
        assert.deepStrictEqual(outcomes, model)
        assert.strictEqual(tracker.outstanding, count - model.size)
      }),
      { numRuns: 200 }
    )
  })
})
