/**
 * Consumers and deliveries on one channel incarnation, shared by `AmqpChannel` and the recovering
 * channels of `AmqpClient`.
 *
 * A delivery remembers the channel incarnation it came from. Acknowledging it after that channel
 * has ended fails with `AmqpStaleDelivery` and sends nothing: its delivery tag means nothing to any
 * later channel, and sent there it would close that channel with 406 PRECONDITION_FAILED.
 */
import { type Command, type FieldTable, Methods } from "@effect-amqp/protocol"
import type { AmqpEncodeError, BasicProperties } from "@effect-amqp/protocol"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import {
  type AmqpClosedError,
  type AmqpConnectionError,
  AmqpConsumerTagInUse,
  AmqpStaleDelivery,
  AmqpUnknownDeliveryTag
} from "../AmqpError.ts"
import type { ChannelCore, ChannelFailure, ConsumerSink } from "./channelCore.ts"

/**
 * @since 0.1.0
 * @category errors
 */
export type AckError = AmqpStaleDelivery | AmqpUnknownDeliveryTag | AmqpClosedError | AmqpConnectionError

/**
 * A message delivered to a consumer or fetched with `get`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Delivery {
  readonly consumerTag: string
  readonly deliveryTag: number
  readonly redelivered: boolean
  readonly exchange: string
  readonly routingKey: string
  readonly properties: BasicProperties
  readonly body: Uint8Array
  /** Acknowledges this delivery (and every earlier one on the channel with `multiple`). */
  readonly ack: (options?: { readonly multiple?: boolean }) => Effect.Effect<void, AckError>
  /** Rejects this delivery; `requeue` defaults to true. */
  readonly nack: (
    options?: { readonly multiple?: boolean; readonly requeue?: boolean }
  ) => Effect.Effect<void, AckError>
  /** Rejects this one delivery; `requeue` defaults to true. */
  readonly reject: (options?: { readonly requeue?: boolean }) => Effect.Effect<void, AckError>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ConsumeOptions {
  readonly consumerTag?: string
  readonly noAck?: boolean
  readonly exclusive?: boolean
  readonly noLocal?: boolean
  /**
   * For example `x-stream-offset`, `x-priority`. Give `x-stream-offset` whenever the queue is a
   * stream, even as `"next"`, where the broker starts without it: it is how the client knows.
   * Other queues take an unhandled delivery back with a reject, which a stream answers by closing
   * the connection (540); with the argument, such deliveries are acknowledged instead, and a
   * recovering client's consumer goes on after the last delivery it handed to the application.
   */
  readonly arguments?: FieldTable
}

/** Options of `consumeWith`: a consumer's, and how many deliveries to handle at once. */
export interface ConsumeWithOptions extends ConsumeOptions {
  /**
   * Handlers running at once, each on its own delivery (1, the default, handles them in turn).
   * A prefetch (`channel.qos`) at least as large keeps them all busy.
   */
  readonly concurrency?: number
}

const EMPTY = new Uint8Array(0)

/**
 * Sends an acknowledgement on `core` for `deliveryTag` as the application saw it (the broker's tag
 * plus the incarnation's offset), or refuses it: stale when that channel has ended or the tag
 * belongs to an earlier incarnation of a recovering channel; unknown when the broker never gave
 * the tag or it is settled already. Sent, either would close the channel.
 *
 * Tag 0 with `multiple` means every delivery the channel has received and not settled: it is sent
 * as the highest such tag, so that deliveries still on their way are not acknowledged unseen.
 */
export const acknowledge = (...args: Parameters<typeof acknowledgeNow>): Effect.Effect<void, AckError> =>
  Effect.suspend(() => acknowledgeNow(...args))

