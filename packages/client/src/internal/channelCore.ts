/**
 * The state machine under `AmqpChannel`: synchronous methods one at a time, publisher confirms,
 * consumers, and the ways a channel ends.
 *
 * Replies are matched in the connection's `data` callback, synchronously and in order, so a
 * `basic.consume-ok` registers its consumer before the first delivery behind it is routed. When
 * the channel ends, every waiter ends with the same cause: a pending method with it, a waiting
 * publish as `Unconfirmed`, a consumer stream with it.
 */
import { type Command, type Method, methodInfo, methodName, Methods, type MethodTag } from "@effect-amqp/protocol"
import { AmqpEncodeError, AmqpFrameError, type BasicProperties } from "@effect-amqp/protocol"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Semaphore from "effect/Semaphore"
import {
  AmqpChannelError,
  AmqpClosedError,
  AmqpConnectionError,
  AmqpPublishError,
  BlockedTimeout,
  ClosedByApplication,
  Returned,
  Unconfirmed
} from "../AmqpError.ts"
import { ConfirmTracker, PendingConfirm } from "./confirms.ts"
import { asEncodeError, type ChannelSink, type ConnectionCore } from "./connectionCore.ts"
import { ReturnListeners } from "./returns.ts"
import { Settlements } from "./settlements.ts"

export type ChannelFailure = AmqpChannelError | AmqpConnectionError

const EMPTY_BODY = new Uint8Array(0)

/** What a consumer gets from its channel. */
export interface ConsumerSink {
  /** The consumer reads a stream queue. */
  readonly fromStream: boolean
  readonly onDelivery: (command: Command) => void
  readonly onCancelledByBroker: () => void
  readonly onChannelClosed: (cause: ChannelFailure) => void
}

interface PendingRpc {
  readonly request: Method
  readonly expect: ReadonlyArray<MethodTag>
  readonly deferred: Deferred.Deferred<Command, ChannelFailure>
  readonly onReply: ((command: Command) => void) | undefined
}

export interface ChannelOptions {
  /** Publishes awaiting a confirm before further publishers wait. */
  readonly maxOutstandingConfirms: number
  /** How long a publish waits while the broker blocks the connection; undefined waits forever. */
  readonly blockedTimeout: number | undefined
}

/** A message's or a method's encoded frames, in one buffer or several to be written in order. */
type Frames = Buffer | ReadonlyArray<Uint8Array>

const noFrames: Frames = []

/**
 * How long a close waits for one more confirm from a broker that does not read the connection: the
 * acks it sent before it stopped reading arrive within this, those for publishes it never read never.
 */
const UNREAD_CONFIRM_QUIET = 250

/** What admitting a publish gives outside confirm mode, once it is written: nothing to wait for. */
const sentUnconfirmed: Effect.Effect<Effect.Effect<void, AmqpPublishError>> = Exit.succeed(Effect.void)

/** Why a publish can fail before it is sent. */
type PublishFailure = AmqpPublishError | AmqpClosedError | ChannelFailure | AmqpEncodeError

/** A publish let through to the socket, with the wait for its confirm. */
type Admission = Effect.Effect<Effect.Effect<void, AmqpPublishError>, PublishFailure>

const isAdmittedAtOnce = <A, E>(effect: Effect.Effect<A, E>): effect is Exit.Success<A, E> =>
  Exit.isExit(effect) && Exit.isSuccess(effect)

