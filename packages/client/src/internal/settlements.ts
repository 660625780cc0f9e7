/**
 * Which delivery tags of one channel incarnation are settled: acked, nacked or rejected, given
 * without acknowledgement (no-ack), or requeued by `basic.recover`. The broker answers an
 * acknowledgement of a settled tag by closing the channel with 406, so the channel refuses one
 * before it is sent.
 *
 * Tags mostly settle in order, so they are kept as a prefix (every tag up to `through`) and the
 * runs settled above it, as ranges, which join the prefix once the gap below them closes. One
 * delivery held while a million after it are acked is one range, not a million tags.
 *
 * In tx mode the broker settles a tag when its acknowledgement arrives, and `tx.rollback` makes
 * the transaction's acknowledgements outstanding again; no-ack deliveries and `basic.recover` are
 * not part of a transaction. So each transaction starts from a checkpoint, a rollback returns to
 * it, and the settlements since that were no acknowledgements are made again. The broker takes
 * `tx.commit` and `tx.rollback` in order with the acknowledgements around them, so the checkpoint
 * moves when they are sent, not when their replies come.
 */
/** Stream tags recorded before the first compaction of their list. */
const STREAM_TAGS_COMPACTED_AT = 1024

export class Settlements {
  private through = 0
  /**
   * The tags settled above `through + 1`: ascending ranges as `[first, last, first, last, ...]`,
   * never touching one another (touching ranges merge).
   */
  private ranges: Array<number> = []
  private checkpoint: Checkpoint | undefined
  /**
   * The tags of deliveries from stream queues, ascending: RabbitMQ answers a
   * nack or reject of one by closing the connection (540), so those are refused before they go.
   * Settled ones are dropped as the list grows, and before each check.
   */
  private streamTags: Array<number> = []
  private compactStreamTagsAt = STREAM_TAGS_COMPACTED_AT

  isSettled(tag: number): boolean {
    return tag <= this.through || this.rangeHolding(tag) >= 0
  }

  /** True when every tag up to `tag` is settled. */
  isSettledThrough(tag: number): boolean {
    return tag <= this.through
  }

  /** How many ranges are kept above the prefix. */
  get rangeCount(): number {
    return this.ranges.length / 2
  }

  /** Settles one tag; `acknowledged` unless it came without acknowledgement (no-ack). */
  settle(tag: number, acknowledged = true): void {
    if (!acknowledged) this.checkpoint?.others.push({ tag, through: false })
    if (tag <= this.through) return
    if (tag !== this.through + 1) return this.settleAbove(tag)
    this.through = tag
    if (this.ranges.length > 0) this.closeGap()
  }

  /** Settles every tag up to `tag`: an acknowledgement with `multiple`, or `basic.recover`. */
  settleThrough(tag: number, acknowledged = true): void {
    if (!acknowledged) this.checkpoint?.others.push({ tag, through: true })
    if (tag <= this.through) return
    this.through = tag
    const ranges = this.ranges
    let covered = 0
    while (covered < ranges.length && ranges[covered + 1]! <= tag) covered += 2
    if (covered > 0) ranges.splice(0, covered)
    this.closeGap()
  }

  /** The highest tag up to `tag` that is not settled, or 0 when every one is. */
  highestUnsettled(tag: number): number {
    if (tag <= this.through) return 0
    const holding = this.rangeHolding(tag)
    if (holding < 0) return tag
    const below = this.ranges[holding]! - 1
    return below > this.through ? below : 0
  }

  /**
   * `basic.recover` requeued every tag up to `tag` still outstanding; a tag acknowledged in the
   * open transaction is not outstanding, and a rollback makes it so again.
   */
  requeueOutstanding(tag: number): void {
    const checkpoint = this.checkpoint
    if (checkpoint !== undefined) {
      // The outstanding tags are the gaps between the ranges.
      const ranges = this.ranges
      let next = this.through + 1
      for (let i = 0; i < ranges.length && ranges[i]! <= tag; i += 2) {
        for (; next < ranges[i]!; next++) checkpoint.others.push({ tag: next, through: false })
        next = ranges[i + 1]! + 1
      }
      for (; next <= tag; next++) checkpoint.others.push({ tag: next, through: false })
    }
    this.settleThrough(tag)
  }

  /** How many stream tags are kept. */
  get streamTagCount(): number {
    return this.streamTags.length
  }

  /** Records that delivery `tag` came from a stream queue. */
  fromStream(tag: number): void {
    this.streamTags.push(tag)
    if (this.streamTags.length >= this.compactStreamTagsAt) this.compactStreamTags()
  }