const acknowledgeNow = (
  core: ChannelCore,
  operation: "ack" | "nack" | "reject",
  deliveryTag: number,
  multiple: boolean,
  requeue: boolean
): Effect.Effect<void, AckError> => {
  if (!Number.isSafeInteger(deliveryTag) || deliveryTag < 0) {
    return Effect.fail(new AmqpUnknownDeliveryTag({ deliveryTag, operation, reason: "never-delivered" }))
  }
  const all = deliveryTag === 0 && multiple
  if (!core.acceptsMethods() || (deliveryTag <= core.tagOffset && !all)) {
    return Effect.fail(new AmqpStaleDelivery({ deliveryTag, operation }))
  }
  const settlements = core.settlements
  if (all) {
    const highest = settlements.highestUnsettled(core.lastDeliveryTag)
    if (highest === 0) return Effect.void
    if (operation !== "ack" && settlements.namesStreamDelivery(highest, true)) {
      return Effect.fail(new AmqpUnknownDeliveryTag({ deliveryTag, operation, reason: "stream" }))
    }
    settlements.settleThrough(highest)
    return sendAcknowledgement(core, operation, highest, true, requeue)
  }
  const brokerTag = deliveryTag - core.tagOffset
  if (brokerTag > core.lastDeliveryTag) {
    return Effect.fail(new AmqpUnknownDeliveryTag({ deliveryTag, operation, reason: "never-delivered" }))
  }
  if (settlements.isSettled(brokerTag)) {
    return Effect.fail(new AmqpUnknownDeliveryTag({ deliveryTag, operation, reason: "settled" }))
  }
  if (operation !== "ack" && settlements.namesStreamDelivery(brokerTag, multiple)) {
    return Effect.fail(new AmqpUnknownDeliveryTag({ deliveryTag, operation, reason: "stream" }))
  }
  if (multiple) settlements.settleThrough(brokerTag)
  else settlements.settle(brokerTag)
  return sendAcknowledgement(core, operation, brokerTag, multiple, requeue)
}

/**
 * Queues an acknowledgement for the next tick, even to a congested socket: it is a few bytes that
 * let the broker free memory, and queued in the same step that records its tag as settled, the
 * records and the wire agree on its order among the channel's `tx.commit` and `tx.rollback`. The
 * acknowledgements a handler makes for one read's deliveries then leave in one system call.
 *
 * An ack of a tag with every tag below it settled is sent with `multiple`, which then means the
 * same, so that the next such ack can raise its tag while it waits: acking each delivery of a read
 * in turn costs the broker one frame.
 */
const sendAcknowledgement = (
  core: ChannelCore,
  operation: "ack" | "nack" | "reject",
  deliveryTag: number,
  multiple: boolean,
  requeue: boolean
): Effect.Effect<void, AckError> => {
  const connection = core.connection
  if (connection.isClosed()) return Effect.fail(connection.closedError())
  switch (operation) {
    case "ack":
      core.writeAck(deliveryTag, multiple)
      break
    case "nack":
      core.writeLater(Methods.basicNack({ deliveryTag, multiple, requeue }))
      break
    case "reject":
      core.writeLater(Methods.basicReject({ deliveryTag, requeue }))
  }
  return Effect.void
}

class DeliveryImpl implements Delivery {
  readonly consumerTag: string
  readonly deliveryTag: number
  readonly redelivered: boolean
  readonly exchange: string
  readonly routingKey: string
  readonly properties: BasicProperties
  readonly body: Uint8Array
  private readonly core: ChannelCore
  /** Given without acknowledgement: nothing may acknowledge it. */
  private readonly noAck: boolean
  /** From a stream queue, which requeues nothing: handed back, it is acknowledged. */
  private readonly fromStream: boolean

  constructor(core: ChannelCore, command: Command, fields: DeliveryFields, noAck: boolean, fromStream: boolean) {
    this.core = core
    this.fromStream = fromStream
    this.consumerTag = fields.consumerTag
    this.deliveryTag = core.tagOffset + fields.deliveryTag
    this.redelivered = fields.redelivered
    this.exchange = fields.exchange
    this.routingKey = fields.routingKey
    this.properties = command.properties ?? {}
    this.body = command.body ?? EMPTY
    this.noAck = noAck
  }

  ack(options?: { readonly multiple?: boolean }): Effect.Effect<void, AckError> {
    return this.settle("ack", options?.multiple ?? false, false)
  }

  nack(options?: { readonly multiple?: boolean; readonly requeue?: boolean }): Effect.Effect<void, AckError> {
    return this.settle("nack", options?.multiple ?? false, options?.requeue ?? true)
  }

  reject(options?: { readonly requeue?: boolean }): Effect.Effect<void, AckError> {
    return this.settle("reject", false, options?.requeue ?? true)
  }

  private settle(
    operation: "ack" | "nack" | "reject",
    multiple: boolean,
    requeue: boolean
  ): Effect.Effect<void, AckError> {
    if (this.noAck) {
      return Effect.fail(new AmqpUnknownDeliveryTag({ deliveryTag: this.deliveryTag, operation, reason: "no-ack" }))
    }
    if (this.fromStream && operation !== "ack") {
      return Effect.fail(new AmqpUnknownDeliveryTag({ deliveryTag: this.deliveryTag, operation, reason: "stream" }))
    }
    return acknowledge(this.core, operation, this.deliveryTag, multiple, requeue)
  }