export class ChannelCore implements ChannelSink {
  readonly id: number
  readonly connection: ConnectionCore
  readonly options: ChannelOptions
  state: "opening" | "open" | "closing" | "closed" = "opening"
  failure: ChannelFailure | undefined
  readonly ended = Deferred.makeUnsafe<ChannelFailure | AmqpClosedError>()
  readonly rpcLock = Semaphore.makeUnsafe(1)
  private pending: PendingRpc | undefined
  private closeOk = Deferred.makeUnsafe<void>()
  confirmMode = false
  readonly confirms = new ConfirmTracker()
  /** Confirm-window slots held: publishes awaiting a confirm, or about to be written. */
  private slots = 0
  /** Publishers waiting for a slot, first come first served. */
  private readonly slotWaiters: Array<Deferred.Deferred<void>> = []
  readonly consumers = new Map<string, ConsumerSink>()
  /** Tags of consumers whose `basic.consume` is on its way: taken, though not yet in `consumers`. */
  readonly startingTags = new Set<string>()
  /** Who hears of `basic.return`s, in confirm mode or not. */
  readonly returns = new ReturnListeners()
  /**
   * Added to the broker's delivery tags in what the application sees. A recovering channel gives
   * each incarnation the offset past every tag of the ones before, so a tag the application kept
   * from an earlier incarnation can be told from the new incarnation's tags, which start at 1.
   */
  tagOffset = 0
  /** The highest delivery tag the broker gave on this incarnation (a delivery or a `get-ok`). */
  lastDeliveryTag = 0
  /** The broker's delivery tags on this incarnation that no acknowledgement may name again. */
  readonly settlements = new Settlements()
  /** `tx.select` was sent: the broker holds this channel's publishes and acks until a commit. */
  transactional = false

  /** The sink this channel registered its id with, so that only it can free that id. */
  readonly sink: ChannelSink

  constructor(id: number, connection: ConnectionCore, options: ChannelOptions, sink: ChannelSink) {
    this.id = id
    this.sink = sink
    this.connection = connection
    this.options = options
    this.confirms.onSettled = (count) => {
      for (let i = 0; i < count; i++) this.releaseSlot()
    }
  }

  readonly awaitEnd: Effect.Effect<ChannelFailure | AmqpClosedError> = Effect.suspend(() => Deferred.await(this.ended))

  isClosed(): boolean {
    return this.state === "closed"
  }

  /**
   * Whether a method may still be sent: not once `channel.close` is on its way. The broker drops
   * what follows its close, but answers anything after our close with 504 CHANNEL_ERROR on
   * channel 0, which closes the whole connection.
   */
  acceptsMethods(): boolean {
    return this.state === "open"
  }

  closedError(): AmqpClosedError {
    return new AmqpClosedError({ what: "channel", cause: this.failure })
  }

  // -------------------------------------------------------------------------------------------
  // inbound
  // -------------------------------------------------------------------------------------------

