/**
 * A latency histogram for `effect-amqp perf`: constant memory however many samples it takes, and
 * quantiles within about 1% of the true value.
 *
 * Samples are milliseconds. Each lands in a logarithmic bucket (bucket `i` holds values around
 * `1.01^i` microseconds), so memory is a fixed array of about 2,100 counts that covers 1 µs to
 * more than 15 minutes; smaller values count as 1 µs, larger ones as the top bucket. The minimum
 * and maximum are kept exactly, and a quantile never lies outside them, so `p50 <= p95 <= p99 <= max`
 * always holds. This module does no I/O.
 *
 * @since 0.1.0
 */

const growth = 1.01
const logGrowth = Math.log(growth)
const bucketCount = 2100

/**
 * @since 0.1.0
 * @category models
 */
export class Histogram {
  private readonly counts = new Float64Array(bucketCount)
  private total = 0
  private minimum = Number.POSITIVE_INFINITY
  private maximum = Number.NEGATIVE_INFINITY

  /** Samples recorded since the last `reset`. */
  get count(): number {
    return this.total
  }

  /** The largest sample, or undefined when there is none. */
  get max(): number | undefined {
    return this.total === 0 ? undefined : this.maximum
  }

  /** Records one sample of `millis` milliseconds; a negative one (clocks apart) counts as 0. */
  record(millis: number): void {
    const value = Math.max(millis, 0)
    const micros = Math.max(value * 1000, 1)
    const index = Math.min(Math.floor(Math.log(micros) / logGrowth), bucketCount - 1)
    this.counts[index]! += 1
    this.total++
    if (value < this.minimum) this.minimum = value
    if (value > this.maximum) this.maximum = value
  }

  /**
   * The value below which a fraction `q` (0 to 1) of the samples lie, in milliseconds: the middle of
   * the bucket that holds it, kept within the exact minimum and maximum. Undefined when empty.
   */
  quantile(q: number): number | undefined {
    if (this.total === 0) return undefined
    const rank = Math.max(1, Math.ceil(Math.min(Math.max(q, 0), 1) * this.total))
    let seen = 0
    for (let index = 0; index < bucketCount; index++) {
      seen += this.counts[index]!
      if (seen >= rank) {
        const middle = growth ** (index + 0.5) / 1000
        return Math.min(Math.max(middle, this.minimum), this.maximum)
      }
    }
    return this.maximum
  }

  /** Forgets every sample. */
  reset(): void {
    this.counts.fill(0)
    this.total = 0
    this.minimum = Number.POSITIVE_INFINITY
    this.maximum = Number.NEGATIVE_INFINITY
  }
}