  /**
   * Hands it back on the channel it came from, when the application will not settle it: nothing
   * if that channel has ended (the broker requeued it then) or it came without acknowledgement.
   */
  giveBack(): void {
    if (this.noAck) return
    const brokerTag = this.deliveryTag - this.core.tagOffset
    if (!this.core.settlements.isSettled(brokerTag)) this.core.giveBack(brokerTag, this.fromStream)
  }

  /** Whether the channel it came from can no longer take its acknowledgement. */
  isStale(): boolean {
    return !this.core.acceptsMethods()
  }
}

/**
 * Whether a consumer reads a stream queue: it was started with an `x-stream-offset` argument,
 * which RabbitMQ refuses (406) on every other kind of queue. A delivery's `x-stream-offset` header
 * proves nothing, as a publisher may set one on a message to any queue.
 */
export const isStreamConsumer = (options: ConsumeOptions): boolean =>
  options.arguments?.["x-stream-offset"] !== undefined

/**
 * A delivery to acknowledge whose channel has ended before anyone took it from the buffer: the
 * broker requeues it (and delivers it again, to this consumer after a reconnect), so it is dropped.
 */
const isStale = (delivery: Delivery): boolean => delivery instanceof DeliveryImpl && delivery.isStale()

interface DeliveryFields {
  readonly consumerTag: string
  readonly deliveryTag: number
  readonly redelivered: boolean
  readonly exchange: string
  readonly routingKey: string
}

export const makeDelivery = (
  core: ChannelCore,
  command: Command,
  fields: DeliveryFields,
  noAck: boolean,
  fromStream: boolean
): Delivery => new DeliveryImpl(core, command, fields, noAck, fromStream)

/** Where a consumer's deliveries and its end go. */
export interface ConsumerOutlet {
  readonly offer: (core: ChannelCore, delivery: Delivery) => void
  readonly cancelledByBroker: (consumerTag: string) => void
  readonly channelClosed: (cause: ChannelFailure | AmqpClosedError) => void
  /** The broker started it after its start was given up; it is being cancelled. */
  readonly startedGivenUp?: () => void
}

/** A running `basic.consume` on one channel incarnation. */
export interface ConsumerHandle {
  readonly consumerTag: string
  /** `basic.cancel` (bounded); deliveries that arrive meanwhile are handed back (see `giveBack`). */
  readonly cancel: Effect.Effect<void>
}

/**
 * Starts a consumer. It is registered as the `consume-ok` is routed, so no delivery behind the
 * reply can miss it.
 */
