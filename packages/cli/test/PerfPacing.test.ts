/**
 * `perf --rate` holds the rate it is given, ends on time whatever the rate, and reports the rate
 * of messages over the time publishing took, the last message's turn included.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli, deleteAtEnd, sharedUrl } from "./support.ts"

const perfJson = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const result = yield* cli(["perf", "--url", sharedUrl, "--json", ...args])
    assert.strictEqual(result.code, 0, result.stdout + result.stderr)
    const summary = JSON.parse(result.stdout)
    yield* deleteAtEnd(summary.queue)
    return summary
  })

describe("effect-amqp perf --rate", () => {
  it.live("ends at --duration even when the next message is due later", () =>
    Effect.gen(function*() {
      // One publish at 0 s; the next would be due at 5 s, after the run's end at 1 s.
      const summary = yield* perfJson(["--rate", "0.2", "--duration", "1"])
      assert.strictEqual(summary.published, 1)
      assert.isAtMost(summary.seconds, 1.5)
      assert.approximately(summary.rates.published, 1, 0.1)
    }))

  it.live("reports the rate it held over a duration, for publishing and consuming", () =>
    Effect.gen(function*() {
      // Due at 0, 0.5 ... 2.5 s: six messages in three seconds.
      const summary = yield* perfJson(["--rate", "2", "--duration", "3"])
      assert.strictEqual(summary.published, 6)
      assert.strictEqual(summary.consumed, 6)
      assert.approximately(summary.rates.published, 2, 0.1)
      assert.approximately(summary.rates.consumed, 2, 0.1)
    }))

  it.live("gives every producer its whole share of a duration, however busy the process", () =>
    Effect.gen(function*() {
      // Each producer: due at 0, 2 ... 3998 ms from the run's start, 2000 messages, a little late if busy.
      const summary = yield* perfJson(["--rate", "500", "--producers", "3", "--duration", "4"])
      assert.strictEqual(summary.published, 6000)
      assert.strictEqual(summary.consumed, 6000)
    }))

  it.live("reports the rate it held over a count, for every producer together", () =>
    Effect.gen(function*() {
      // Each producer: 0, 0.5 and 1 s, its turn over at 1.5 s; two of them make 4 msg/s.
      const summary = yield* perfJson(["--rate", "2", "--count", "3", "--producers", "2", "--confirm", "10"])
      assert.strictEqual(summary.published, 6)
      assert.strictEqual(summary.confirmed, 6)
      assert.approximately(summary.rates.published, 4, 0.2)
      assert.approximately(summary.rates.confirmed, 4, 0.2)
    }))
})
