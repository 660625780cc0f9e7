/**
 * Publisher-confirm bookkeeping for one channel: delivery tag -> waiting publish.
 *
 * Tags are issued in order from 1, so entries sit in an array indexed by `tag - base`; an ack or
 * nack with `multiple` settles every entry up to its tag from the head, and with tag 0 every entry.
 * One naming a tag not yet issued is refused: the broker's numbering is not ours, so no confirm on
 * the channel can be trusted.
 *
 * RabbitMQ sends the `basic.return` of an unroutable mandatory message, with the message itself,
 * before the ack that confirms it. The return is given to the oldest unsettled mandatory publish
 * with the same exchange, routing key, body and properties, so that its ack completes it as
 * returned. Acks do not say which message was returned, and between a return and its ack other
 * confirms may come, so the message itself is what identifies it (a headers exchange routes by
 * properties alone); of identical messages, any one is the right one.
 *
 * State is brought up to date before any waiting publish is woken, the outcomes of everything an
 * ack or nack settles included: waking one can run the waiting fiber at once, and that fiber may
 * publish again, or run the next wait, which then has its outcome.
 *
 * A publish's wait is its entry's own: no `Deferred` per publish. Most waits are run after their
 * confirm came, and then return its outcome without suspending.
 */
import { type BasicProperties, Decimal, Typed } from "@effect-amqp/protocol"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { AmqpPublishError, Nacked, type Returned, Unconfirmed } from "../AmqpError.ts"
import type { AmqpChannelError, AmqpConnectionError } from "../AmqpError.ts"

type Outcome = Exit.Exit<void, AmqpPublishError>
type Resume = (outcome: Outcome) => void

/** One publish waiting for its confirm, and the fibers waiting with it. */
export class PendingConfirm {
  readonly exchange: string
  readonly routingKey: string
  readonly mandatory: boolean
  /** The body and properties of a mandatory publish, to recognise it in a `basic.return`. */
  readonly body: Uint8Array | undefined
  readonly properties: BasicProperties | undefined
  deliveryTag = 0
  returned: Returned | undefined = undefined
  private outcome: Outcome | undefined = undefined
  /** The fibers waiting: none, one, or (a wait run by several fibers) a list. */
  private waiting: Resume | Array<Resume> | undefined = undefined

  constructor(
    exchange: string,
    routingKey: string,
    mandatory: boolean,
    body: Uint8Array | undefined,
    properties: BasicProperties | undefined
  ) {
    this.exchange = exchange
    this.routingKey = routingKey
    this.mandatory = mandatory
    this.body = body
    this.properties = properties
  }

  /**
   * Waits for the outcome. A fiber that stops waiting (interrupted, timed out) is taken off the
   * list, so a wait polled with a short timeout holds nothing while the confirm is late.
   */
  readonly wait: Effect.Effect<void, AmqpPublishError> = Effect.callback((resume: Resume) => {
    if (this.outcome !== undefined) return resume(this.outcome)
    const waiting = this.waiting
    if (waiting === undefined) this.waiting = resume
    else if (typeof waiting === "function") this.waiting = [waiting, resume]
    else waiting.push(resume)
    return Effect.sync(() => this.forget(resume))
  })

  /** The fibers waiting now. */
  get waiterCount(): number {
    const waiting = this.waiting
    return waiting === undefined ? 0 : typeof waiting === "function" ? 1 : waiting.length
  }

  private forget(resume: Resume): void {
    const waiting = this.waiting
    if (waiting === resume) {
      this.waiting = undefined
    } else if (Array.isArray(waiting)) {
      const index = waiting.indexOf(resume)
      if (index >= 0) waiting.splice(index, 1)
    }
  }

  /** Records the outcome; a wait run from now on returns it at once. Wakes nobody yet. */
  resolve(outcome: Outcome): void {
    this.outcome = outcome
  }

  /** Wakes the fibers waiting, with the outcome `resolve` recorded. */
  wake(): void {
    const waiting = this.waiting
    if (waiting === undefined) return
    this.waiting = undefined
    const outcome = this.outcome!
    if (typeof waiting === "function") waiting(outcome)
    else for (const resume of waiting) resume(outcome)
  }
}

const acked = (entry: PendingConfirm): Outcome =>
  entry.returned !== undefined ? Exit.fail(new AmqpPublishError({ reason: entry.returned })) : Exit.void

const nacked = (entry: PendingConfirm): Outcome =>
  Exit.fail(new AmqpPublishError({ reason: new Nacked({ deliveryTag: entry.deliveryTag }) }))

/**
 * Records the outcome of every entry, then wakes their waiters. A fiber woken for the first then
 * finds the others' outcomes already there: a publisher keeping a window full runs on through
 * every wait the ack settled, instead of suspending at each next one until its turn to be woken.
 */
const settleAll = (entries: ReadonlyArray<PendingConfirm>, outcome: (entry: PendingConfirm) => Outcome): void => {
  for (const entry of entries) entry.resolve(outcome(entry))
  for (const entry of entries) entry.wake()
}

/**
 * Whether a value as published and the same value as the broker sent it back are equal: numbers
 * and 64-bit integers alike, a timestamp to the second it travels as, a typed value as its value.
 */