  onCommand(command: Command): void {
    const method = command.method
    switch (method._tag) {
      case "basic.deliver": {
        this.lastDeliveryTag = method.deliveryTag
        if (this.recovering > 0) this.settlements.requeueOutstanding(method.deliveryTag)
        const consumer = this.consumers.get(method.consumerTag)
        if (consumer !== undefined) consumer.onDelivery(command)
        return
      }
      case "basic.ack":
      case "basic.nack":
        if (!this.confirmMode) return
        if (!this.confirms.names(method.deliveryTag, method.multiple)) {
          const named = `${method._tag} ${method.deliveryTag}${method.multiple ? " multiple" : ""}`
          const message = `${named} on channel ${this.id}, which published no such message`
          this.connection.violation(new AmqpFrameError({ replyCode: 503, message }))
          return
        }
        if (method._tag === "basic.ack") this.confirms.ack(method.deliveryTag, method.multiple)
        else this.confirms.nack(method.deliveryTag, method.multiple)
        return
      case "basic.return": {
        const returned = new Returned({
          replyCode: method.replyCode,
          replyText: method.replyText,
          exchange: method.exchange,
          routingKey: method.routingKey
        })
        const body = command.body ?? EMPTY_BODY
        if (this.confirmMode) this.confirms.returned(returned, body, command.properties ?? {})
        this.returns.returned({
          replyCode: method.replyCode,
          replyText: method.replyText,
          exchange: method.exchange,
          routingKey: method.routingKey,
          properties: command.properties ?? {},
          body
        })
        return
      }
      case "basic.cancel-ok":
        if (this.cancelsUnawaited.delete(method.consumerTag)) {
          this.consumers.delete(method.consumerTag)
          return
        }
        return this.onReply(command)
      case "basic.cancel": {
        const consumer = this.consumers.get(method.consumerTag)
        this.consumers.delete(method.consumerTag)
        if (!method.nowait) this.write(Methods.basicCancelOk({ consumerTag: method.consumerTag }))
        consumer?.onCancelledByBroker()
        return
      }
      case "channel.close": {
        // Answered in any state: when it crosses a close of ours, the broker still waits for it
        // (and answers ours with a close-ok of its own, which keeps the id taken until it comes).
        if (!this.connection.isClosed()) this.connection.writeMethod(this.id, Methods.channelCloseOk())
        // Freed before `fail` wakes the waiters: one may open the next channel at once.
        if (!this.closeSent || this.closeOkReceived) this.connection.releaseChannel(this.id, this.sink)
        this.fail(
          new AmqpChannelError({
            channel: this.id,
            replyCode: method.replyCode,
            replyText: method.replyText,
            classId: method.classId,
            methodId: method.methodId,
            method: methodName(method.classId, method.methodId)
          })
        )
        return
      }
      case "channel.close-ok":
        // One that answers no close of ours (a confused peer) must not stand in for the real one.
        if (!this.closeSent) return
        this.closeOkReceived = true
        Deferred.doneUnsafe(this.closeOk, Exit.void)
        if (this.state === "closed") {
          // It came after close stopped waiting: the peer answers again, and is done with the id.
          this.connection.peerUnresponsive = false
          this.releaseIdIfDone()
        }
        return
      case "channel.flow":
        this.write(Methods.channelFlowOk({ active: method.active }))
        return
      default:
        if (method._tag === "basic.get-ok") {
          this.lastDeliveryTag = method.deliveryTag
          if (this.recovering > 0) this.settlements.requeueOutstanding(method.deliveryTag)
        }
        return this.onReply(command)
    }
  }

  /** A reply to the synchronous method on its way, if it is one. */
  private onReply(command: Command): void {
    const pending = this.pending
    if (pending !== undefined && pending.expect.includes(command.method._tag)) {
      this.pending = undefined
      pending.onReply?.(command)
      this.answered?.(pending.request, command)
      Deferred.doneUnsafe(pending.deferred, Exit.succeed(command))
    }
  }

  /**
   * Hears of every synchronous method the broker answered with success, as the answer is routed:
   * whether or not its caller still waits (a recovering client records its topology so).
   */
  answered: ((request: Method, reply: Command) => void) | undefined

  onConnectionClosed(error: AmqpConnectionError): void {
    this.fail(error)
  }

  /** Ends the channel once: every waiter gets `cause`. */
  fail(cause: ChannelFailure): void {
    if (this.state === "closed") return
    this.state = "closed"
    this.failure = cause
    // Consumers hear of it first: that wakes no fiber at once, while completing a wait below can
    // run its fiber there and then, and a handler it releases may settle a delivery, which must
    // find its consumer ended already.
    const consumers = [...this.consumers.values()]
    this.consumers.clear()
    for (const consumer of consumers) consumer.onChannelClosed(cause)
    this.endCommit()
    Deferred.doneUnsafe(this.ended, Exit.succeed(cause))
    const draining = Array.from(this.drainWaiters)
    this.drainWaiters.clear()
    for (const wake of draining) wake()
    Deferred.doneUnsafe(this.closeOk, Exit.void)
    this.returns.end()
    const pending = this.pending
    this.pending = undefined
    if (pending !== undefined) Deferred.doneUnsafe(pending.deferred, Exit.fail(cause))
    // Take the slot waiters out first: woken, each finds the channel closed and frees its slot,
    // which must not hand the slot to the next waiter (one wake per waiter, no recursion).
    const waiters = this.slotWaiters.splice(0)
    this.confirms.failAll(cause)
    for (const waiter of waiters) Deferred.doneUnsafe(waiter, Exit.void)
  }

