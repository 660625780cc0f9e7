/**
 * `AmqpChannel`: a scoped channel on an `AmqpConnection`, with every operation of the protocol
 * typed: exchanges, queues, bindings, qos, publishing (with confirms), consuming as a `Stream`,
 * `basic.get`, acknowledgements, transactions.
 *
 * One synchronous method is in flight per channel; concurrent callers wait their turn in order.
 * A channel error from the broker (404, 406, 403, 405 ...) ends this channel with an
 * `AmqpChannelError`; the connection and its other channels carry on. Closing the scope stops the
 * consumers, lets outstanding confirms arrive (bounded), then sends `channel.close`.
 *
 * @since 0.1.0
 */
import { type BasicProperties, type Command, type FieldTable, Methods } from "@effect-amqp/protocol"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { AmqpConnection } from "./AmqpConnection.ts"
import {
  AmqpChannelLimit,
  AmqpClosedError,
  AmqpConfigError,
  type AmqpConnectionError,
  AmqpConsumerCancelled,
  type AmqpConsumerTagInUse,
  type AmqpEncodeError,
  type AmqpPublishError,
  AmqpStreamRefused
} from "./AmqpError.ts"
import { ChannelCore, type ChannelFailure } from "./internal/channelCore.ts"
import {
  type AckError,
  acknowledge,
  type ConsumeOptions,
  type ConsumeWithOptions,
  type Delivery,
  DeliveryBuffer,
  makeDelivery,
  startConsumer
} from "./internal/consumer.ts"
import { type ReturnedMessage, returnsStream } from "./internal/returns.ts"

export type { AckError, ConsumeOptions, ConsumeWithOptions, Delivery } from "./internal/consumer.ts"
export type { ReturnedMessage } from "./internal/returns.ts"

/**
 * The ways an operation on a channel can fail: the broker closed the channel, the connection
 * ended, the channel was already closed, the connection had no channel id left to open it, or a
 * value given to the operation cannot be encoded or a consumer tag is already in use on the
 * channel (the one operation fails, nothing is sent).
 *
 * @since 0.1.0
 * @category errors
 */
export type ChannelError =
  | ChannelFailure
  | AmqpClosedError
  | AmqpChannelLimit
  | AmqpEncodeError
  | AmqpConsumerTagInUse

/**
 * `basic.get`'s message, with the number of messages left in the queue.
 *
 * @since 0.1.0
 * @category models
 */
export interface GetResult extends Delivery {
  readonly messageCount: number
}

/**
 * An exchange type: RabbitMQ's four, or a plugin's (`x-delayed-message`, `x-consistent-hash`).
 * RabbitMQ answers a type it does not know by closing the whole connection with 503.
 *
 * @since 0.1.0
 * @category models
 */
export type ExchangeType = "direct" | "fanout" | "topic" | "headers" | (string & {})

/**
 * @since 0.1.0
 * @category models
 */
export interface ExchangeDeclareOptions {
  readonly passive?: boolean
  readonly durable?: boolean
  readonly autoDelete?: boolean
  readonly internal?: boolean
  readonly arguments?: FieldTable
}

/**
 * @since 0.1.0
 * @category models
 */
export interface QueueDeclareOptions {
  readonly passive?: boolean
  readonly durable?: boolean
  readonly exclusive?: boolean
  readonly autoDelete?: boolean
  /** For example `x-queue-type`, `x-message-ttl`, `x-dead-letter-exchange`, `x-max-length`. */
  readonly arguments?: FieldTable
}

/**
 * @since 0.1.0
 * @category models
 */
