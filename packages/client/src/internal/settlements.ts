/**
 * Which delivery tags of one channel incarnation are settled: acked, nacked or rejected, given
 * without acknowledgement (no-ack), or requeued by `basic.recover`. The broker answers an
 * acknowledgement of a settled tag by closing the channel with 406, so the channel refuses one
 * before it is sent.
 *
 * Tags mostly settle in order, so they are kept as a prefix (every tag up to `through`) and the
 * few settled out of order above it, which join the prefix once the gap below them closes.
 */
export class Settlements {
  private through = 0
  private readonly above = new Set<number>()

  isSettled(tag: number): boolean {
    return tag <= this.through || this.above.has(tag)
  }

  /** Settles one tag. */
  settle(tag: number): void {
    if (tag <= this.through) return
    if (tag !== this.through + 1) {
      this.above.add(tag)
      return
    }
    this.through = tag
    if (this.above.size > 0) this.closeGap()
  }

  /** Settles every tag up to `tag`: an acknowledgement with `multiple`, or `basic.recover`. */
  settleThrough(tag: number): void {
    if (tag <= this.through) return
    this.through = tag
    if (this.above.size === 0) return
    for (const settled of this.above) if (settled <= tag) this.above.delete(settled)
    this.closeGap()
  }

  /** The highest tag up to `tag` that is not settled, or 0 when every one is. */
  highestUnsettled(tag: number): number {
    let candidate = tag
    while (candidate > this.through && this.above.has(candidate)) candidate--
    return candidate > this.through ? candidate : 0
  }

  private closeGap(): void {
    while (this.above.delete(this.through + 1)) this.through++
  }
}
