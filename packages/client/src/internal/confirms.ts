/**
 * Publisher-confirm bookkeeping for one channel: delivery tag -> waiting publish.
 *
 * Tags are issued in order from 1, so entries sit in an array indexed by `tag - base`; an ack or
 * nack with `multiple` settles every entry up to its tag from the head.
 *
 * RabbitMQ sends the `basic.return` of an unroutable mandatory message, with the message itself,
 * before the ack that confirms it. The return is given to the oldest unsettled mandatory publish
 * with the same exchange, routing key and body, so that its ack completes it as returned. Acks do
 * not say which message was returned, and between a return and its ack other confirms may come,
 * so the message's own bytes are what identify it; of identical messages, any one is the right one.
 *
 * State is brought up to date before any waiting publish is woken: completing a `Deferred` can run
 * the waiting fiber at once, and that fiber may publish again.
 */
import * as Deferred from "effect/Deferred"
import * as Exit from "effect/Exit"
import { AmqpPublishError, Nacked, type Returned, Unconfirmed } from "../AmqpError.ts"
import type { AmqpChannelError, AmqpConnectionError } from "../AmqpError.ts"

export interface PendingConfirm {
  readonly deferred: Deferred.Deferred<void, AmqpPublishError>
  readonly exchange: string
  readonly routingKey: string
  readonly mandatory: boolean
  /** The body of a mandatory publish, to recognise it in a `basic.return`. */
  readonly body: Uint8Array | undefined
  returned: Returned | undefined
}

interface Settled {
  readonly entry: PendingConfirm
  readonly deliveryTag: number
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

  /** Marks the publish a `basic.return` of `body` belongs to; false when none is waiting. */
  returned(returned: Returned, body: Uint8Array): boolean {
    let sameRoute: PendingConfirm | undefined
    for (let i = this.head; i < this.entries.length; i++) {
      const entry = this.entries[i]
      if (
        entry === undefined || !entry.mandatory || entry.returned !== undefined ||
        entry.exchange !== returned.exchange || entry.routingKey !== returned.routingKey
      ) continue
      if (entry.body !== undefined && Buffer.compare(entry.body, body) === 0) {
        entry.returned = returned
        return true
      }
      sameRoute ??= entry
    }
    if (sameRoute === undefined) return false
    sameRoute.returned = returned
    return true
  }

  ack(tag: number, multiple: boolean): void {
    this.wake(this.settle(tag, multiple), (settled) =>
      settled.entry.returned !== undefined
        ? Exit.fail(new AmqpPublishError({ reason: settled.entry.returned }))
        : Exit.void)
  }

  nack(tag: number, multiple: boolean): void {
    this.wake(
      this.settle(tag, multiple),
      (settled) => Exit.fail(new AmqpPublishError({ reason: new Nacked({ deliveryTag: settled.deliveryTag }) }))
    )
  }

  /** Ends every waiting publish as unconfirmed. */
  failAll(cause: AmqpChannelError | AmqpConnectionError): void {
    const waiting: Array<Settled> = []
    for (let i = this.head; i < this.entries.length; i++) {
      const entry = this.entries[i]
      if (entry !== undefined) waiting.push({ entry, deliveryTag: this.base + i })
    }
    this.entries = []
    this.head = 0
    this.base = this.nextTag
    this.outstanding = 0
    this.onSettled(waiting.length)
    const error = Exit.fail(new AmqpPublishError({ reason: new Unconfirmed({ cause, sent: true }) }))
    for (const settled of waiting) Deferred.doneUnsafe(settled.entry.deferred, error)
  }

  /** Takes the entries an ack or nack settles out of the bookkeeping and frees their slots. */
  private settle(tag: number, multiple: boolean): Array<Settled> {
    const index = tag - this.base
    if (index < this.head || index >= this.entries.length) return []
    const settled: Array<Settled> = []
    const take = (i: number) => {
      const entry = this.entries[i]
      if (entry === undefined) return
      this.entries[i] = undefined
      settled.push({ entry, deliveryTag: this.base + i })
    }
    if (multiple) {
      for (let i = this.head; i <= index; i++) take(i)
    } else {
      take(index)
    }
    this.outstanding -= settled.length
    while (this.head < this.entries.length && this.entries[this.head] === undefined) this.head++
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head)
      this.base += this.head
      this.head = 0
    }
    this.onSettled(settled.length)
    return settled
  }

  private wake(
    settled: ReadonlyArray<Settled>,
    outcome: (settled: Settled) => Exit.Exit<void, AmqpPublishError>
  ): void {
    for (const one of settled) Deferred.doneUnsafe(one.entry.deferred, outcome(one))
  }
}