export const startConsumer = (
  core: ChannelCore,
  queue: string,
  options: ConsumeOptions,
  outlet: ConsumerOutlet
): Effect.Effect<ConsumerHandle, ChannelFailure | AmqpClosedError | AmqpEncodeError | AmqpConsumerTagInUse> => {
  const noAck = options.noAck ?? false
  const fromStream = isStreamConsumer(options)
  let cancelling = false
  let consumerTag = options.consumerTag ?? ""
  const sink: ConsumerSink = {
    fromStream,
    onDelivery: (command) => {
      const m = command.method
      if (m._tag !== "basic.deliver") return
      if (cancelling) {
        if (noAck) core.settlements.settle(m.deliveryTag, false)
        else core.giveBack(m.deliveryTag, fromStream)
        return
      }
      if (noAck) core.settlements.settle(m.deliveryTag, false)
      else if (fromStream) core.settlements.fromStream(m.deliveryTag)
      outlet.offer(core, makeDelivery(core, command, m, noAck, fromStream))
    },
    onCancelledByBroker: () => outlet.cancelledByBroker(consumerTag),
    onChannelClosed: (cause) => outlet.channelClosed(cause)
  }
  const requested = consumerTag
  // Set when the starter stops waiting for the consume-ok: the consumer is then cancelled as soon
  // as the broker has started it, and what it delivers meanwhile goes back to the queue.
  let abandoned = false
  let started = false
  const abandon = () => {
    cancelling = true
    core.cancelUnawaited(consumerTag)
    outlet.startedGivenUp?.()
  }
  const consume = core.rpc(
    Methods.basicConsume({
      queue,
      consumerTag,
      noAck,
      exclusive: options.exclusive ?? false,
      noLocal: options.noLocal ?? false,
      arguments: options.arguments ?? {}
    }),
    (reply) => {
      if (reply.method._tag !== "basic.consume-ok") return
      consumerTag = reply.method.consumerTag
      core.consumers.set(consumerTag, sink)
      if (fromStream) core.connection.streamQueues.add(queue)
      started = true
      if (abandoned) abandon()
    }
  )
  // A tag used twice on a channel makes RabbitMQ close the whole connection: refused here.
  type StartError = ChannelFailure | AmqpClosedError | AmqpEncodeError | AmqpConsumerTagInUse
  const claimed: Effect.Effect<Command, StartError> = requested === ""
    ? consume
    : Effect.suspend((): Effect.Effect<Command, StartError> => {
      const taken = core.consumers.has(requested) && !core.isCancelledUnawaited(requested)
      if (taken || core.startingTags.has(requested)) {
        return Effect.fail(new AmqpConsumerTagInUse({ consumerTag: requested, channel: core.id }))
      }
      core.startingTags.add(requested)
      return Effect.ensuring(consume, Effect.sync(() => core.startingTags.delete(requested)))
    })
  return claimed.pipe(
    Effect.onInterrupt(() =>
      Effect.sync(() => {
        abandoned = true
        if (started) abandon()
      })
    ),
    Effect.map(() => ({
      consumerTag,
      cancel: Effect.suspend(() => {
        cancelling = true
        if (!core.consumers.has(consumerTag) || core.isClosed()) return Effect.void
        // The consumer stays registered until its cancel-ok is routed, however long that takes:
        // what the broker delivered before it still arrives here, and goes back to the queue.
        const cancelled = () => core.consumers.delete(consumerTag)
        return core.rpc(Methods.basicCancel({ consumerTag }), cancelled).pipe(
          Effect.timeoutOption(core.connection.options.closeTimeout),
          Effect.ignore
        )
      })
    }))
  )
}

/** Deliveries, or body bytes, buffered by a consumer above which the connection stops reading. */
const HIGH_WATER = 8192
const HIGH_WATER_BYTES = 64 * 1024 * 1024
/** ... and below which it reads again. */
const LOW_WATER = 1024
const LOW_WATER_BYTES = 16 * 1024 * 1024
/**
 * A consumer that takes nothing for this long while reading is paused may be waiting for a reply
 * that sits unread behind its own deliveries (a confirm, a method's reply): reading resumes.
 */
const STALL_MILLIS = 2000
/** Taken deliveries at the front of the buffer's array above which the array is compacted. */
const COMPACT_AT = 1024

/**
 * A buffer's empty array. Made in this one place, so that V8 learns once that these arrays hold
 * objects and makes them so from the start: an array made elsewhere starts out holding small
 * integers, and its first push threw away the compiled delivery path (a deopt at every new
 * consumer, and a recompile).
 */
const noDeliveries = (): Array<Delivery> => []

/**
 * One running handler of `forEach`: the delivery it handles, until it asks for the next, and
 * whether it found the consumer's end (rather than failed with an error equal to it).
 */
interface Handler {
  handling: Delivery | undefined
  ended: boolean
}

/** Hands back the delivery of a handler that failed or was interrupted, unless it was settled. */
const giveBackHandling = (handler: Handler): void => {
  const delivery = handler.handling
  handler.handling = undefined
  if (delivery instanceof DeliveryImpl) delivery.giveBack()
}

/**
 * A consumer's buffer: deliveries in arrival order, then the consumer's end (a broker cancel, a
 * closed channel), taken by one stream or one `consumeWith` loop.
 *
 * A consumer waiting on an empty buffer is woken once the socket read that brought a delivery has
 * been decoded whole: every delivery of that read is then taken without suspending. Waking it
 * inside the decoder would run the handler there, in the middle of a read.
 *
 * Read backpressure: while more than `HIGH_WATER` deliveries or `HIGH_WATER_BYTES` of bodies
 * wait (possible without a prefetch), the connection stops reading from its socket, so the
 * broker's TCP window fills instead of this process's memory. If the consumer then takes nothing
 * for `STALL_MILLIS`, it may be waiting for something only the paused connection could read, so
 * reading resumes and this consumer never pauses it again: its memory is then bounded by its
 * prefetch alone.
 */