const sameFieldValue = (published: unknown, received: unknown): boolean => {
  if (published instanceof Typed) return sameFieldValue(published.value, received)
  if (published === undefined || published === null) return received === undefined || received === null
  if (typeof published === "number" || typeof published === "bigint") {
    if (typeof received !== "number" && typeof received !== "bigint") return false
    return typeof published === typeof received ? published === received : Number(published) === Number(received)
  }
  if (published instanceof Date) {
    return received instanceof Date && Math.floor(published.getTime() / 1000) === Math.floor(received.getTime() / 1000)
  }
  if (published instanceof Uint8Array) {
    return received instanceof Uint8Array && Buffer.compare(published, received) === 0
  }
  if (published instanceof Decimal) {
    return received instanceof Decimal && published.scale === received.scale && published.value === received.value
  }
  if (Array.isArray(published)) {
    return Array.isArray(received) && published.length === received.length &&
      published.every((value, i) => sameFieldValue(value, received[i]))
  }
  if (typeof published === "object") {
    if (typeof received !== "object" || received === null || Array.isArray(received)) return false
    const ours = Object.entries(published).filter(([, value]) => value !== undefined)
    const theirs = Object.entries(received).filter(([, value]) => value !== undefined)
    if (ours.length !== theirs.length) return false
    const lookup = new Map(theirs)
    return ours.every(([key, value]) => lookup.has(key) && sameFieldValue(value, lookup.get(key)))
  }
  return published === received
}

export class ConfirmTracker {
  private entries: Array<PendingConfirm | undefined> = []
  private head = 0
  private base = 1
  private nextTag = 1
  outstanding = 0
  /** Called with the number of publishes settled, to free their window slots. */
  onSettled: (count: number) => void = () => {}

  /**
   * Counts a publish sent in confirm mode that nobody waits for (admitted before confirm mode
   * began): the broker numbers it, and its ack or nack is then taken for no other publish.
   */
  skip(): void {
    this.entries.push(undefined)
    this.nextTag++
  }

  add(entry: PendingConfirm): void {
    entry.deliveryTag = this.nextTag++
    this.entries.push(entry)
    this.outstanding++
  }

  /**
   * Marks the publish a `basic.return` of `body` with `properties` belongs to: the oldest waiting
   * mandatory publish of the same route with the same body and properties, else with the same
   * body. False when none is: a return of another message is never charged to a publish.
   */
  returned(returned: Returned, body: Uint8Array, properties: BasicProperties): boolean {
    let sameBody: PendingConfirm | undefined
    for (let i = this.head; i < this.entries.length; i++) {
      const entry = this.entries[i]
      if (
        entry === undefined || !entry.mandatory || entry.returned !== undefined ||
        entry.exchange !== returned.exchange || entry.routingKey !== returned.routingKey
      ) continue
      if (entry.body !== undefined && Buffer.compare(entry.body, body) === 0) {
        if (sameFieldValue(entry.properties ?? {}, properties)) {
          entry.returned = returned
          return true
        }
        sameBody ??= entry
      }
    }
    if (sameBody === undefined) return false
    sameBody.returned = returned
    return true
  }

  /** Whether `tag` (with `multiple`) names publishes issued here; tag 0 with `multiple` names all. */
  names(tag: number, multiple: boolean): boolean {
    return tag < this.nextTag && (tag > 0 || multiple)
  }

  /** Settles what an ack names, which the caller has checked with `names`. */
  ack(tag: number, multiple: boolean): void {
    settleAll(this.settle(tag, multiple), acked)
  }

  /** Settles what a nack names, which the caller has checked with `names`. */
  nack(tag: number, multiple: boolean): void {
    settleAll(this.settle(tag, multiple), nacked)
  }

  /** Ends every waiting publish as unconfirmed. */
  failAll(cause: AmqpChannelError | AmqpConnectionError): void {
    const waiting: Array<PendingConfirm> = []
    for (let i = this.head; i < this.entries.length; i++) {
      const entry = this.entries[i]
      if (entry !== undefined) waiting.push(entry)
    }
    this.entries = []
    this.head = 0
    this.base = this.nextTag
    this.outstanding = 0
    this.onSettled(waiting.length)
    const error = Exit.fail(new AmqpPublishError({ reason: new Unconfirmed({ cause, sent: true }) }))
    settleAll(waiting, () => error)
  }

  /** Takes the entries an ack or nack settles out of the bookkeeping and frees their slots. */
  private settle(tag: number, multiple: boolean): Array<PendingConfirm> {
    const index = (tag === 0 ? this.nextTag - 1 : tag) - this.base
    if (index < this.head || index >= this.entries.length) return []
    const settled: Array<PendingConfirm> = []
    const entries = this.entries
    for (let i = multiple ? this.head : index; i <= index; i++) {
      const entry = entries[i]
      if (entry === undefined) continue
      entries[i] = undefined
      settled.push(entry)
    }
    this.outstanding -= settled.length
    while (this.head < entries.length && entries[this.head] === undefined) this.head++
    if (this.head > 1024 && this.head * 2 > entries.length) {
      this.entries = entries.slice(this.head)
      this.base += this.head
      this.head = 0
    }
    this.onSettled(settled.length)
    return settled
  }
}