export interface QueueDeclareOk {
  readonly queue: string
  readonly messageCount: number
  readonly consumerCount: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PublishOptions {
  readonly mandatory?: boolean
  readonly properties?: BasicProperties
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ChannelOptions {
  /** Publishes awaiting a confirm before more publishers wait (confirm mode): 1 or more. Default 1,000. */
  readonly maxOutstandingConfirms?: number
  /** Milliseconds a publish waits while the broker blocks the connection, 0 or more. Default: no deadline. */
  readonly blockedTimeout?: number
}

/**
 * What makes channel options unusable, if anything: a confirm window that admits no publish would
 * hold every publish forever.
 *
 * @internal
 */
export const invalidChannelOptions = (options: ChannelOptions): AmqpConfigError | undefined => {
  const { blockedTimeout, maxOutstandingConfirms } = options
  const problem = maxOutstandingConfirms !== undefined &&
      !(Number.isSafeInteger(maxOutstandingConfirms) && maxOutstandingConfirms >= 1)
    ? `maxOutstandingConfirms must be a whole number of at least 1, got ${maxOutstandingConfirms}`
    : blockedTimeout !== undefined && !(blockedTimeout >= 0)
    ? `blockedTimeout must be 0 or more milliseconds, got ${blockedTimeout}`
    : undefined
  return problem === undefined ? undefined : new AmqpConfigError({ message: `invalid channel options: ${problem}` })
}

/**
 * Runs `consume` with a `consumeWith` concurrency, or fails with `AmqpConfigError` when it is not
 * a whole number from 1.
 *
 * @internal
 */
export const withConcurrency = <A, E, R>(
  concurrency: number,
  consume: (handlers: number) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | AmqpConfigError, R> =>
  Number.isSafeInteger(concurrency) && concurrency >= 1
    ? consume(concurrency)
    : Effect.fail(new AmqpConfigError({ message: `invalid consumeWith concurrency: ${concurrency}` }))

/**
 * @since 0.1.0
 * @category models
 */
export interface AmqpChannel {
  readonly id: number
  readonly exchangeDeclare: (
    exchange: string,
    type: ExchangeType,
    options?: ExchangeDeclareOptions
  ) => Effect.Effect<void, ChannelError>
  readonly exchangeDelete: (
    exchange: string,
    options?: { readonly ifUnused?: boolean }
  ) => Effect.Effect<void, ChannelError>
  readonly exchangeBind: (
    destination: string,
    source: string,
    routingKey: string,
    args?: FieldTable
  ) => Effect.Effect<void, ChannelError>
  readonly exchangeUnbind: (
    destination: string,
    source: string,
    routingKey: string,
    args?: FieldTable
  ) => Effect.Effect<void, ChannelError>
  /** Declares a queue; an empty name asks the server to name it. */
  readonly queueDeclare: (queue?: string, options?: QueueDeclareOptions) => Effect.Effect<QueueDeclareOk, ChannelError>
  readonly queueBind: (
    queue: string,
    exchange: string,
    routingKey: string,
    args?: FieldTable
  ) => Effect.Effect<void, ChannelError>
  readonly queueUnbind: (
    queue: string,
    exchange: string,
    routingKey: string,
    args?: FieldTable
  ) => Effect.Effect<void, ChannelError>
  /** Returns the number of messages purged. */
  readonly queuePurge: (queue: string) => Effect.Effect<number, ChannelError>
  /** Returns the number of messages deleted with the queue. */
  readonly queueDelete: (
    queue: string,
    options?: { readonly ifUnused?: boolean; readonly ifEmpty?: boolean }
  ) => Effect.Effect<number, ChannelError>
  readonly qos: (
    prefetchCount: number,
    options?: { readonly prefetchSize?: number; readonly global?: boolean }
  ) => Effect.Effect<void, ChannelError>
  /** Puts the channel in confirm mode: every publish then waits for the broker's ack. */
  readonly confirmSelect: Effect.Effect<void, ChannelError>
  /**
   * Publishes a message. In confirm mode it completes when the broker confirms it, and fails with
   * `AmqpPublishError` when nacked, returned (mandatory and unroutable) or left unconfirmed; in
   * either mode, when the broker blocks the connection beyond the channel's `blockedTimeout`.
   *
   * A body over 16 KiB is not copied: the socket reads it after this returns, as Node's
   * `socket.write` does, so the buffer must not be changed afterwards (give each message its own).
   * A property the protocol cannot carry fails with `AmqpEncodeError` and sends nothing.
   */
  readonly publish: (
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    options?: PublishOptions
  ) => Effect.Effect<void, AmqpPublishError | ChannelError>
  /**
   * Publishes and returns as soon as the message is handed to the socket, with an effect that
   * waits for its confirm: one fiber can keep a whole confirm window in flight. Outside confirm
   * mode the inner effect succeeds at once. The body is handled as by `publish`.
   */
  readonly publishAsync: (
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    options?: PublishOptions
  ) => Effect.Effect<Effect.Effect<void, AmqpPublishError>, AmqpPublishError | ChannelError>
  /** Consumes a queue as a stream; ending the stream or its scope sends `basic.cancel`. */
  readonly consume: (
    queue: string,
    options?: ConsumeOptions
  ) => Stream.Stream<Delivery, ChannelError | AmqpConsumerCancelled>
  /**
   * Consumes a queue by running `handle` on each delivery in turn, or on up to `concurrency` at
   * once: the consumer of `consume` without a stream in between, for throughput. It runs until
   * interrupted, which sends `basic.cancel` and requeues what was buffered, or until the consumer
   * or a handler fails (a handler's failure interrupts the others). The delivery of a handler that
   * fails or is interrupted is requeued too, unless the handler settled it. A stream's deliveries
   * (a consumer started with `x-stream-offset`) are acknowledged instead, as a stream answers a
   * reject by closing the connection. A `concurrency` that is not a whole number from 1 fails
   * with `AmqpConfigError` before anything is sent.
   */
  readonly consumeWith: <E, R>(
    queue: string,
    handle: (delivery: Delivery) => Effect.Effect<void, E, R>,
    options?: ConsumeWithOptions
  ) => Effect.Effect<void, E | ChannelError | AmqpConsumerCancelled | AmqpConfigError, R>
  /**
   * The messages the broker returns as unroutable (mandatory publishes), in confirm mode or not,
   * from the moment the stream starts; it ends when the channel does.
   */
  readonly returns: Stream.Stream<ReturnedMessage>
  /**
   * `basic.get`: one message, or none. Refused with `AmqpStreamRefused` for a queue the connection
   * knows as a stream (declared with `x-queue-type: stream`, or consumed with `x-stream-offset`).
   */
  readonly get: (
    queue: string,
    options?: { readonly noAck?: boolean }
  ) => Effect.Effect<Option.Option<GetResult>, ChannelError | AmqpStreamRefused>
  /** Acknowledges by delivery tag (prefer `delivery.ack()`). */
  readonly ack: (deliveryTag: number, multiple?: boolean) => Effect.Effect<void, AckError | ChannelError>
  readonly nack: (
    deliveryTag: number,
    multiple?: boolean,
    requeue?: boolean
  ) => Effect.Effect<void, AckError | ChannelError>
  readonly reject: (deliveryTag: number, requeue?: boolean) => Effect.Effect<void, AckError | ChannelError>
  /**
   * `basic.recover`: redeliver every unacknowledged message. Refused with `AmqpStreamRefused`
   * on a channel that runs a stream consumer or holds a stream's unsettled deliveries.
   */
  readonly recover: (requeue?: boolean) => Effect.Effect<void, ChannelError | AmqpStreamRefused>
  readonly txSelect: Effect.Effect<void, ChannelError>
  /**
   * `tx.commit`. A commit whose `commit-ok` never comes because the channel or connection ended
   * first may still have taken effect: RabbitMQ commits a `tx.commit` it has read even when it
   * closes the channel before answering. Cut off by the application's own close of the channel,
   * it fails with `ClosedByApplication` naming the channel.
   */
  readonly txCommit: Effect.Effect<void, ChannelError>
  readonly txRollback: Effect.Effect<void, ChannelError>
  /** Waits until the channel has ended and returns why. */
  readonly closed: Effect.Effect<ChannelError>
  readonly isOpen: Effect.Effect<boolean>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const AmqpChannel: Context.Service<AmqpChannel, AmqpChannel> = Context.Service<AmqpChannel>(
  "@effect-amqp/client/AmqpChannel"
)

/**
 * Opens a channel on `connection`; it closes with the scope. Options that cannot work fail with
 * `AmqpConfigError` before anything is sent.
 *
 * @since 0.1.0
 * @category constructors
 */
export function make(connection: AmqpConnection): Effect.Effect<AmqpChannel, ChannelError, Scope.Scope>
export function make(
  connection: AmqpConnection,
  options: ChannelOptions | undefined
): Effect.Effect<AmqpChannel, ChannelError | AmqpConfigError, Scope.Scope>
export function make(
  connection: AmqpConnection,
  options: ChannelOptions = {}
): Effect.Effect<AmqpChannel, ChannelError | AmqpConfigError, Scope.Scope> {
  return Effect.suspend((): Effect.Effect<AmqpChannel, ChannelError | AmqpConfigError, Scope.Scope> => {
    const invalid = invalidChannelOptions(options)
    return invalid !== undefined ? Effect.fail(invalid) : Effect.map(openCore(connection, options), makeChannel)
  }).pipe(Effect.withSpan("AmqpChannel.make"))
}

/**
 * Opens a channel and returns its state machine too, for the recovering channels.
 *
 * @internal
 */
export const openCore = (
  connection: AmqpConnection,
  options: ChannelOptions = {}
): Effect.Effect<ChannelCore, ChannelError, Scope.Scope> =>
  Effect.gen(function*() {
    const conn = connection.core
    const coreOptions = {
      maxOutstandingConfirms: options.maxOutstandingConfirms ?? 1000,
      blockedTimeout: options.blockedTimeout
    }
    const core = yield* Effect.acquireRelease(
      Effect.suspend((): Effect.Effect<ChannelCore, AmqpClosedError | AmqpChannelLimit> => {
        if (conn.isClosed()) return Effect.fail(new AmqpClosedError({ what: "connection", cause: conn.failure }))
        let opened: ChannelCore | undefined
        const sink = {
          onCommand: (command: Command) => opened!.onCommand(command),
          onConnectionClosed: (error: AmqpConnectionError) => opened!.onConnectionClosed(error)
        }
        const id = conn.allocateChannel(sink)
        if (id === undefined) return Effect.fail(new AmqpChannelLimit({ channelMax: conn.tuned.channelMax }))
        opened = new ChannelCore(id, conn, coreOptions, sink)
        return Effect.succeed(opened)
      }),
      (opened) => opened.close
    )
    // An open given up or refused closes the channel at once: its id is not held until the
    // caller's scope ends.
    yield* core.rpc(Methods.channelOpen()).pipe(Effect.onError(() => core.close))
    core.state = "open"
    return core
  })

/** The properties of a publish that gives none: one shared object, not one per message. */
const noProperties: BasicProperties = Object.freeze({})

/**
 * Wraps an open channel state machine in the public interface.
 *
 * @internal
 */
export const makeChannel = (core: ChannelCore): AmqpChannel => {
  const rpc = core.rpc.bind(core)

  // A consumer feeding a buffer, for as long as the scope lasts.
  const startBuffered = (queue: string, options: ConsumeOptions) =>
    Effect.gen(function*() {
      const buffer = new DeliveryBuffer<ChannelError | AmqpConsumerCancelled>({ noAck: options.noAck ?? false })
      const start = startConsumer(core, queue, options, {
        offer: (from, delivery) => buffer.offer(from, delivery),
        cancelledByBroker: (consumerTag) => buffer.fail(new AmqpConsumerCancelled({ consumerTag, queue })),
        channelClosed: (cause) => buffer.fail(cause)
      })
      yield* Effect.acquireRelease(
        // The wait for consume-ok may be given up: the consumer is then cancelled once it starts,
        // and what it delivered before goes back to the queue.
        Effect.interruptible(start).pipe(Effect.onInterrupt(() => buffer.drain(options.noAck !== true))),
        (consumer) =>
          Effect.gen(function*() {
            // Reading must go on for the cancel-ok to arrive: a buffer that paused it lets go first.
            buffer.release()
            yield* consumer.cancel
            yield* buffer.drain(options.noAck !== true)
          })
      )
      return buffer
    })

  return {
    id: core.id,
    consume: (queue, options = {}) =>
      Stream.unwrap(Effect.map(startBuffered(queue, options), (buffer) => buffer.stream)),
    returns: returnsStream(core.returns),
    // A handler's ack that found the channel gone fails as stale, which the buffer takes for the
    // consumer's end: `consumeWith` ends with why the channel went.
    consumeWith: (queue, handle, { concurrency = 1, ...options } = {}) =>
      withConcurrency(
        concurrency,
        (handlers) =>
          Effect.scoped(Effect.flatMap(startBuffered(queue, options), (buffer) => buffer.forEach(handle, handlers)))
      ),
    exchangeDeclare: (exchange, type, o = {}) =>
      Effect.asVoid(rpc(Methods.exchangeDeclare({
        exchange,
        type,
        passive: o.passive ?? false,
        durable: o.durable ?? false,
        autoDelete: o.autoDelete ?? false,
        internal: o.internal ?? false,
        arguments: o.arguments ?? {}
      }))),
    exchangeDelete: (exchange, o = {}) =>
      Effect.asVoid(rpc(Methods.exchangeDelete({ exchange, ifUnused: o.ifUnused ?? false }))),
    exchangeBind: (destination, source, routingKey, args = {}) =>
      Effect.asVoid(rpc(Methods.exchangeBind({ destination, source, routingKey, arguments: args }))),
    exchangeUnbind: (destination, source, routingKey, args = {}) =>
      Effect.asVoid(rpc(Methods.exchangeUnbind({ destination, source, routingKey, arguments: args }))),
    queueDeclare: (queue = "", o = {}) =>
      Effect.map(
        rpc(Methods.queueDeclare({
          queue,
          passive: o.passive ?? false,
          durable: o.durable ?? false,
          exclusive: o.exclusive ?? false,
          autoDelete: o.autoDelete ?? false,
          arguments: o.arguments ?? {}
        })),
        (reply) => {
          const m = reply.method as Extract<Command["method"], { _tag: "queue.declare-ok" }>
          // Declared (not passive) as it is, a queue is a stream exactly when declared as one.
          if (o.passive !== true) core.connection.knowQueueType(m.queue, o.arguments)
          return { queue: m.queue, messageCount: m.messageCount, consumerCount: m.consumerCount }
        }
      ),
    queueBind: (queue, exchange, routingKey, args = {}) =>
      Effect.asVoid(rpc(Methods.queueBind({ queue, exchange, routingKey, arguments: args }))),
    queueUnbind: (queue, exchange, routingKey, args = {}) =>
      Effect.asVoid(rpc(Methods.queueUnbind({ queue, exchange, routingKey, arguments: args }))),
    queuePurge: (queue) =>
      Effect.map(
        rpc(Methods.queuePurge({ queue })),
        (reply) => (reply.method as Extract<Command["method"], { _tag: "queue.purge-ok" }>).messageCount
      ),
    queueDelete: (queue, o = {}) =>
      Effect.map(
        rpc(Methods.queueDelete({ queue, ifUnused: o.ifUnused ?? false, ifEmpty: o.ifEmpty ?? false })),
        (reply) => {
          core.connection.streamQueues.delete(queue)
          return (reply.method as Extract<Command["method"], { _tag: "queue.delete-ok" }>).messageCount
        }
      ),
    qos: (prefetchCount, o = {}) =>
      Effect.asVoid(
        rpc(Methods.basicQos({ prefetchCount, prefetchSize: o.prefetchSize ?? 0, global: o.global ?? false }))
      ),
    // The broker numbers the publishes it reads after confirm.select, before its select-ok comes
    // (or whether or not the caller still waits for it): so does the channel.
    confirmSelect: Effect.asVoid(rpc(Methods.confirmSelect(), undefined, () => {
      core.confirmMode = true
    })),
    publish: (exchange, routingKey, body, o) =>
      core.publish(exchange, routingKey, body, o?.properties ?? noProperties, o?.mandatory ?? false),
    publishAsync: (exchange, routingKey, body, o) =>
      core.publishAsync(exchange, routingKey, body, o?.properties ?? noProperties, o?.mandatory ?? false),
    get: (queue, o = {}) =>
      Effect.suspend((): Effect.Effect<Option.Option<GetResult>, ChannelError | AmqpStreamRefused> => {
        if (core.connection.streamQueues.has(queue)) {
          return Effect.fail(new AmqpStreamRefused({ channel: core.id, operation: "basic.get", queue }))
        }
        const noAck = o.noAck ?? false
        // The tag of a get-ok routed but not yet handed to the caller, and whether the caller is
        // gone: a message whose caller has gone goes back to its queue, for unacknowledged it
        // would stay invisible to every consumer for as long as the channel lives.
        // A stream refuses basic.get, so what a get took is never a stream's.
        let unclaimed: number | undefined
        let abandoned = false
        const onReply = (reply: Command) => {
          if (reply.method._tag !== "basic.get-ok") return
          const deliveryTag = reply.method.deliveryTag
          // A no-ack delivery is settled as its get-ok is routed, even if the caller is gone by then.
          if (noAck) core.settlements.settle(deliveryTag, false)
          else if (abandoned) core.giveBack(deliveryTag, false)
          else unclaimed = deliveryTag
        }
        return rpc(Methods.basicGet({ queue, noAck }), onReply).pipe(
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              abandoned = true
              if (unclaimed !== undefined) core.giveBack(unclaimed, false)
              unclaimed = undefined
            })
          ),
          Effect.map((reply) => {
            unclaimed = undefined
            const m = reply.method
            if (m._tag !== "basic.get-ok") return Option.none()
            return Option.some(Object.assign(makeDelivery(core, reply, { ...m, consumerTag: "" }, noAck, false), {
              messageCount: m.messageCount
            }))
          })
        )
      }),
    ack: (deliveryTag, multiple = false) => acknowledge(core, "ack", deliveryTag, multiple, false),
    nack: (deliveryTag, multiple = false, requeue = true) => acknowledge(core, "nack", deliveryTag, multiple, requeue),
    reject: (deliveryTag, requeue = true) => acknowledge(core, "reject", deliveryTag, false, requeue),
    // Every delivery before the recover-ok is requeued (or, without requeue, delivered again).
    // The broker requeues what is outstanding as it reads the recover: from then on an ack of it
    // would close the channel with 406, so it is settled as the recover goes out, and so is each
    // delivery that was already on its way, as it arrives before the recover-ok.
    recover: (requeue = true) =>
      Effect.suspend((): Effect.Effect<void, ChannelError | AmqpStreamRefused> =>
        core.recoverReachesStream()
          ? Effect.fail(new AmqpStreamRefused({ channel: core.id, operation: "basic.recover", queue: undefined }))
          : Effect.asVoid(rpc(Methods.basicRecover({ requeue }), () => core.endRecover(), () => core.beginRecover()))
      ),
    txSelect: Effect.asVoid(rpc(Methods.txSelect(), undefined, () => {
      core.transactional = true
      core.settlements.select()
    })),
    txCommit: Effect.asVoid(rpc(Methods.txCommit(), () => core.endCommit(), () => {
      core.settlements.commit()
      core.beginCommit()
    })),
    txRollback: Effect.asVoid(rpc(Methods.txRollback(), undefined, () => core.rolledBack())),
    closed: Effect.suspend(() => core.awaitEnd),
    isOpen: Effect.sync(() => !core.isClosed())
  }
}

/**
 * A layer that opens one channel on the `AmqpConnection` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: ChannelOptions
): Layer.Layer<AmqpChannel, ChannelError | AmqpConfigError, AmqpConnection> =>
  Layer.effect(AmqpChannel, AmqpConnection.use((connection) => make(connection, options)))