  // -------------------------------------------------------------------------------------------
  // outbound
  // -------------------------------------------------------------------------------------------

  /**
   * Writes a method of the channel's own (an answer, a reject), unless `channel.close` has gone
   * out: RabbitMQ answers anything after it but its close-ok with 504, closing the connection.
   */
  write(method: Method): void {
    if (!this.acceptsMethods()) return
    if (this.committing !== undefined) return this.hold(this.connection.encoder.method(this.id, method))
    this.connection.writeMethod(this.id, method)
  }

  /** Writes a method whose latency hardly matters, batched with the tick's other writes. */
  writeLater(method: Method): void {
    if (!this.acceptsMethods()) return
    if (this.committing !== undefined) return this.hold(this.connection.encoder.method(this.id, method))
    this.connection.writeMethodLater(this.id, method)
  }

  /**
   * Sends back to its queue a delivery the application will not settle (reject with requeue). In tx
   * mode that reject belongs to the transaction: it is sent again after each rollback, and takes
   * effect with the next commit.
   *
   * A stream requeues nothing, and RabbitMQ answers a reject of a stream's delivery by closing the
   * connection (540): one `fromStream` is acknowledged instead, which returns the consumer's
   * credit. The message stays in the stream all the same.
   */
  giveBack(deliveryTag: number, fromStream: boolean): void {
    if (!this.acceptsMethods()) return
    this.settlements.giveBack(deliveryTag, fromStream)
    this.writeGiveBack(deliveryTag, fromStream)
  }

  private writeGiveBack(deliveryTag: number, fromStream: boolean): void {
    if (fromStream) this.writeAck(deliveryTag, false)
    else this.write(Methods.basicReject({ deliveryTag, requeue: true }))
  }

  /**
   * Queues a `basic.ack` whose tag the settlements already record. One with every tag below it
   * settled goes with `multiple`, which then means the same, so that the next such ack can raise
   * its tag while it waits.
   */
  writeAck(deliveryTag: number, multiple: boolean): void {
    if (this.settlements.isSettledThrough(deliveryTag)) this.writeAckThrough(deliveryTag)
    else this.writeLater(Methods.basicAck({ deliveryTag, multiple }))
  }

  /** `tx.rollback` went out: the deliveries handed back in the transaction are handed back again. */
  rolledBack(): void {
    for (const { fromStream, tag } of this.settlements.rollback()) this.writeGiveBack(tag, fromStream)
  }

  /** `basic.recover`s sent whose recover-ok has not come. */
  private recovering = 0

  /**
   * Whether a `basic.recover` would reach a stream's delivery: one unsettled, or one a stream
   * consumer of the channel may have on its way.
   */
  recoverReachesStream(): boolean {
    if (this.settlements.namesStreamDelivery(this.lastDeliveryTag, true)) return true
    for (const consumer of this.consumers.values()) if (consumer.fromStream) return true
    return false
  }

  /** `basic.recover` went out: every delivery received so far is requeued, acked or not. */
  beginRecover(): void {
    this.recovering++
    this.settlements.requeueOutstanding(this.lastDeliveryTag)
  }

  /** Its recover-ok came: what arrived before it was sent before the broker read the recover. */
  endRecover(): void {
    this.recovering--
    this.settlements.requeueOutstanding(this.lastDeliveryTag)
  }

  /** Tags of consumers cancelled with nobody waiting for the cancel-ok: it is taken here. */
  private readonly cancelsUnawaited = new Set<string>()

  /**
   * Cancels a consumer whose starter has gone, with nothing waiting: its sink turns away what
   * still arrives for it until the cancel-ok, after which the broker sends it nothing more, and
   * the cancel-ok is taken by its tag, not as the reply to a method of the application.
   */
  cancelUnawaited(consumerTag: string): void {
    if (!this.acceptsMethods()) return
    this.write(Methods.basicCancel({ consumerTag, nowait: false }))
    this.cancelsUnawaited.add(consumerTag)
  }

