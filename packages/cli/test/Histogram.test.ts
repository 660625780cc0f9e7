import { assert, describe, it } from "@effect/vitest"
import { Histogram } from "../src/Histogram.ts"

describe("Histogram", () => {
  it("has no quantiles and no maximum while empty", () => {
    const histogram = new Histogram()
    assert.strictEqual(histogram.count, 0)
    assert.isUndefined(histogram.quantile(0.5))
    assert.isUndefined(histogram.max)
  })

  it("finds quantiles of 0.01 ms to 100 ms within 1%", () => {
    const histogram = new Histogram()
    for (let i = 1; i <= 10_000; i++) histogram.record(i / 100)
    assert.strictEqual(histogram.count, 10_000)
    for (const [q, expected] of [[0.5, 50], [0.95, 95], [0.99, 99], [0.001, 0.1]] as const) {
      const value = histogram.quantile(q)!
      assert.isAtMost(Math.abs(value - expected) / expected, 0.01, `p${q * 100}: ${value}`)
    }
    assert.strictEqual(histogram.max, 100)
  })

  it("keeps quantiles in order and within the smallest and largest sample", () => {
    const histogram = new Histogram()
    for (const millis of [3.0001, 3.0002, 3.0003, 250]) histogram.record(millis)
    const [p50, p95, p99] = [0.5, 0.95, 0.99].map((q) => histogram.quantile(q)!)
    assert.isAtLeast(p50!, 3.0001)
    assert.isAtMost(p50!, p95!)
    assert.isAtMost(p95!, p99!)
    assert.isAtMost(p99!, histogram.max!)
    assert.strictEqual(histogram.quantile(1), 250)
  })

  it("counts negative and huge samples at the edges, and forgets everything on reset", () => {
    const histogram = new Histogram()
    histogram.record(-5)
    histogram.record(1e12)
    assert.isAtMost(histogram.quantile(0)!, 0.002)
    assert.strictEqual(histogram.max, 1e12)
    histogram.reset()
    assert.strictEqual(histogram.count, 0)
    assert.isUndefined(histogram.quantile(0.99))
  })
})
