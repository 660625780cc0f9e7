import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli, deleteAtEnd, queueExists, type Result, sharedUrl } from "./support.ts"

/** The JSON summary on stdout, with the queue registered for deletion should the run not delete it. */
const summaryOf = (stdout: string) =>
  Effect.gen(function*() {
    const summary = JSON.parse(stdout)
    yield* deleteAtEnd(summary.queue)
    return summary
  })

const assertOrderedLatency = (latency: Record<string, number | null>) => {
  const { max, p50, p95, p99 } = latency
  assert.isNumber(p50)
  assert.isAtLeast(p50!, 0)
  assert.isAtMost(p50!, p95!)
  assert.isAtMost(p95!, p99!)
  assert.isAtMost(p99!, max!)
}

/** Checks a run that published with confirms and drained: counts, latency order, queue gone. */
const finishedRun = (
  result: Result,
  expected: { readonly queueType: string; readonly published: number; readonly consumed: number }
) =>
  Effect.gen(function*() {
    assert.strictEqual(result.code, 0, result.stdout + result.stderr)
    const summary = yield* summaryOf(result.stdout)
    assert.strictEqual(summary.queueType, expected.queueType)
    assert.strictEqual(summary.published, expected.published)
    assert.strictEqual(summary.confirmed, expected.published)
    assert.strictEqual(summary.consumed, expected.consumed)
    assertOrderedLatency(summary.latencyMs)
    assert.isFalse(yield* queueExists(summary.queue))
    return summary
  })

describe("effect-amqp perf", () => {
  it.live("a two-second run prints one JSON summary whose counts agree, and deletes its queue", () =>
    Effect.gen(function*() {
      const result = yield* cli([
        "perf",
        "--url",
        sharedUrl,
        "--duration",
        "2",
        "--producers",
        "1",
        "--consumers",
        "1",
        "--confirm",
        "100",
        "--json"
      ])
      assert.strictEqual(result.code, 0, result.stdout + result.stderr)
      assert.strictEqual(result.stdout.trimEnd().split("\n").length, 1)
      const summary = yield* summaryOf(result.stdout)
      assert.match(result.stderr, /^perf: 1 s, sent \d+ \(\d+ msg\/s\), confirmed \d+ .*latency p50 [\d.]+ ms p99/m)

      assert.isAbove(summary.published, 0)
      assert.strictEqual(summary.confirmed, summary.published)
      assert.strictEqual(summary.nacked, 0)
      assert.isAtLeast(summary.consumed, summary.published)
      assert.isAtLeast(summary.seconds, 2)
      for (const key of ["published", "confirmed", "consumed"]) assert.isAbove(summary.rates[key], 0, key)
      assert.strictEqual(summary.latencyMs.samples, summary.published)
      assertOrderedLatency(summary.latencyMs)
      assert.isAbove(summary.cpuMs.total, 0)
      assert.approximately(summary.cpuMs.total, summary.cpuMs.user + summary.cpuMs.system, 0.2)
      assert.isAbove(summary.peakRssBytes, 10 * 1024 * 1024)
      assert.deepStrictEqual(summary.errors, { count: 0, first: [] })
      assert.match(summary.queue, /^effect-amqp-perf-/)
      assert.isFalse(yield* queueExists(summary.queue))
    }))

  it.live("counts per producer on a quorum queue with multi-acks, and every consumer of a stream reads it all", () =>
    Effect.gen(function*() {
      const common = ["perf", "--url", sharedUrl, "--confirm", "50", "--json"]
      const [quorum, stream] = yield* Effect.all([
        cli([
          ...common,
          "--queue-type",
          "quorum",
          "--count",
          "500",
          "--producers",
          "2",
          "--consumers",
          "2",
          "--multi-ack",
          "10",
          "--prefetch",
          "100"
        ]),
        cli([...common, "--queue-type", "stream", "--count", "300", "--consumers", "2", "--rate", "1000"])
      ], { concurrency: "unbounded" })

      const q = yield* finishedRun(quorum, { queueType: "quorum", published: 1000, consumed: 1000 })
      assert.strictEqual(q.multiAck, 10)
      const s = yield* finishedRun(stream, { queueType: "stream", published: 300, consumed: 600 })
      // 300 messages at 1000 msg/s take about 0.3 s.
      assert.isAtLeast(s.seconds, 0.25)
    }))

  it.live("flags that do not fit together exit 2 before connecting", () =>
    Effect.forEach(
      [
        [["--duration", "1", "--count", "5"], "give --duration or --count, not both"],
        [["--producers", "0", "--consumers", "0"], "cannot both be 0"],
        [["--multi-ack", "10", "--prefetch", "5"], "--multi-ack (10) cannot exceed --prefetch (5)"],
        [["--queue-type", "stream", "--prefetch", "0"], "stream consumers need a prefetch"]
      ] as const,
      ([args, message]) =>
        Effect.map(cli(["perf", "--url", "amqp://guest:guest@127.0.0.1:1", ...args]), (result) => {
          assert.strictEqual(result.code, 2, result.stderr)
          assert.strictEqual(result.stdout, "")
          assert.include(result.stderr, `effect-amqp perf: `)
          assert.include(result.stderr, message)
        }),
      { concurrency: "unbounded", discard: true }
    ))
})