  /** True for a tag being cancelled so: a new consumer may take it (its consume goes after the cancel). */
  isCancelledUnawaited(consumerTag: string): boolean {
    return this.cancelsUnawaited.has(consumerTag)
  }

  /** Acknowledges every delivery up to `deliveryTag`, all of them settled, on the next tick. */
  writeAckThrough(deliveryTag: number): void {
    if (!this.acceptsMethods()) return
    if (this.committing !== undefined) {
      return this.hold(this.connection.encoder.method(this.id, Methods.basicAck({ deliveryTag, multiple: true })))
    }
    this.connection.writeAckThrough(this.id, deliveryTag)
  }

  /**
   * Set from a `tx.commit` going out until its reply. RabbitMQ takes no other method on the
   * channel meanwhile (it closes the whole connection with 504), but for `channel.close`: what the
   * channel would write waits here in order, and publishes wait before they are admitted.
   */
  private committing: { readonly done: Deferred.Deferred<void>; readonly held: Array<Frames> } | undefined

  /** `tx.commit` went out. */
  beginCommit(): void {
    this.committing = { done: Deferred.makeUnsafe<void>(), held: [] }
  }

  /**
   * Its reply came, or the channel ended: what waited is written, unless the channel is closing
   * (the broker answers anything after our `channel.close` with 504) or closed.
   */
  endCommit(): void {
    const commit = this.committing
    if (commit === undefined) return
    this.committing = undefined
    if (this.state === "open") { for (const frames of commit.held) this.writeFrames(frames) }
    Deferred.doneUnsafe(commit.done, Exit.void)
  }

  private hold(frames: Frames): void {
    this.committing?.held.push(frames)
  }

  /** Waits while a `tx.commit` is on its way. */
  private readonly committed: Effect.Effect<void> = Effect.suspend(() =>
    this.committing === undefined ? Effect.void : Deferred.await(this.committing.done)
  )

  /**
   * Sends a synchronous method and waits for its reply; one at a time per channel, in the order
   * callers arrived. `onReply` runs synchronously as the reply is routed.
   */
  rpc(
    method: Method,
    onReply?: (command: Command) => void,
    onSent?: () => void
  ): Effect.Effect<Command, ChannelFailure | AmqpClosedError | AmqpEncodeError> {
    const expect = methodInfo[method._tag].responses
    const send = Effect.suspend((): Effect.Effect<Command, ChannelFailure | AmqpClosedError | AmqpEncodeError> => {
      if (this.state === "closed" || this.state === "closing") return Effect.fail(this.closedError())
      const frame = this.connection.encodeMethod(this.id, method)
      if (frame instanceof AmqpEncodeError) return Effect.fail(frame)
      const deferred = Deferred.makeUnsafe<Command, ChannelFailure>()
      this.pending = { request: method, expect, deferred, onReply }
      this.connection.transport.write(frame)
      onSent?.()
      return Deferred.await(deferred)
    })
    return this.rpcLock.withPermit(
      Effect.suspend(() => {
        // A caller interrupted while waiting leaves its reply owed: the broker still sends it, and
        // it must not be taken for the reply to the next method.
        const owed = this.pending
        return owed === undefined ? send : Effect.andThen(Effect.exit(Deferred.await(owed.deferred)), send)
      })
    )
  }

  // -------------------------------------------------------------------------------------------
  // publishing
  // -------------------------------------------------------------------------------------------