  /**
   * Whether a nack or reject of `tag` (with `multiple`, of every tag up to it) would name an
   * unsettled delivery from a stream queue.
   */
  namesStreamDelivery(tag: number, multiple: boolean): boolean {
    if (this.streamTags.length === 0) return false
    this.compactStreamTags()
    for (const streamTag of this.streamTags) {
      if (streamTag > tag) return false
      if ((multiple || streamTag === tag) && !this.isSettled(streamTag)) return true
    }
    return false
  }

  /**
   * Keeps the stream tags that are unsettled or that a rollback could make outstanding again (in a
   * transaction, those above its checkpoint). The next compaction comes once the list has doubled,
   * so each tag costs a constant amount however many stay held.
   */
  private compactStreamTags(): void {
    const kept = this.checkpoint?.through ?? Infinity
    this.streamTags = this.streamTags.filter((tag) => tag > kept || !this.isSettled(tag))
    this.compactStreamTagsAt = Math.max(STREAM_TAGS_COMPACTED_AT, 2 * this.streamTags.length)
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
    this.checkpoint = { through: this.through, ranges: this.ranges.slice(), others: [], givenBack: [] }
  }

  /**
   * Settles a delivery the channel hands back to its queue unseen (a reject with requeue, or an ack
   * for a stream's): in a transaction it takes effect with the commit, so a rollback must not
   * leave it outstanding.
   */
  giveBack(tag: number, fromStream: boolean): void {
    this.settle(tag)
    this.checkpoint?.givenBack.push({ tag, fromStream })
  }

  /**
   * `tx.rollback` was sent: the transaction's acknowledgements are outstanding again, but for the
   * deliveries handed back, which stay settled: returned, they are to be handed back again.
   */
  rollback(): ReadonlyArray<GivenBack> {
    const checkpoint = this.checkpoint
    if (checkpoint === undefined) return []
    this.through = checkpoint.through
    this.ranges = checkpoint.ranges
    this.commit()
    for (const { tag, through } of checkpoint.others) {
      if (through) this.settleThrough(tag, false)
      else this.settle(tag, false)
    }
    for (const { fromStream, tag } of checkpoint.givenBack) this.giveBack(tag, fromStream)
    return checkpoint.givenBack
  }

  /** Adds `tag`, above `through + 1`, to the ranges, merging the ranges it touches. */
  private settleAbove(tag: number): void {
    const ranges = this.ranges
    const count = ranges.length
    // The usual cases first: a tag after every range, or right after the last one.
    if (count === 0 || tag > ranges[count - 1]! + 1) {
      ranges.push(tag, tag)
      return
    }
    if (tag === ranges[count - 1]! + 1) {
      ranges[count - 1] = tag
      return
    }
    // The first range that ends at `tag - 1` or later.
    let low = 0
    let high = count / 2 - 1
    while (low < high) {
      const middle = (low + high) >> 1
      if (ranges[2 * middle + 1]! < tag - 1) low = middle + 1
      else high = middle
    }
    const at = 2 * low
    const first = ranges[at]!
    const last = ranges[at + 1]!
    if (tag >= first && tag <= last) return
    if (tag === last + 1) {
      // It closes the gap to the next range, or ends this one a tag later.
      if (ranges[at + 2] === tag + 1) {
        ranges[at + 1] = ranges[at + 3]!
        ranges.splice(at + 2, 2)
      } else {
        ranges[at + 1] = tag
      }
    } else if (tag === first - 1) {
      ranges[at] = tag
    } else {
      ranges.splice(at, 0, tag, tag)
    }
  }

  /** The index of the range that holds `tag` (of its first tag), or -1. */
  private rangeHolding(tag: number): number {
    const ranges = this.ranges
    let low = 0
    let high = ranges.length / 2 - 1
    while (low <= high) {
      const middle = (low + high) >> 1
      if (tag < ranges[2 * middle]!) high = middle - 1
      else if (tag > ranges[2 * middle + 1]!) low = middle + 1
      else return 2 * middle
    }
    return -1
  }

  /** Joins the first range to the prefix when it starts right after it (ranges never touch, so one at most). */
  private closeGap(): void {
    const ranges = this.ranges
    if (ranges.length > 0 && ranges[0]! <= this.through + 1) {
      this.through = Math.max(this.through, ranges[1]!)
      ranges.splice(0, 2)
    }
  }
}

interface Checkpoint {
  readonly through: number
  readonly ranges: Array<number>
  /** Settlements since the checkpoint that no rollback undoes: no-ack deliveries, `basic.recover`. */
  readonly others: Array<{ readonly tag: number; readonly through: boolean }>
  /** Deliveries handed back unseen in this transaction: a rollback hands them back again. */
  readonly givenBack: Array<GivenBack>
}

/** A delivery handed back: rejected with requeue, or acknowledged when a stream's. */
export interface GivenBack {
  readonly tag: number
  readonly fromStream: boolean
}
