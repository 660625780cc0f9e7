/**
 * Which delivery tags of one channel incarnation are settled: acked, nacked or rejected, given
 * without acknowledgement (no-ack), or requeued by `basic.recover`. The broker answers an
 * acknowledgement of a settled tag by closing the channel with 406, so the channel refuses one
 * before it is sent.
 *
 * Tags mostly settle in order, so they are kept as a prefix (every tag up to `through`) and the
 * few settled out of order above it, which join the prefix once the gap below them closes.
 *
 * In tx mode the broker settles a tag when its acknowledgement arrives, and `tx.rollback` makes
 * the transaction's acknowledgements outstanding again; no-ack deliveries and `basic.recover` are
 * not part of a transaction. So each transaction starts from a checkpoint, a rollback returns to
 * it, and the settlements since that were no acknowledgements are made again. The broker takes
 * `tx.commit` and `tx.rollback` in order with the acknowledgements around them, so the checkpoint
 * moves when they are sent, not when their replies come.
 */
export class Settlements {
  private through = 0
  private above = new Set<number>()
  private checkpoint: Checkpoint | undefined

  isSettled(tag: number): boolean {
    return tag <= this.through || this.above.has(tag)
  }

  /** True when every tag up to `tag` is settled. */
  isSettledThrough(tag: number): boolean {
    return tag <= this.through
  }

  /** Settles one tag; `acknowledged` unless it came without acknowledgement (no-ack). */
  settle(tag: number, acknowledged = true): void {
    if (!acknowledged) this.checkpoint?.others.push({ tag, through: false })
    if (tag <= this.through) return
    if (tag !== this.through + 1) {
      this.above.add(tag)
      return
    }
    this.through = tag
    if (this.above.size > 0) this.closeGap()
  }

  /** Settles every tag up to `tag`: an acknowledgement with `multiple`, or `basic.recover`. */
  settleThrough(tag: number, acknowledged = true): void {
    if (!acknowledged) this.checkpoint?.others.push({ tag, through: true })
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

  /**
   * `basic.recover` requeued every tag up to `tag` still outstanding; a tag acknowledged in the
   * open transaction is not outstanding, and a rollback makes it so again.
   */
  requeueOutstanding(tag: number): void {
    const checkpoint = this.checkpoint
    if (checkpoint !== undefined) {
      for (let t = this.through + 1; t <= tag; t++) {
        if (!this.above.has(t)) checkpoint.others.push({ tag: t, through: false })
      }
    }
    this.settleThrough(tag)
  }

  /** `tx.select` was sent: a transaction starts, unless one is open (a second select changes nothing). */
  select(): void {
    if (this.checkpoint === undefined) this.commit()
  }

  /**
   * `tx.commit` was sent: acknowledgements sent from now on belong to the next transaction, and
   * what is settled now stays settled.
   */
  commit(): void {
    this.checkpoint = { through: this.through, above: new Set(this.above), others: [], givenBack: [] }
  }

  /**
   * Settles a delivery the channel hands back to its queue unseen (a reject with requeue): in a
   * transaction it takes effect with the commit, so a rollback must not leave it outstanding.
   */
  giveBack(tag: number): void {
    this.settle(tag)
    this.checkpoint?.givenBack.push(tag)
  }

  /**
   * `tx.rollback` was sent: the transaction's acknowledgements are outstanding again, but for the
   * deliveries handed back, which stay settled: returned, they are to be rejected again.
   */
  rollback(): ReadonlyArray<number> {
    const checkpoint = this.checkpoint
    if (checkpoint === undefined) return []
    this.through = checkpoint.through
    this.above = checkpoint.above
    this.commit()
    for (const { tag, through } of checkpoint.others) {
      if (through) this.settleThrough(tag, false)
      else this.settle(tag, false)
    }
    for (const tag of checkpoint.givenBack) this.giveBack(tag)
    return checkpoint.givenBack
  }

  private closeGap(): void {
    while (this.above.delete(this.through + 1)) this.through++
  }
}

interface Checkpoint {
  readonly through: number
  readonly above: Set<number>
  /** Settlements since the checkpoint that no rollback undoes: no-ack deliveries, `basic.recover`. */
  readonly others: Array<{ readonly tag: number; readonly through: boolean }>
  /** Deliveries handed back unseen in this transaction: a rollback rejects them again. */
  readonly givenBack: Array<number>
}