export class DeliveryBuffer<E> {
  private items: Array<Delivery> = noDeliveries()
  /** Index of the first delivery not yet taken. */
  private head = 0
  private end: { readonly error: E } | undefined
  private waiters: Array<() => void> = []
  private wakeQueued = false
  private paused: ChannelCore | undefined
  private bytes = 0
  private takenCount = 0
  private stallTimer: ReturnType<typeof setTimeout> | undefined
  private stalled = false
  readonly stream: Stream.Stream<Delivery, E>

  /** Deliveries need acknowledging (no `noAck`): those whose channel has ended are dropped. */
  private readonly dropsStale: boolean
  /** Told of each delivery dropped that way, which the application will never see. */
  private readonly onDropped: ((delivery: Delivery) => void) | undefined

  constructor(options: { readonly noAck?: boolean; readonly onDropped?: (delivery: Delivery) => void } = {}) {
    this.dropsStale = options.noAck !== true
    this.onDropped = options.onDropped
    // One delivery per pull, never a whole batch: a delivery that downstream does not take (say,
    // after `Stream.take`) stays in the buffer, where ending the consumer finds it and hands it back.
    const pull: Effect.Effect<readonly [Delivery], E> = this.next((delivery) => Effect.succeed([delivery] as const))
    this.stream = Stream.fromPull(Effect.succeed(pull))
  }

  /** Deliveries buffered and not yet taken. */
  get size(): number {
    return this.items.length - this.head
  }

  /** Waits until a delivery or the end arrives. */
  private readonly arrival: Effect.Effect<void> = Effect.callback<void>((resume) => {
    const waiter = () => resume(Effect.void)
    this.waiters.push(waiter)
    return Effect.sync(() => {
      const index = this.waiters.indexOf(waiter)
      if (index >= 0) this.waiters.splice(index, 1)
    })
  })

  /**
   * Wakes a waiting taker per delivery buffered, or all of them at the end: of a thousand idle
   * `consumeWith` handlers, one delivery wakes one. A taker that finds nothing live waits again.
   */
  private readonly wake = (): void => {
    this.wakeQueued = false
    const waiters = this.waiters
    if (this.end === undefined && this.size < waiters.length) {
      for (const waiter of waiters.splice(0, this.size)) waiter()
      return
    }
    this.waiters = []
    for (const waiter of waiters) waiter()
  }

  private queueWake(core: ChannelCore | undefined): void {
    if (this.wakeQueued || this.waiters.length === 0) return
    this.wakeQueued = true
    if (core !== undefined) core.connection.whenReadEnds(this.wake)
    else queueMicrotask(this.wake)
  }

  /**
   * Takes the next live delivery and continues with `use`: one already buffered without
   * suspending, otherwise the next to arrive. Fails with the consumer's end once the buffer is
   * empty. A `handler` slot holds the delivery taken, until the next is asked for.
   */
  private next<A, E2, R>(
    use: (delivery: Delivery) => Effect.Effect<A, E2, R>,
    handler?: Handler
  ): Effect.Effect<A, E | E2, R> {
    const self: Effect.Effect<A, E | E2, R> = Effect.suspend(() => {
      if (handler !== undefined) handler.handling = undefined
      while (this.head < this.items.length) {
        const delivery = this.take()
        if (this.dropsStale && isStale(delivery)) {
          this.onDropped?.(delivery)
          continue
        }
        if (handler !== undefined) handler.handling = delivery
        return use(delivery)
      }
      if (this.end === undefined) return Effect.andThen(this.arrival, self)
      if (handler !== undefined) handler.ended = true
      return Effect.fail(this.end.error)
    })
    return self
  }

  /**
   * Runs `handle` on each delivery, on up to `concurrency` at once, until the consumer ends, then
   * fails with why it ended (a broker cancel, a closed channel) once every running handler is done,
   * or with the first handler's error, which interrupts the others. A delivery already buffered is
   * handled without suspending.
   *
   * The delivery of a handler that fails or is interrupted is handed back unless the handler
   * settled it: the handler settles it no more, and unacknowledged it would stay so for the
   * channel's life.
   */
  forEach<E2, R>(
    handle: (delivery: Delivery) => Effect.Effect<void, E2, R>,
    concurrency = 1
  ): Effect.Effect<never, E | E2, R> {
    if (concurrency === 1) return this.handleInTurn(handle, Effect.fail)
    // Each handler ends with the consumer's end as its value, so that the first to see it waits
    // for the others to finish the deliveries they hold; a handler's error ends them all at once.
    const handler = this.handleInTurn(handle, Effect.succeed)
    return Effect.all(Array.from({ length: concurrency }, () => handler), { concurrency: "unbounded" }).pipe(
      Effect.flatMap(([end]) => Effect.fail(end!))
    )
  }