  /** Waits while the broker blocks the connection, with the channel's deadline. */
  private readonly unblocked: Effect.Effect<void, AmqpPublishError> = Effect.suspend(() => {
    const connection = this.connection
    const reason = connection.blockedReason
    if (reason === undefined) return Effect.void
    const timeout = this.options.blockedTimeout
    const wait = Effect.raceFirst(connection.unblockedSignal, Effect.asVoid(Deferred.await(this.ended)))
    if (timeout === undefined) return wait
    return wait.pipe(
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () =>
          Effect.fail(new AmqpPublishError({ reason: new BlockedTimeout({ reason, afterMillis: timeout }) }))
      })
    )
  })

  /** Takes a confirm-window slot, waiting in line when the window is full. */
  private readonly acquireSlot: Effect.Effect<void> = Effect.suspend(() => {
    if (this.slots < this.options.maxOutstandingConfirms && this.slotWaiters.length === 0) {
      this.slots++
      return Effect.void
    }
    const waiter = Deferred.makeUnsafe<void>()
    this.slotWaiters.push(waiter)
    return Deferred.await(waiter).pipe(
      Effect.onInterrupt(() =>
        Effect.sync(() => {
          const index = this.slotWaiters.indexOf(waiter)
          if (index >= 0) this.slotWaiters.splice(index, 1)
          else this.releaseSlot()
        })
      )
    )
  })

  /** Frees a slot, handing it straight to the first waiter if there is one. */
  private releaseSlot(): void {
    const next = this.state === "closed" ? undefined : this.slotWaiters.shift()
    if (next !== undefined) Deferred.doneUnsafe(next, Exit.void)
    else if (this.slots > 0) this.slots--
  }

  publish(
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    properties: BasicProperties,
    mandatory: boolean
  ): Effect.Effect<void, PublishFailure> {
    return Effect.suspend(() => {
      // Admitted at once (the usual case), the result is already there: no flatten to run.
      const admitted = this.admit(exchange, routingKey, body, properties, mandatory)
      return isAdmittedAtOnce(admitted) ? admitted.value : Effect.flatten(admitted)
    })
  }

  /**
   * Publishes once admitted (blocked, window and socket permitting) and returns at once with an
   * effect that waits for the confirm, so one fiber can keep a whole window in flight.
   */
  publishAsync(
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    properties: BasicProperties,
    mandatory: boolean
  ): Admission {
    return Effect.suspend(() => this.admit(exchange, routingKey, body, properties, mandatory))
  }

  /**
   * Writes the publish now when nothing holds it, else waits until it may go: either way the
   * result is the wait for its confirm (`sentUnconfirmed` when there is none). Written at once,
   * the result is an `Exit`.
   */
  private admit(
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    properties: BasicProperties,
    mandatory: boolean
  ): Admission {
    if (!this.acceptsMethods()) return Effect.fail(this.closedError())
    const connection = this.connection
    const transport = connection.transport
    const encoder = connection.encoder
    const ready = connection.state === "open" && connection.blockedReason === undefined && transport.isOpen() &&
      !transport.congested() && this.committing === undefined
    const slotFree = this.slots < this.options.maxOutstandingConfirms && this.slotWaiters.length === 0
    // Encoded before it waits for anything, so that a value the encoder refuses fails this
    // publish alone, holding no confirm slot. One sent at once whose body the encoder copies is
    // written as its place in the encoder's slab, with no view made of it.
    let inSlab = -1
    let frames: Frames = noFrames
    try {
      if (ready && (slotFree || !this.confirmMode)) {
        inSlab = encoder.publishToSlab(this.id, exchange, routingKey, mandatory, properties, body)
      }
      if (inSlab < 0) frames = encoder.publish(this.id, exchange, routingKey, mandatory, properties, body)
    } catch (error) {
      return Effect.fail(asEncodeError(error))
    }
    if (inSlab >= 0) {
      if (!this.confirmMode) {
        transport.writeRange(encoder.slab, inSlab, encoder.slabEnd)
        return sentUnconfirmed
      }
      this.slots++
      const confirmed = this.expectConfirm(exchange, routingKey, body, properties, mandatory)
      transport.writeRange(encoder.slab, inSlab, encoder.slabEnd)
      return Exit.succeed(confirmed)
    }
    if (!this.confirmMode) {
      if (ready) {
        this.writeFrames(frames)
        return sentUnconfirmed
      }
      return this.committed.pipe(
        Effect.andThen(this.unblocked),
        Effect.andThen(this.writable),
        Effect.andThen(Effect.suspend(() => this.writeMessage(frames))),
        Effect.as(Effect.void)
      )
    }
    if (ready && slotFree) {
      this.slots++
      return Exit.succeed(this.sendConfirmed(frames, exchange, routingKey, body, properties, mandatory))
    }
    // A publish given up or failed between taking its slot and sending (while the socket drains)
    // sent nothing: the slot goes back.
    return this.committed.pipe(
      Effect.andThen(this.unblocked),
      Effect.andThen(this.acquireSlot),
      Effect.andThen(this.writable.pipe(Effect.onError(() => Effect.sync(() => this.releaseSlot())))),
      Effect.andThen(Effect.sync(() => this.sendConfirmed(frames, exchange, routingKey, body, properties, mandatory)))
    )
  }

  /**
   * Waits until the socket takes more, or the channel ends. A socket that closed sends nothing
   * more, though the connection may not have heard of it yet, and after the connection's
   * `connection.close` the broker reads nothing more: the publish then waits for the channel to
   * end with the connection, and fails as never sent, with why.
   */
  private readonly writable: Effect.Effect<void, AmqpPublishError | AmqpClosedError> = Effect.suspend(() => {
    const connection = this.connection
    const transport = connection.transport
    if (transport.congested() && this.state !== "closed") return Effect.andThen(this.drainedOrEnded, this.writable)
    if (!this.acceptsMethods()) return Effect.fail(this.unsent())
    if (transport.isOpen() && connection.state === "open") return Effect.void
    return Effect.andThen(Deferred.await(this.ended), Effect.suspend(() => Effect.fail(this.unsent())))
  })

  /** Publishers waiting for the socket to drain, woken as well when the channel ends. */
  private readonly drainWaiters = new Set<() => void>()

  /**
   * Waits until the socket drains below its limit or closes, or the channel ends: one callback
   * the transport and the channel's end both call, so that a congested publisher costs no fibers.
   */
  private readonly drainedOrEnded: Effect.Effect<void> = Effect.callback((resume) => {
    const wake = () => {
      takeBack()
      this.drainWaiters.delete(wake)
      resume(Effect.void)
    }
    const takeBack = this.connection.transport.whenDrained(wake)
    this.drainWaiters.add(wake)
    return Effect.sync(() => {
      takeBack()
      this.drainWaiters.delete(wake)
    })
  })

  /** Sends a publish that holds a window slot and returns the wait for its confirm. */
  private sendConfirmed(
    frames: Frames,
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    properties: BasicProperties,
    mandatory: boolean
  ): Effect.Effect<void, AmqpPublishError> {
    const confirmed = this.expectConfirm(exchange, routingKey, body, properties, mandatory)
    this.writeFrames(frames)
    return confirmed
  }

  /** Counts a publish about to be written in confirm mode; returns the wait for its confirm. */
  private expectConfirm(
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    properties: BasicProperties,
    mandatory: boolean
  ): Effect.Effect<void, AmqpPublishError> {
    const entry = new PendingConfirm(
      exchange,
      routingKey,
      mandatory,
      mandatory ? body : undefined,
      mandatory ? properties : undefined
    )
    this.confirms.add(entry)
    return entry.wait
  }

  /** The outcome of a publish that never left because the channel ended while it waited. */
  private unsent(): AmqpPublishError | AmqpClosedError {
    const cause = this.failure
    if (cause === undefined) return this.closedError()
    return new AmqpPublishError({ reason: new Unconfirmed({ cause, sent: false }) })
  }

  private writeMessage(frames: Frames): Effect.Effect<void, AmqpPublishError | AmqpClosedError> {
    if (!this.acceptsMethods()) return Effect.fail(this.unsent())
    // Admitted before confirm.select went out, sent after it: the broker numbers it all the same.
    if (this.confirmMode) this.confirms.skip()
    this.writeFrames(frames)
    return Effect.void
  }

  private writeFrames(frames: Frames): void {
    if (this.committing !== undefined) return this.hold(frames)
    const transport = this.connection.transport
    if (frames instanceof Uint8Array) transport.write(frames)
    else transport.writev(frames)
  }

  // -------------------------------------------------------------------------------------------
  // closing
  // -------------------------------------------------------------------------------------------

  /**
   * Closes the channel politely: consumers stop, outstanding confirms get `closeTimeout` to
   * arrive, then `channel.close` and its `close-ok` (bounded). The id is freed with the `close-ok`:
   * when it has not come in time, the id stays taken until it does, so that a new channel cannot
   * open on an id the broker still holds (which it answers with 504, closing the connection).
   * Once the peer has let one `close-ok` time out, or while it blocks the connection (and so may
   * not read it), closes send theirs without waiting.
   */
  readonly close: Effect.Effect<void> = Effect.suspend(() => {
    if (this.state === "closed") {
      this.releaseIdIfDone()
      return Effect.void
    }
    // A close already under way (the application's and a scope's at once) is waited for, not
    // sent again: a second channel.close makes RabbitMQ close the connection with 504.
    if (this.closing !== undefined) return Deferred.await(this.closing)
    const closing = Deferred.makeUnsafe<void>()
    this.closing = closing
    const connection = this.connection
    const timeout = connection.options.closeTimeout
    return Effect.gen({ self: this }, function*() {
      const cause = new AmqpClosedError({ what: "channel", cause: undefined })
      for (const consumer of this.consumers.values()) consumer.onChannelClosed(cause as never)
      this.consumers.clear()
      if (this.confirmMode && this.confirms.outstanding > 0) {
        yield* this.awaitConfirmsDrained.pipe(Effect.timeoutOption(timeout))
      }
      if (this.state !== "closed") {
        this.state = "closing"
        this.closeSent = true
        connection.writeMethod(
          this.id,
          Methods.channelClose({ replyCode: 200, replyText: "Goodbye", classId: 0, methodId: 0 })
        )
        if ((yield* connection.awaitCloseAnswer(this.closeOk)) === "timedOut") connection.peerUnresponsive = true
      }
      this.fail(connection.error(new ClosedByApplication({ channel: this.id })))
      this.releaseIdIfDone()
    }).pipe(Effect.ensuring(Effect.sync(() => Deferred.doneUnsafe(closing, Exit.void))), Effect.uninterruptible)
  })

  /** Done when the close under way has finished. */
  private closing: Deferred.Deferred<void> | undefined

  /** Our `channel.close` went out; `closeOkReceived` once its `close-ok` came back. */
  private closeSent = false
  private closeOkReceived = false

  /**
   * Frees the id once the broker is done with it: the channel is closed, and a close of ours, if
   * one went out, has had its `close-ok`. Until then the id stays taken, so that a late `close-ok`
   * cannot reach a new channel on it, nor a `channel.open` an id the broker still holds (504).
   */
  private releaseIdIfDone(): void {
    if (this.state === "closed" && (!this.closeSent || this.closeOkReceived)) {
      this.connection.releaseChannel(this.id, this.sink)
    }
  }

  /**
   * Waits until no confirm is outstanding. While the broker does not read the connection (it
   * blocks it, or was taken for hung), only the confirms already on their way can still come: the
   * wait ends once none has come for `UNREAD_CONFIRM_QUIET` milliseconds.
   */
  private readonly awaitConfirmsDrained: Effect.Effect<void> = Effect.suspend(() => {
    let outstanding = this.confirms.outstanding
    let changedAt = Date.now()
    const poll: Effect.Effect<void> = Effect.suspend(() => {
      if (this.confirms.outstanding === 0 || this.state === "closed") return Effect.void
      if (this.confirms.outstanding !== outstanding) {
        outstanding = this.confirms.outstanding
        changedAt = Date.now()
      } else if (this.connection.unread && Date.now() - changedAt >= UNREAD_CONFIRM_QUIET) {
        return Effect.void
      }
      return Effect.andThen(Effect.sleep(5), poll)
    })
    return poll
  })
}
