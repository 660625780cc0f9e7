/**
 * Publisher-confirm bookkeeping for one channel: delivery tag -> waiting publish.
 *
 * Tags are issued in order from 1, so entries sit in an array indexed by `tag - base`; an ack or
 * nack with `multiple` settles every entry up to its tag from the head. A `basic.return` arrives
 * before the ack of the same message and marks the oldest unsettled mandatory publish with the
 * same exchange and routing key, so that its ack completes it as returned.
 */
import * as Deferred from "effect/Deferred"
import * as Exit from "effect/Exit"
import { AmqpPublishError, Nacked, Returned, Unconfirmed } from "../AmqpError.ts"
import type { AmqpChannelError, AmqpConnectionError } from "../AmqpError.ts"

export interface PendingConfirm {
  readonly deferred: Deferred.Deferred<void, AmqpPublishError>
  readonly exchange: string
  readonly routingKey: string
  readonly mandatory: boolean
  returned: Returned | undefined
}

export class ConfirmTracker {
  private entries: Array<PendingConfirm | undefined> = []
  private head = 0
  private base = 1
  private nextTag = 1
  outstanding = 0
  /** Called with the number of publishes settled, to free their window slots. */
  onSettled: (count: number) => void = () => {}

  add(entry: PendingConfirm): number {
    this.entries.push(entry)
    this.outstanding++
    return this.nextTag++
  }

  ack(tag: number, multiple: boolean): void {
    this.settle(tag, multiple, (entry) =>
      entry.returned !== undefined
        ? Exit.fail(new AmqpPublishError({ reason: entry.returned }))
        : Exit.void)
  }

  nack(tag: number, multiple: boolean): void {
    this.settle(tag, multiple, () => Exit.fail(new AmqpPublishError({ reason: new Nacked({ deliveryTag: tag }) })))
  }

  returned(returned: Returned): boolean {
    for (let i = this.head; i < this.entries.length; i++) {
      const entry = this.entries[i]
      if (
        entry !== undefined && entry.mandatory && entry.returned === undefined &&
        entry.exchange === returned.exchange && entry.routingKey === returned.routingKey
      ) {
        entry.returned = returned
        return true
      }
    }
    return false
  }

  /** Ends every waiting publish as unconfirmed. */
  failAll(cause: AmqpChannelError | AmqpConnectionError): void {
    const error = Exit.fail(new AmqpPublishError({ reason: new Unconfirmed({ cause, sent: true }) }))
    for (let i = this.head; i < this.entries.length; i++) {
      const entry = this.entries[i]
      if (entry !== undefined) Deferred.doneUnsafe(entry.deferred, error)
    }
    const settled = this.outstanding
    this.entries = []
    this.head = 0
    this.base = this.nextTag
    this.outstanding = 0
    this.onSettled(settled)
  }

  private settle(
    tag: number,
    multiple: boolean,
    outcome: (entry: PendingConfirm) => Exit.Exit<void, AmqpPublishError>
  ): void {
    const index = tag - this.base
    if (index < this.head || index >= this.entries.length) return
    const before = this.outstanding
    if (multiple) {
      for (let i = this.head; i <= index; i++) this.complete(i, outcome)
    } else {
      this.complete(index, outcome)
    }
    while (this.head < this.entries.length && this.entries[this.head] === undefined) this.head++
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head)
      this.base += this.head
      this.head = 0
    }
    this.onSettled(before - this.outstanding)
  }

  private complete(index: number, outcome: (entry: PendingConfirm) => Exit.Exit<void, AmqpPublishError>): void {
    const entry = this.entries[index]
    if (entry === undefined) return
    this.entries[index] = undefined
    this.outstanding--
    Deferred.doneUnsafe(entry.deferred, outcome(entry))
  }
}