  /**
   * Runs `handle` on one delivery after another until the consumer ends, which it answers with
   * `atEnd`. A settlement refused as stale once the consumer has ended counts as that end: its
   * channel went, which is no failure of this handler (that would interrupt the others).
   */
  private handleInTurn<A, E2, R>(
    handle: (delivery: Delivery) => Effect.Effect<void, E2, R>,
    atEnd: (error: E) => Effect.Effect<A, E>
  ): Effect.Effect<A, E | E2, R> {
    return Effect.suspend(() => {
      const handler: Handler = { handling: undefined, ended: false }
      return Effect.forever(this.next(handle, handler), { disableYield: true }).pipe(
        Effect.onError(() => Effect.sync(() => giveBackHandling(handler))),
        Effect.catchIf(
          (error) => this.end !== undefined && (handler.ended || error instanceof AmqpStaleDelivery),
          () => atEnd(this.end!.error)
        )
      )
    })
  }

  offer(core: ChannelCore, delivery: Delivery): void {
    if (this.end !== undefined) return
    this.items.push(delivery)
    this.bytes += delivery.body.length
    if (
      this.paused === undefined && !this.stalled &&
      (this.size >= HIGH_WATER || this.bytes >= HIGH_WATER_BYTES)
    ) {
      this.paused = core
      core.connection.pauseReading(this)
      this.watchForStall()
    }
    this.queueWake(core)
  }

  /** Ends the consumer with `error`, once: it is taken after the deliveries still buffered. */
  fail(error: E): void {
    if (this.end !== undefined) return
    this.end = { error }
    this.queueWake(undefined)
  }

  /** While paused, checks every `STALL_MILLIS` that the consumer took something meanwhile. */
  private watchForStall(): void {
    const takenBefore = this.takenCount
    this.stallTimer = setTimeout(() => {
      this.stallTimer = undefined
      if (this.paused === undefined) return
      if (this.takenCount !== takenBefore) return this.watchForStall()
      this.stalled = true
      this.release()
    }, STALL_MILLIS)
    this.stallTimer.unref()
  }

  /**
   * Ends the consumer's side of the buffer: the connection reads again, and deliveries that were
   * buffered but never taken are handed back on the channel each came from (one from an
   * earlier channel incarnation is stale and the broker requeued it already).
   */
  readonly drain = (requeue: boolean): Effect.Effect<void> =>
    Effect.suspend(() => {
      this.release()
      const left = this.items.slice(this.head)
      this.items = noDeliveries()
      this.head = 0
      this.bytes = 0
      if (!requeue) return Effect.void
      for (const delivery of left) if (delivery instanceof DeliveryImpl) delivery.giveBack()
      return Effect.void
    })

  /** A delivery leaves the buffer: the connection reads again once it has room. */
  private take(): Delivery {
    const delivery = this.items[this.head]!
    this.head++
    if (this.head === this.items.length) {
      this.items = noDeliveries()
      this.head = 0
    } else if (this.head >= COMPACT_AT && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    this.takenCount++
    this.bytes -= delivery.body.length
    if (this.paused !== undefined && this.size <= LOW_WATER && this.bytes <= LOW_WATER_BYTES) {
      this.release()
    }
    return delivery
  }

  /**
   * The channel the deliveries came from has ended: those waiting to be acknowledged are dropped
   * now, not as they are taken (the broker has requeued them, and a consumer that takes nothing
   * would otherwise keep a prefetch of them per lost link). No-ack deliveries are kept: they are
   * the only copy. Reading resumes.
   */
  dropStale(): void {
    if (this.dropsStale) {
      const live = noDeliveries()
      for (const delivery of this.items.slice(this.head)) {
        if (!isStale(delivery)) live.push(delivery)
        else this.onDropped?.(delivery)
      }
      this.items = live
      this.head = 0
      this.bytes = 0
      for (const delivery of live) this.bytes += delivery.body.length
    }
    this.release()
  }

  /** Lets the connection read again, for example when the consumer ends. */
  release(): void {
    if (this.stallTimer !== undefined) clearTimeout(this.stallTimer)
    this.stallTimer = undefined
    const core = this.paused
    this.paused = undefined
    core?.connection.resumeReading(this)
  }
}
