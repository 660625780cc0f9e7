/**
 * `AmqpClient`: a connection that heals itself. On an unexpected loss (I/O error, reset, heartbeat
 * timeout, `connection.close` from the broker) it reconnects under a `Schedule`, moving through the
 * host list, and recovers what the application declared: exchanges, queues (a server-named queue
 * gets its new name everywhere), bindings, qos, confirm mode and consumers.
 *
 * Channels and consumer streams from a client are handles that survive reconnects. Operations
 * made while the link is down wait for the next one, bounded by `linkTimeout`. A publish whose
 * confirm was lost with the link ends as `Unconfirmed`, unless the caller asked for a retry; an
 * acknowledgement of a delivery from before the reconnect is reported stale and never sent.
 * Each link lives in its own scope, so after any number of reconnects the process holds one
 * socket, one heartbeat fiber and one reader per client.
 *
 * A close the application asked for never triggers recovery, and neither does a failure the
 * policy gives up on: by default bad credentials, a forbidden vhost and TLS setup errors.
 *
 * @since 0.1.0
 */
import { type BasicProperties, type Method, type MethodTag, Typed } from "@effect-amqp/protocol"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as PubSub from "effect/PubSub"
import type * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import * as AmqpChannel from "./AmqpChannel.ts"
import * as AmqpConnection from "./AmqpConnection.ts"
import {
  AmqpChannelError,
  AmqpClosedError,
  AmqpConfigError,
  AmqpConnectionError,
  AmqpConsumerCancelled,
  AmqpEncodeError,
  AmqpPublishError,
  AmqpStaleDelivery
} from "./AmqpError.ts"
import * as ConnectionConfig from "./ConnectionConfig.ts"
import type { ConnectionOptions } from "./ConnectionConfig.ts"
import type { ChannelCore } from "./internal/channelCore.ts"
import {
  acknowledge,
  type ConsumeOptions,
  type ConsumerHandle,
  type Delivery,
  DeliveryBuffer,
  isStreamConsumer,
  startConsumer
} from "./internal/consumer.ts"
import { tracked } from "./internal/liveFibers.ts"
import { ReturnListeners, returnsStream } from "./internal/returns.ts"
import { Topology } from "./internal/topology.ts"

/**
 * What happens to a client, in order.
 *
 * @since 0.1.0
 * @category models
 */
export type LifecycleEvent =
  | { readonly _tag: "Connecting"; readonly host: string; readonly port: number; readonly attempt: number }
  | {
    readonly _tag: "AttemptFailed"
    readonly host: string
    readonly port: number
    readonly attempt: number
    readonly error: AmqpConnectionError
  }
  | { readonly _tag: "Connected"; readonly host: string; readonly port: number }
  | { readonly _tag: "Blocked"; readonly reason: string }
  | { readonly _tag: "Unblocked" }
  | { readonly _tag: "Disconnected"; readonly cause: AmqpConnectionError }
  | { readonly _tag: "Recovered"; readonly durationMillis: number }
  | { readonly _tag: "RecoveryStepFailed"; readonly step: string; readonly error: AmqpChannel.ChannelError }
  | { readonly _tag: "QueueRenamed"; readonly from: string; readonly to: string }
  | { readonly _tag: "GaveUp"; readonly cause: AmqpConnectionError }

/**
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions {
  /** The cluster's nodes; each attempt moves to the next. Defaults to the options' host and port. */
  readonly hosts?: ReadonlyArray<{ readonly host: string; readonly port: number }>
  /** Shuffle the host list once at start. */
  readonly shuffleHosts?: boolean
  /** When to try again after a failed attempt; it sees the typed cause. */
  readonly reconnect?: Schedule.Schedule<unknown, AmqpConnectionError>
  /** Milliseconds an operation waits for a live link while reconnecting. Default 30,000. */
  readonly linkTimeout?: number
  /**
   * Called with every lifecycle event as it happens, from the first connection attempt on: also
   * those of a first connect that ends in `GaveUp`, when `make` fails and there is no client to
   * subscribe to. It must not block; what it throws is ignored.
   */
  readonly onEvent?: (event: LifecycleEvent) => void
}

/**
 * Publish options of a client channel: `retry` republishes a message whose confirm was lost with
 * the link, under the schedule, with a stable `messageId` so consumers can drop duplicates.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientPublishOptions extends AmqpChannel.PublishOptions {
  readonly retry?: Schedule.Schedule<unknown, AmqpPublishError | AmqpChannel.ChannelError>
}

/**
 * A channel of a client: the `AmqpChannel` operations, surviving reconnects.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientChannel extends Omit<AmqpChannel.AmqpChannel, "publish"> {
  readonly publish: (
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    options?: ClientPublishOptions
  ) => Effect.Effect<void, AmqpPublishError | AmqpChannel.ChannelError>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ClientStats {
  readonly connected: boolean
  readonly reconnects: number
  readonly lastRecoveryMillis: number | undefined
  readonly host: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface AmqpClient {
  /** Opens a channel that is re-opened, with its qos, confirm mode and consumers, after a reconnect. */
  readonly channel: (
    options?: AmqpChannel.ChannelOptions
  ) => Effect.Effect<ClientChannel, AmqpChannel.ChannelError | AmqpConfigError, Scope.Scope>
  /** Lifecycle events from now on. */
  readonly events: Stream.Stream<LifecycleEvent>
  /** A subscription to lifecycle events that starts at once, for callers that must not miss any. */
  readonly subscribe: Effect.Effect<PubSub.Subscription<LifecycleEvent>, never, Scope.Scope>
  /** The current link, waiting for one while reconnecting. */
  readonly connection: Effect.Effect<AmqpConnection.AmqpConnection, AmqpClosedError>
  /**
   * Refreshes the credentials now and for every later reconnect; while the link is down, the next
   * connect logs in with them. One the broker or the encoder refuses (a reason over 255 bytes, a
   * secret too large for a frame) fails and changes nothing.
   */
  readonly updateSecret: (
    secret: Redacted.Redacted<string>,
    reason: string
  ) => Effect.Effect<void, AmqpConnectionError | AmqpClosedError | AmqpEncodeError>
  readonly stats: Effect.Effect<ClientStats>
}

/**
 * Exponential backoff from 100 ms, capped at 30 s, then jittered by ±20 % (so at most 36 s),
 * forever, except for failures a retry cannot fix (`AmqpConnectionError.isPermanent`).
 *
 * @since 0.1.0
 * @category schedules
 */
export const defaultReconnect: Schedule.Schedule<unknown, AmqpConnectionError> = Schedule.min([
  Schedule.exponential("100 millis"),
  Schedule.spaced("30 seconds")
]).pipe(
  Schedule.jittered,
  Schedule.setInputType<AmqpConnectionError>(),
  Schedule.while(({ input }) => !input.isPermanent)
)

/** A reconnected link lost this soon after going live counts as a failed attempt of the outage. */
const QUICK_LOSS_MILLIS = 250

const reconnects = Metric.counter("effect_amqp_reconnects_total", { description: "completed reconnects" })
const recoveryTime = Metric.timer("effect_amqp_recovery_duration", { description: "from loss to recovered" })

interface Link {
  readonly connection: AmqpConnection.AmqpConnection
  readonly scope: Scope.Closeable
  readonly host: string
  /** The secret it logged in with. */
  readonly secret: Redacted.Redacted<string>
}

/** Errors that mean an operation's wait for a link ran out: another try would only wait again. */
const linkWaits = new WeakSet<object>()

const linkWaitTimedOut = (cause: AmqpConnectionError | undefined): AmqpClosedError => {
  const error = new AmqpClosedError({ what: "connection", cause })
  linkWaits.add(error)
  return error
}

/** The link is down or was lost under an operation: a later link could serve it. */
const isLinkDown = (error: { readonly _tag: string }): boolean =>
  error._tag === "AmqpConnectionError" || error._tag === "AmqpClosedError"

/** The link died under an operation, which may be tried again on the next one. */
const isConnectionLoss = (error: { readonly _tag: string }): boolean => isLinkDown(error) && !linkWaits.has(error)

/**
 * The broker closed the connection for `method` itself (an unknown exchange type is 503): the next
 * link would get the same answer, and each try would take every channel of the client down with it.
 */
const brokerRefused = (error: { readonly _tag: string }, method: MethodTag): boolean =>
  error instanceof AmqpConnectionError && error.reason._tag === "ServerClosed" && error.reason.method === method

/** What is wrong with a `hosts` option, if anything. */
const invalidHosts = (hosts: ClientOptions["hosts"]): string | undefined => {
  if (hosts === undefined) return undefined
  if (hosts.length === 0) return "hosts is empty"
  for (const [i, { host, port }] of hosts.entries()) {
    if (typeof host !== "string" || host.trim() === "") return `hosts[${i}].host must be a host name or address`
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return `hosts[${i}].port must be an integer from 1 to 65535, got ${String(port)}`
    }
  }
  return undefined
}

/**
 * Connects (under the reconnect policy) and keeps the link alive until the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: ConnectionOptions,
  clientOptions: ClientOptions = {}
): Effect.Effect<AmqpClient, AmqpConnectionError | AmqpConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const invalid = invalidHosts(clientOptions.hosts)
    if (invalid !== undefined) return yield* new AmqpConfigError({ message: `invalid client options: ${invalid}` })
    const events = yield* Effect.acquireRelease(PubSub.unbounded<LifecycleEvent>(), PubSub.shutdown)
    const supervisor = new Supervisor(options, clientOptions, events)
    const fiber = yield* Effect.forkScoped(tracked("recovery", supervisor.run), { startImmediately: true })
    yield* Effect.addFinalizer(() => supervisor.stop.pipe(Effect.andThen(Fiber.interrupt(fiber))))
    yield* Deferred.await(supervisor.firstLink)
    return {
      channel: (channelOptions) => supervisor.channel(channelOptions ?? {}),
      events: Stream.fromPubSub(events),
      subscribe: PubSub.subscribe(events),
      connection: Effect.map(supervisor.awaitLink, (link) => link.connection),
      updateSecret: (secret, reason) => supervisor.updateSecret(secret, reason),
      stats: Effect.sync(() => supervisor.stats())
    } satisfies AmqpClient
  }).pipe(Effect.withSpan("AmqpClient.make"))

/**
 * The client as a service, for applications built from layers.
 *
 * @since 0.1.0
 * @category tags
 */
export const AmqpClient: Context.Service<AmqpClient, AmqpClient> = Context.Service<AmqpClient>(
  "@effect-amqp/client/AmqpClient"
)

/**
 * A layer that provides `AmqpClient` from options; the client closes with the layer's scope.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: ConnectionConfig.ConnectionOptionsInput,
  clientOptions?: ClientOptions
): Layer.Layer<AmqpClient, AmqpConnectionError | AmqpConfigError> =>
  Layer.effect(AmqpClient, Effect.flatMap(ConnectionConfig.make(options), (config) => make(config, clientOptions)))

/**
 * A layer that provides `AmqpClient` from `AMQP_URL`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (clientOptions?: ClientOptions): Layer.Layer<
  AmqpClient,
  AmqpConnectionError | AmqpConfigError
> => Layer.effect(AmqpClient, Effect.flatMap(ConnectionConfig.fromConfig, (config) => make(config, clientOptions)))

class Supervisor {
  readonly topology = new Topology()
  readonly channels = new Set<LogicalChannel>()
  readonly firstLink = Deferred.makeUnsafe<void, AmqpConnectionError>()
  private live = Deferred.makeUnsafe<Link, AmqpClosedError>()
  link: Link | undefined
  /** The link connected last, from its connect on, while `link` is set only once it is recovered. */
  private opened: Link | undefined
  stopped = false
  private readonly hosts: ReadonlyArray<{ readonly host: string; readonly port: number }>
  private attempt = 0
  private secret: Redacted.Redacted<string>
  /** The reason given with a secret updated while no link was up, sent when a link takes it. */
  private secretReason = ""
  private reconnectCount = 0
  private lastRecovery: number | undefined
  /** When the last link was lost, for the time its recovery took. */
  private lostAt: number | undefined
  /** Whether the last event about the current link's blocking was `Blocked`. */
  private blocked = false
  /** Auto-delete queues a recovery declared again, with the link it declared them on. */
  private readonly redeclaredOn = new Map<string, Link>()
  /** Auto-delete queues given up before their consumer started again: to delete, on this link or the next. */
  private readonly givenUp = new Set<string>()
  /** Why the link was last lost or given up, for the errors of operations that find it down. */
  lastCause: AmqpConnectionError | undefined
  readonly linkTimeout: number

  readonly options: ConnectionOptions
  readonly clientOptions: ClientOptions
  readonly events: PubSub.PubSub<LifecycleEvent>

  constructor(options: ConnectionOptions, clientOptions: ClientOptions, events: PubSub.PubSub<LifecycleEvent>) {
    this.options = options
    this.clientOptions = clientOptions
    this.events = events
    const hosts = clientOptions.hosts ?? [{ host: options.host, port: options.port }]
    this.hosts = clientOptions.shuffleHosts === true ? hosts.toSorted(() => Math.random() - 0.5) : hosts
    this.secret = options.password
    this.linkTimeout = clientOptions.linkTimeout ?? 30_000
  }

  emit(event: LifecycleEvent): void {
    try {
      this.clientOptions.onEvent?.(event)
    } catch {
      // A callback that throws must not stop the supervisor (and with it the first connect).
    }
    PubSub.publishUnsafe(this.events, event)
  }

  stats(): ClientStats {
    return {
      connected: this.link !== undefined,
      reconnects: this.reconnectCount,
      lastRecoveryMillis: this.lastRecovery,
      host: this.link?.host
    }
  }

  /** One connection attempt to the next host, in a scope of its own. */
  private readonly connectOnce: Effect.Effect<Link, AmqpConnectionError> = Effect.suspend(() => {
    const target = this.hosts[this.attempt % this.hosts.length]!
    this.attempt++
    const attempt = this.attempt
    this.emit({ _tag: "Connecting", host: target.host, port: target.port, attempt })
    const options = { ...this.options, host: target.host, port: target.port, password: this.secret }
    return Effect.gen({ self: this }, function*() {
      const scope = yield* Scope.make()
      // Closed on interruption too: the client's scope may close during the handshake.
      const exit = yield* Effect.exit(Scope.provide(AmqpConnection.make(options), scope)).pipe(
        Effect.onInterrupt(() => Scope.close(scope, Exit.void))
      )
      if (Exit.isFailure(exit)) {
        yield* Scope.close(scope, exit)
        const error = Cause.findErrorOption(exit.cause)
        if (error._tag === "Some") {
          this.lastCause = error.value
          this.emit({ _tag: "AttemptFailed", host: target.host, port: target.port, attempt, error: error.value })
        }
        return yield* Effect.failCause(exit.cause)
      }
      return { connection: exit.value, scope, host: target.host, secret: options.password }
    })
  })

  /**
   * Connects, recovers, waits for the loss, and again, until stopped or the policy gives up. Each
   * outage runs the reconnect policy afresh, so a single loss is retried at once.
   */
  readonly run: Effect.Effect<void> = Effect.gen({ self: this }, function*() {
    const policy = this.clientOptions.reconnect ?? defaultReconnect
    while (!this.stopped) {
      const outage = yield* Effect.exit(Effect.retry(this.session, policy))
      if (Exit.isFailure(outage)) {
        const error = Cause.findErrorOption(outage.cause)
        if (error._tag === "Some") {
          this.lastCause = error.value
          this.emit({ _tag: "GaveUp", cause: error.value })
          Deferred.doneUnsafe(this.firstLink, Exit.fail(error.value))
          Deferred.doneUnsafe(this.live, Exit.fail(new AmqpClosedError({ what: "connection", cause: error.value })))
          this.endChannels(error.value)
        } else {
          // A defect: `make`, waiting for the first link, dies with it rather than wait forever.
          Deferred.doneUnsafe(this.firstLink, Exit.failCause(outage.cause))
        }
        this.stopped = true
        return
      }
      if (outage.value === "closed") return
    }
  })

  /**
   * One link: connect, recover, serve until it is lost. A reconnected link that is lost during its
   * recovery, or within `QUICK_LOSS_MILLIS` of going live, fails like a connect attempt: the
   * policy's delays and limits then apply to a broker that accepts connections and drops them (or
   * to a recovery step that ends the connection every time), rather than a tight loop.
   */
  private readonly session: Effect.Effect<"lost" | "closed", AmqpConnectionError> = Effect.gen(
    { self: this },
    function*() {
      const reconnecting = this.lostAt !== undefined
      const link = yield* this.connectOnce
      this.opened = link
      this.emit({ _tag: "Connected", host: link.host, port: link.connection.options.port })
      yield* this.forwardBlocked(link)
      yield* this.recover(link)
      // A secret updated while this link was opening: the link takes it before it goes live.
      if (link.secret !== this.secret) {
        yield* Effect.ignore(link.connection.updateSecret(this.secret, this.secretReason))
      }
      const live = yield* link.connection.isOpen
      if (live) {
        if (this.lostAt !== undefined) {
          const millis = Date.now() - this.lostAt
          this.reconnectCount++
          this.lastRecovery = millis
          yield* Metric.update(reconnects, 1)
          yield* Metric.update(recoveryTime, Duration.millis(millis))
          this.emit({ _tag: "Recovered", durationMillis: millis })
        }
        this.link = link
        for (const channel of this.channels) channel.release()
        Deferred.doneUnsafe(this.live, Exit.succeed(link))
        Deferred.doneUnsafe(this.firstLink, Exit.void)
      }
      const liveAt = Date.now()

      const cause = yield* link.connection.closed
      const lostAt = Date.now()
      this.link = undefined
      this.opened = undefined
      if (live) this.live = Deferred.makeUnsafe<Link, AmqpClosedError>()
      if (!this.stopped) this.lastCause = cause
      yield* Scope.close(link.scope, Exit.void)
      // A link's block ends with the link: the next one starts unblocked.
      if (this.blocked) {
        this.blocked = false
        this.emit({ _tag: "Unblocked" })
      }
      if (this.stopped || cause.reason._tag === "ClosedByApplication") return "closed"
      this.emit({ _tag: "Disconnected", cause })
      const quick = reconnecting && (!live || lostAt - liveAt < QUICK_LOSS_MILLIS)
      // A quick loss goes on with the outage it ended: its recovery is timed from the first loss.
      if (quick) return yield* Effect.fail(cause)
      this.lostAt = lostAt
      return "lost"
    }
  )

  /** The application closes the client: no more recovery, the link closes politely. */
  readonly stop: Effect.Effect<void> = Effect.suspend(() => {
    this.stopped = true
    this.lastCause = undefined
    // During recovery the new link is open but not yet `link`: it is closed all the same.
    const link = this.link ?? this.opened
    this.link = undefined
    this.opened = undefined
    Deferred.doneUnsafe(this.live, Exit.fail(new AmqpClosedError({ what: "connection", cause: undefined })))
    this.endChannels(undefined)
    return link === undefined ? Effect.void : Scope.close(link.scope, Exit.void)
  })

  /**
   * No link will come again: every channel handle ends, and with it what waits on it (operations,
   * consumer streams, `closed`).
   */
  private endChannels(cause: AmqpConnectionError | undefined): void {
    // Each removes itself from the set; a Set's iteration allows deleting the entry it is on.
    for (const channel of this.channels) channel.end(new AmqpClosedError({ what: "channel", cause }))
  }

  private forwardBlocked(link: Link): Effect.Effect<void> {
    return link.connection.events.pipe(
      Stream.runForEach((event) =>
        Effect.sync(() => {
          if (event._tag === "Blocked") {
            this.blocked = true
            this.emit({ _tag: "Blocked", reason: event.reason })
          } else if (event._tag === "Unblocked" && this.blocked) {
            this.blocked = false
            this.emit({ _tag: "Unblocked" })
          }
        })
      ),
      Effect.forkIn(link.scope, { startImmediately: true }),
      Effect.asVoid
    )
  }

  /** Waits for a live link, bounded by `linkTimeout`. */
  readonly awaitLink: Effect.Effect<Link, AmqpClosedError> = Effect.suspend(() => {
    if (this.link !== undefined && !this.link.connection.core.isClosed()) return Effect.succeed(this.link)
    if (this.stopped) return Effect.fail(new AmqpClosedError({ what: "connection", cause: this.lastCause }))
    return Deferred.await(this.live).pipe(
      Effect.timeoutOrElse({
        duration: this.linkTimeout,
        orElse: () => Effect.fail(new AmqpClosedError({ what: "connection", cause: this.lastCause }))
      })
    )
  })

  /**
   * Declares the recorded topology again, in dependency order, then re-opens every channel. A
   * step that fails is reported and the rest goes on.
   */
  private recover(link: Link): Effect.Effect<void> {
    return Effect.gen({ self: this }, function*() {
      const topology = this.topology
      // What earlier links re-declared matters no more: a consumer given up now never had them.
      this.redeclaredOn.clear()
      yield* this.deleteGivenUp(link)
      const hasTopology = topology.exchanges.size + topology.queues.size + topology.bindings.length > 0
      if (hasTopology) {
        const scope = yield* Scope.fork(link.scope)
        let api: AmqpChannel.AmqpChannel | undefined
        const channel = Effect.suspend(() =>
          api !== undefined ? Effect.succeed(api) : Scope.provide(AmqpChannel.make(link.connection), scope).pipe(
            Effect.tap((opened) => Effect.sync(() => (api = opened)))
          )
        )
        const step = (
          name: string,
          run: (api: AmqpChannel.AmqpChannel) => Effect.Effect<unknown, AmqpChannel.ChannelError>
        ) =>
          channel.pipe(
            Effect.flatMap(run),
            Effect.catch((error) =>
              Effect.sync(() => {
                api = undefined
                this.emit({ _tag: "RecoveryStepFailed", step: name, error })
              })
            )
          )
        for (const exchange of topology.exchanges.values()) {
          yield* step(
            `exchange ${exchange.name}`,
            (c) => c.exchangeDeclare(exchange.name, exchange.type, exchange.options)
          )
        }
        for (const queue of Array.from(topology.queues.values())) {
          // A server-named queue that is neither exclusive nor auto-delete may have outlived the
          // link: it is kept when it is still there, rather than left behind for a new one.
          const mayRemain = queue.serverNamed && queue.options.exclusive !== true && queue.options.autoDelete !== true
          const remains = mayRemain &&
            (yield* channel.pipe(
              Effect.flatMap((c) => c.queueDeclare(queue.name, { passive: true })),
              Effect.as(true),
              Effect.catch(() =>
                Effect.sync(() => {
                  // The 404 closed the recovery channel: the next step opens another.
                  api = undefined
                  return false
                })
              )
            ))
          if (remains) continue
          // Known before the declare goes: the consumer may end while its reply is on the way.
          if (queue.options.autoDelete === true && !queue.serverNamed) this.redeclaredOn.set(queue.name, link)
          yield* step(
            `queue ${queue.name}`,
            (c) =>
              c.queueDeclare(queue.serverNamed ? "" : queue.name, queue.options).pipe(
                Effect.tap((ok) =>
                  Effect.sync(() => {
                    if (ok.queue !== queue.name) this.renameQueue(queue.name, ok.queue)
                    if (queue.options.autoDelete === true) this.redeclaredOn.set(ok.queue, link)
                    // Given up while it was being declared: it goes at the end of this recovery.
                    if (queue.options.autoDelete === true && !topology.queues.has(ok.queue)) this.givenUp.add(ok.queue)
                  })
                ),
                // Refused (another party's queue of that name now): not this client's to delete.
                Effect.onError(() => Effect.sync(() => this.redeclaredOn.delete(queue.name)))
              )
          )
        }
        const ordered = [
          ...topology.bindings.filter((b) => b.kind === "exchange"),
          ...topology.bindings.filter((b) => b.kind === "queue")
        ]
        for (const b of ordered) {
          yield* step(`binding ${b.source} -> ${b.destination}`, (c) =>
            b.kind === "exchange"
              ? c.exchangeBind(b.destination, b.source, b.routingKey, b.arguments)
              : c.queueBind(b.destination, b.source, b.routingKey, b.arguments))
        }
        yield* Scope.close(scope, Exit.void)
      }
      for (const channel of this.channels) yield* channel.attach(link)
      if (this.givenUp.size > 0) yield* this.deleteGivenUp(link)
    })
  }

  /**
   * Deletes the auto-delete queues given up while they waited for a consumer on a new link (see
   * `consumerGone`), each on a channel of its own and only if unused: one that another connection
   * consumes stays (the broker deletes it when that consumer goes). One the link's loss kept from
   * going stays pending, for the next link.
   */
  private deleteGivenUp(link: Link): Effect.Effect<void> {
    return Effect.forEach(
      Array.from(this.givenUp),
      (queue) =>
        Effect.scoped(
          Effect.flatMap(AmqpChannel.make(link.connection), (c) => c.queueDelete(queue, { ifUnused: true }))
        )
          .pipe(
            Effect.andThen(Effect.sync(() => this.givenUp.delete(queue))),
            // 406: in use, 404: gone already; either way the broker takes it from here.
            Effect.catchTag("AmqpChannelError", () => Effect.sync(() => this.givenUp.delete(queue))),
            Effect.ignore
          ),
      { discard: true }
    )
  }

  /**
   * A consumer of `queue` ended. The broker deletes an auto-delete queue once its last consumer
   * has gone: when it was this client's last consumer of one it declared, recovery must not bring
   * the queue back (it would collect messages with nobody to consume them).
   */
  consumerGone(queue: string, startedOn: ChannelCore | undefined): void {
    if (this.topology.queues.get(queue)?.options.autoDelete !== true) return
    for (const channel of this.channels) {
      for (const consumer of channel.consumers) if (consumer.queue === queue) return
    }
    this.topology.queueDeleted(queue)
    // A recovery declared it again on this link, and the consumer had not started here: no
    // consumer of it goes, so the broker would keep it for good. It is deleted now, while nobody
    // else is likely to have declared it again.
    const link = this.opened ?? this.link
    const redeclaredOn = this.redeclaredOn.get(queue)
    this.redeclaredOn.delete(queue)
    if (link === undefined || redeclaredOn !== link || startedOn?.connection === link.connection.core) return
    this.givenUp.add(queue)
    Effect.runFork(Effect.forkIn(this.deleteGivenUp(link), link.scope))
  }

  /** Every earlier name of a server-named queue a recovery declared again -> its name now. */
  private readonly renames = new Map<string, string>()

  /**
   * The name `queue` has now: a server-named queue gets a new one with each recovery, and the
   * application may still hold an earlier one (publishing to which the broker would drop).
   */
  currentName(queue: string): string {
    return this.renames.get(queue) ?? queue
  }

  private renameQueue(from: string, to: string): void {
    for (const [earlier, current] of this.renames) if (current === from) this.renames.set(earlier, to)
    this.renames.set(from, to)
    this.topology.rename(from, to)
    for (const channel of this.channels) {
      for (const consumer of channel.consumers) if (consumer.queue === from) consumer.queue = to
    }
    this.emit({ _tag: "QueueRenamed", from, to })
  }

  channel(
    options: AmqpChannel.ChannelOptions
  ): Effect.Effect<ClientChannel, AmqpChannel.ChannelError | AmqpConfigError, Scope.Scope> {
    return Effect.gen({ self: this }, function*() {
      const invalid = AmqpChannel.invalidChannelOptions(options)
      if (invalid !== undefined) return yield* invalid
      const channel = new LogicalChannel(this, options)
      yield* Effect.acquireRelease(
        Effect.sync(() => this.channels.add(channel)),
        () => channel.close
      )
      // Given up (no link within linkTimeout), it is closed at once: a recovery under way would
      // otherwise open it on the broker, and again on every link, until the caller's scope ends.
      yield* Effect.flatMap(this.awaitLink, (link) => channel.attach(link)).pipe(Effect.onError(() => channel.close))
      if (channel.closedForGood !== undefined) return yield* Effect.fail(channel.closedForGood)
      return channel.api()
    })
  }

  updateSecret(
    secret: Redacted.Redacted<string>,
    reason: string
  ): Effect.Effect<void, AmqpConnectionError | AmqpClosedError | AmqpEncodeError> {
    return Effect.gen({ self: this }, function*() {
      const reasonBytes = Buffer.byteLength(reason)
      if (reasonBytes > 255) {
        return yield* new AmqpEncodeError({ message: `the update-secret reason is ${reasonBytes} bytes, over 255` })
      }
      if (this.stopped) return yield* new AmqpClosedError({ what: "connection", cause: this.lastCause })
      const link = this.link
      if (link === undefined) {
        // Down: the next link logs in with it, or takes it as it comes up.
        this.secret = secret
        this.secretReason = reason
        return
      }
      // Kept only once the open link took it: one refused (too large for a frame, say) changes nothing.
      yield* link.connection.updateSecret(secret, reason)
      this.secret = secret
    })
  }
}

/** The public operations over one channel incarnation, made once per incarnation. */
const apis = new WeakMap<ChannelCore, AmqpChannel.AmqpChannel>()
const apiOf = (core: ChannelCore): AmqpChannel.AmqpChannel => {
  let api = apis.get(core)
  if (api === undefined) {
    api = AmqpChannel.makeChannel(core)
    apis.set(core, api)
  }
  return api
}

interface Qos {
  readonly prefetchCount: number
  readonly prefetchSize: number
  readonly global: boolean
}

/** What a channel has before any `qos`: no limit. */
const NO_QOS: Qos = { prefetchCount: 0, prefetchSize: 0, global: false }

const sameQos = (a: Qos, b: Qos) => a.prefetchCount === b.prefetchCount && a.prefetchSize === b.prefetchSize

/**
 * The offset a stream queue gave a delivery: its `x-stream-offset` header, a 64-bit integer (a
 * `Typed` one when the connection decodes headers with their types).
 */
const streamOffset = (delivery: Delivery): bigint | undefined => {
  const header = delivery.properties.headers?.["x-stream-offset"]
  const offset = header instanceof Typed ? header.value : header
  if (typeof offset === "bigint") return offset
  return typeof offset === "number" && Number.isSafeInteger(offset) ? BigInt(offset) : undefined
}

/** A consumer of a client channel: its stream outlives the channel incarnations under it. */
class LogicalConsumer {
  handle: ConsumerHandle | undefined
  queue: string
  /** The per-consumer `qos` in force on its channel when it started: recovery restores it first. */
  readonly qos: Qos | undefined
  readonly options: ConsumeOptions & { readonly consumerTag: string }
  readonly buffer: DeliveryBuffer<AmqpChannel.ChannelError | AmqpConsumerCancelled>
  readonly channel: LogicalChannel

  constructor(
    queue: string,
    options: ConsumeOptions & { readonly consumerTag: string },
    buffer: DeliveryBuffer<AmqpChannel.ChannelError | AmqpConsumerCancelled>,
    channel: LogicalChannel
  ) {
    this.queue = queue
    this.options = options
    this.buffer = buffer
    this.channel = channel
    this.qos = channel.consumerQos
    this.readsStream = isStreamConsumer(options)
  }

  /** Started with an `x-stream-offset`, so on a stream: other queues refuse that argument. */
  private readonly readsStream: boolean

  /** The channel incarnation this consumer was last started on; it is started once per incarnation. */
  private attachedTo: ChannelCore | undefined
  /** The incarnation its last `basic.consume` succeeded on. */
  startedOn: ChannelCore | undefined
  /**
   * Set when the application's consumer has ended. It is not started again, and a start that was
   * in flight then (a recovery's `basic.consume`) is cancelled as soon as its `consume-ok` comes.
   */
  ended = false

  /**
   * For a consumer of a stream: the offset to go on from on the next link, the one after the last
   * delivery the application has taken or will take. A stream requeues nothing, so the offset the
   * consumer first asked for would deliver everything again (`first`) or skip what was published
   * while the link was down (`next`).
   */
  private resumeAt: bigint | undefined

  /** A delivery reached the buffer: its stream goes on after it. */
  private delivered(delivery: Delivery): void {
    const offset = this.readsStream ? streamOffset(delivery) : undefined
    if (offset !== undefined) this.resumeAt = offset + 1n
  }

  /** A delivery from a lost link left the buffer untaken: its stream goes on from it. */
  dropped(delivery: Delivery): void {
    const offset = this.readsStream ? streamOffset(delivery) : undefined
    if (offset !== undefined && (this.resumeAt === undefined || offset < this.resumeAt)) this.resumeAt = offset
  }

  attach(core: ChannelCore): Effect.Effect<void, AmqpChannel.ChannelError> {
    if (this.ended || this.attachedTo === core) return Effect.void
    this.attachedTo = core
    // Started with a name a recovery has since replaced, it consumes the queue under its new one.
    this.queue = this.channel.supervisor.currentName(this.queue)
    const options = this.resumeAt === undefined
      ? this.options
      : { ...this.options, arguments: { ...this.options.arguments, "x-stream-offset": this.resumeAt } }
    return startConsumer(core, this.queue, options, {
      offer: (from, delivery) => {
        this.delivered(delivery)
        this.buffer.offer(from, delivery)
      },
      cancelledByBroker: (consumerTag) => {
        this.channel.consumers.delete(this)
        this.channel.supervisor.consumerGone(this.queue, core)
        this.buffer.fail(new AmqpConsumerCancelled({ consumerTag, queue: this.queue }))
      },
      // Its start was given up (the stream's scope is gone), so no stop will say it ended: an
      // auto-delete queue the broker deletes with it is forgotten here.
      startedGivenUp: () => this.channel.supervisor.consumerGone(this.queue, core),
      channelClosed: (cause) => {
        this.buffer.dropStale()
        // Closed by the broker for another consumer that could not start: this one goes on, on
        // the incarnation that recovery opens next.
        if (cause._tag === "AmqpChannelError" && this.channel.startingConsumersOn !== core) this.buffer.fail(cause)
      }
    }).pipe(
      Effect.flatMap((handle) => {
        this.handle = handle
        this.startedOn = core
        if (!this.ended) return Effect.void
        // Nobody reads this buffer any more: what arrived before the cancel-ok goes back.
        return handle.cancel.pipe(Effect.andThen(this.buffer.drain(this.options.noAck !== true)))
      })
    )
  }
}

/** A channel of a client: re-opened on every new link until a channel error or the application closes it. */
class LogicalChannel {
  core: ChannelCore | undefined
  /** The scope of the latest incarnation. */
  private scope: Scope.Closeable | undefined
  /** The incarnation whose consumers recovery is starting, while it does. */
  startingConsumersOn: ChannelCore | undefined
  closedForGood: AmqpChannel.ChannelError | undefined
  /** The last `qos` with `global` (for the channel as a whole), and the last without (per consumer). */
  globalQos: Qos | undefined
  consumerQos: Qos | undefined
  confirm = false
  readonly consumers = new Set<LogicalConsumer>()
  /** Returns from every incarnation of this channel. */
  readonly returns = new ReturnListeners()
  private ready = Deferred.makeUnsafe<ChannelCore, AmqpChannel.ChannelError>()
  /** The link this channel was last opened on. */
  private attachedTo: Link | undefined
  /** The incarnation opened last, live or not: where the next one's delivery tags start. */
  private lastCore: ChannelCore | undefined
  /** The incarnation a recovery still under way opened, for `release`. */
  private held: ChannelCore | undefined

  readonly supervisor: Supervisor
  readonly options: AmqpChannel.ChannelOptions

  constructor(supervisor: Supervisor, options: AmqpChannel.ChannelOptions) {
    this.supervisor = supervisor
    this.options = options
  }

  /** Opens this channel on a new link and restores its qos, confirm mode and consumers. */
  attach(link: Link): Effect.Effect<void> {
    // Opened on each link once: recovery and a channel() that waited for the link may both ask.
    if (this.closedForGood !== undefined || this.attachedTo === link) return Effect.void
    // What the open transaction held went with the old channel; a new one would commit the rest.
    if (this.lastCore?.transactional === true) {
      this.end(new AmqpClosedError({ what: "channel", cause: this.supervisor.lastCause }))
      return Effect.void
    }
    this.attachedTo = link
    return this.openIncarnation(link)
  }

  /**
   * One incarnation of this channel on `link`. A consumer that cannot start on it (its queue was
   * deleted meanwhile, or another connection holds it exclusively) makes the broker close the
   * channel: that consumer ends with the broker's error, and the others start on a new incarnation.
   */
  private openIncarnation(link: Link): Effect.Effect<void> {
    return Effect.gen({ self: this }, function*() {
      if (this.closedForGood !== undefined) return
      // Each incarnation lives in a scope of its own under the link's, closed when it ends: a
      // closed channel's state is not kept until the link goes.
      const scope = yield* Scope.fork(link.scope)
      const core = yield* Scope.provide(AmqpChannel.openCore(link.connection, this.options), scope).pipe(
        Effect.onError(() => Scope.close(scope, Exit.void))
      )
      // The application closed the handle while the channel opened: it is closed again at once.
      if (this.closedForGood !== undefined) return yield* Scope.close(scope, Exit.void)
      this.scope = scope
      // Delivery tags go on from where the last incarnation's ended: an old one is then told apart.
      const previous = this.lastCore
      core.tagOffset = previous === undefined ? 0 : previous.tagOffset + previous.lastDeliveryTag
      this.lastCore = core
      core.returns.add({ returned: (message) => this.returns.returned(message), ended: () => {} })
      // The topology, and once this incarnation has its settings back the channel's own, are
      // recorded as the broker answers, whether or not the caller still waits.
      core.answered = (request, reply) => {
        this.supervisor.topology.answered(request, reply.method)
        if (this.settingsRestoredOn === core) this.settingAnswered(request)
      }
      const api = apiOf(core)
      if (this.globalQos !== undefined) yield* api.qos(this.globalQos.prefetchCount, this.globalQos)
      if (this.confirm) yield* api.confirmSelect
      // Each consumer starts under the per-consumer prefetch it started under before; the channel's
      // last one is in force again afterwards, for the consumers still to come.
      let applied: Qos = NO_QOS
      const apply = (qos: Qos = NO_QOS) => {
        if (sameQos(qos, applied)) return Effect.void
        applied = qos
        return api.qos(qos.prefetchCount, qos)
      }
      // The broker closing this incarnation for one consumer's sake ends that consumer alone.
      this.startingConsumersOn = core
      for (const consumer of this.consumers) {
        yield* apply(consumer.qos)
        const started = yield* Effect.exit(consumer.attach(core))
        const error = Exit.isFailure(started) ? Cause.findErrorOption(started.cause) : undefined
        if (error?._tag !== "Some") continue
        this.supervisor.emit({ _tag: "RecoveryStepFailed", step: `consumer of ${consumer.queue}`, error: error.value })
        // Lost with the link, it starts on the next one; refused (by the broker, or here, as a tag
        // in use), it ends with why.
        if (isLinkDown(error.value)) continue
        this.consumers.delete(consumer)
        consumer.buffer.fail(error.value)
        if (core.isClosed()) {
          yield* Scope.close(scope, Exit.void)
          return yield* this.openIncarnation(link)
        }
      }
      this.startingConsumersOn = undefined
      yield* apply(this.consumerQos)
      this.settingsRestoredOn = core
      if (this.closedForGood !== undefined) return yield* Scope.close(scope, Exit.void)
      if (this.supervisor.link === link) this.serve(core)
      else this.held = core
      yield* Effect.forkIn(this.watch(core, scope), link.scope, { startImmediately: true })
    }).pipe(
      Effect.catch((error) =>
        Effect.suspend(() => {
          this.supervisor.emit({ _tag: "RecoveryStepFailed", step: `channel`, error })
          if (error._tag !== "AmqpChannelError") return Effect.void
          this.end(error)
          return this.scope === undefined ? Effect.void : Scope.close(this.scope, Exit.void)
        })
      )
    )
  }

  /** The incarnation whose qos and confirm mode have been restored: later ones are the application's. */
  private settingsRestoredOn: ChannelCore | undefined

  /** Records a `qos` or `confirm.select` of the application's that the broker answered. */
  private settingAnswered(request: Method): void {
    if (request._tag === "confirm.select") this.confirm = true
    if (request._tag !== "basic.qos") return
    const qos = { prefetchCount: request.prefetchCount, prefetchSize: request.prefetchSize, global: request.global }
    if (qos.global) this.globalQos = qos
    else this.consumerQos = qos
  }

  /** Notices how this incarnation ended: a channel error ends the handle, a lost link waits. */
  private watch(core: ChannelCore, scope: Scope.Closeable): Effect.Effect<void> {
    return Effect.flatMap(core.awaitEnd, (cause) => {
      if (cause._tag === "AmqpChannelError") this.end(cause)
      // A channel in tx mode cannot be had again (see `attach`): it ends with its link, at once.
      else if (core.transactional) {
        this.end(
          new AmqpClosedError({ what: "channel", cause: cause._tag === "AmqpClosedError" ? cause.cause : cause })
        )
      } else this.detach(core)
      return Scope.close(scope, Exit.void)
    })
  }

  /**
   * Recovery has finished: operations get the incarnation it opened. Until then they wait, so a
   * publish cannot go ahead of recovery (under a memory alarm, RabbitMQ stops reading from a
   * connection that publishes, and the consumers that would drain its queues never restarted).
   */
  release(): void {
    const core = this.held
    this.held = undefined
    if (core !== undefined && !core.isClosed() && this.closedForGood === undefined) this.serve(core)
  }

  private serve(core: ChannelCore): void {
    this.core = core
    Deferred.doneUnsafe(this.ready, Exit.succeed(core))
  }

  private detach(core: ChannelCore): void {
    if (this.core !== core) return
    this.core = undefined
    if (Deferred.isDoneUnsafe(this.ready)) this.ready = Deferred.makeUnsafe()
  }

  end(cause: AmqpChannel.ChannelError): void {
    if (this.closedForGood !== undefined) return
    this.closedForGood = cause
    Deferred.doneUnsafe(this.ended, Exit.succeed(cause))
    this.returns.end()
    this.core = undefined
    Deferred.doneUnsafe(this.ready, Exit.fail(cause))
    for (const consumer of this.consumers) consumer.buffer.fail(cause)
    this.consumers.clear()
    this.supervisor.channels.delete(this)
  }

  /**
   * What an operation on the channel fails with once it has ended for good: as on a plain channel,
   * the broker's channel error is the cause of an `AmqpClosedError` (the operation that caused it
   * failed with the error itself).
   */
  private usedAfterEnd(cause: AmqpChannel.ChannelError): AmqpChannel.ChannelError {
    return cause instanceof AmqpChannelError ? new AmqpClosedError({ what: "channel", cause }) : cause
  }

  /** Waits until the handle has ended for good and returns why. */
  private readonly ended = Deferred.makeUnsafe<AmqpChannel.ChannelError>()
  readonly closedSignal: Effect.Effect<AmqpChannel.ChannelError> = Effect.suspend(() => Deferred.await(this.ended))

  /** The live incarnation, waiting (bounded) while the link is down. */
  readonly current: Effect.Effect<ChannelCore, AmqpChannel.ChannelError> = Effect.suspend(() => {
    if (this.closedForGood !== undefined) return Effect.fail(this.usedAfterEnd(this.closedForGood))
    const core = this.core
    if (core !== undefined) {
      if (!core.isClosed()) return Effect.succeed(core)
      if (core.failure instanceof AmqpChannelError) {
        this.end(core.failure)
        return Effect.fail(this.usedAfterEnd(core.failure))
      }
      this.detach(core)
    }
    const supervisor = this.supervisor
    if (supervisor.stopped) return Effect.fail(new AmqpClosedError({ what: "channel", cause: supervisor.lastCause }))
    return Deferred.await(this.ready).pipe(
      Effect.timeoutOrElse({
        duration: supervisor.linkTimeout,
        orElse: () => Effect.fail(linkWaitTimedOut(supervisor.lastCause))
      })
    )
  })

  /**
   * Where an acknowledgement goes: acknowledgements do not wait, not even for a recovery under way,
   * whose restarted consumers deliver before it has finished.
   */
  private readonly acknowledging: Effect.Effect<ChannelCore, AmqpChannel.ChannelError> = Effect.suspend(() => {
    const held = this.held
    if (held !== undefined && !held.isClosed() && this.closedForGood === undefined) return Effect.succeed(held)
    return this.current
  })

  /**
   * Runs an operation, which sends `method`, on the live incarnation; if the link dies under it,
   * once more on the next, unless the broker closed the connection for that method.
   */
  private op<A, E extends { readonly _tag: string }>(
    method: MethodTag,
    f: (api: AmqpChannel.AmqpChannel, core: ChannelCore) => Effect.Effect<A, E>
  ): Effect.Effect<A, E | AmqpChannel.ChannelError> {
    const once = Effect.flatMap(this.current, (core) => f(apiOf(core), core))
    return once.pipe(
      Effect.retry({
        times: 3,
        while: (error: E | AmqpChannel.ChannelError) =>
          isConnectionLoss(error) && !brokerRefused(error, method) && this.closedForGood === undefined &&
          !this.supervisor.stopped
      })
    )
  }

  readonly close: Effect.Effect<void> = Effect.suspend(() => {
    const scope = this.scope
    this.end(new AmqpClosedError({ what: "channel", cause: undefined }))
    // Closing the incarnation's scope closes its channel politely (the scope's finalizer) and lets
    // it go; an incarnation already lost has closed its scope.
    return scope === undefined ? Effect.void : Scope.close(scope, Exit.void)
  })

  api(): ClientChannel {
    // Queue names are looked up as each operation goes out, after any wait for a recovery.
    const named = (queue: string) => this.supervisor.currentName(queue)
    return {
      id: this.core?.id ?? 0,
      exchangeDeclare: (exchange, type, o = {}) =>
        this.op("exchange.declare", (c) => c.exchangeDeclare(exchange, type, o)),
      exchangeDelete: (exchange, o) => this.op("exchange.delete", (c) => c.exchangeDelete(exchange, o)),
      exchangeBind: (destination, source, routingKey, args = {}) =>
        this.op("exchange.bind", (c) => c.exchangeBind(destination, source, routingKey, args)),
      exchangeUnbind: (destination, source, routingKey, args = {}) =>
        this.op("exchange.unbind", (c) => c.exchangeUnbind(destination, source, routingKey, args)),
      queueDeclare: (queue = "", o = {}) => this.op("queue.declare", (c) => c.queueDeclare(named(queue), o)),
      queueBind: (queue, exchange, routingKey, args = {}) =>
        this.op("queue.bind", (c) => c.queueBind(named(queue), exchange, routingKey, args)),
      queueUnbind: (queue, exchange, routingKey, args = {}) =>
        this.op("queue.unbind", (c) => c.queueUnbind(named(queue), exchange, routingKey, args)),
      queuePurge: (queue) => this.op("queue.purge", (c) => c.queuePurge(named(queue))),
      queueDelete: (queue, o) => this.op("queue.delete", (c) => c.queueDelete(named(queue), o)),
      qos: (prefetchCount, o = {}) => this.op("basic.qos", (c) => c.qos(prefetchCount, o)),
      confirmSelect: this.op("confirm.select", (c) => c.confirmSelect),
      publish: (exchange, routingKey, body, o = {}) => this.publish(exchange, routingKey, body, o),
      publishAsync: (exchange, routingKey, body, o = {}) =>
        Effect.flatMap(this.current, (core) =>
          core.publishAsync(
            exchange,
            exchange === "" ? named(routingKey) : routingKey,
            body,
            o.properties ?? {},
            o.mandatory ?? false
          )),
      consume: (queue, o = {}) => this.consume(queue, o),
      consumeWith: (queue, handle, o = {}) => this.consumeWith(queue, handle, o),
      returns: returnsStream(this.returns),
      get: (queue, o) => this.op("basic.get", (c) => c.get(named(queue), o)),
      ack: (deliveryTag, multiple) =>
        Effect.flatMap(this.acknowledging, (core) => acknowledge(core, "ack", deliveryTag, multiple ?? false, false)),
      nack: (deliveryTag, multiple, requeue) =>
        Effect.flatMap(
          this.acknowledging,
          (core) => acknowledge(core, "nack", deliveryTag, multiple ?? false, requeue ?? true)
        ),
      reject: (deliveryTag, requeue) =>
        Effect.flatMap(
          this.acknowledging,
          (core) => acknowledge(core, "reject", deliveryTag, false, requeue ?? true)
        ),
      recover: (requeue) => this.op("basic.recover", (c) => c.recover(requeue)),
      txSelect: this.op("tx.select", (c) => c.txSelect),
      txCommit: this.op("tx.commit", (c) => c.txCommit),
      txRollback: this.op("tx.rollback", (c) => c.txRollback),
      closed: Effect.suspend(() => this.closedSignal),
      isOpen: Effect.sync(() => this.closedForGood === undefined)
    }
  }

  private publish(
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    options: ClientPublishOptions
  ): Effect.Effect<void, AmqpPublishError | AmqpChannel.ChannelError> {
    const retry = options.retry
    const properties: BasicProperties = retry !== undefined && options.properties?.messageId === undefined
      ? { ...options.properties, messageId: randomUUID() }
      : options.properties ?? {}
    const attempt = Effect.flatMap(this.current, (core) =>
      core.publish(
        exchange,
        exchange === "" ? this.supervisor.currentName(routingKey) : routingKey,
        body,
        properties,
        options.mandatory ?? false
      ))
    const unsent = (error: AmqpPublishError | AmqpChannel.ChannelError) =>
      this.closedForGood === undefined && !this.supervisor.stopped &&
      ((error._tag === "AmqpPublishError" && error.reason._tag === "Unconfirmed" && !error.reason.sent) ||
        isConnectionLoss(error))
    if (retry === undefined) return attempt.pipe(Effect.retry({ times: 3, while: unsent }))
    return attempt.pipe(
      Effect.retry({
        schedule: retry,
        // The caller's schedule decides how long an outage is ridden out: a wait for the link that
        // ran out is tried again too, while the client still reconnects.
        while: (error) =>
          this.closedForGood === undefined && !this.supervisor.stopped &&
          ((error._tag === "AmqpPublishError" && error.reason._tag === "Unconfirmed") || isLinkDown(error))
      })
    )
  }

  private consume(
    queue: string,
    options: ConsumeOptions
  ): Stream.Stream<Delivery, AmqpChannel.ChannelError | AmqpConsumerCancelled> {
    return Stream.unwrap(Effect.map(this.startBuffered(queue, options), (buffer) => buffer.stream))
  }

  private consumeWith<E, R>(
    queue: string,
    handle: (delivery: Delivery) => Effect.Effect<void, E, R>,
    { concurrency = 1, ...options }: AmqpChannel.ConsumeWithOptions
  ): Effect.Effect<void, E | AmqpChannel.ChannelError | AmqpConsumerCancelled | AmqpConfigError, R> {
    // A handler whose ack found its delivery's channel gone with the link does not end the
    // consumer: the broker redelivers that message, on the next link.
    const handleLive = (delivery: Delivery) =>
      Effect.catchIf(handle(delivery), (error) => error instanceof AmqpStaleDelivery, () => Effect.void)
    return AmqpChannel.withConcurrency(concurrency, (handlers) =>
      Effect.scoped(
        Effect.flatMap(this.startBuffered(queue, options), (buffer) => buffer.forEach(handleLive, handlers))
      ))
  }

  /** A logical consumer feeding a buffer, across reconnects, for as long as the scope lasts. */
  private startBuffered(queue: string, options: ConsumeOptions) {
    return Effect.gen({ self: this }, function*() {
      const buffer = new DeliveryBuffer<AmqpChannel.ChannelError | AmqpConsumerCancelled>({
        noAck: options.noAck ?? false,
        onDropped: (delivery) => consumer.dropped(delivery)
      })
      const consumer = new LogicalConsumer(
        queue,
        { ...options, consumerTag: options.consumerTag ?? `effect-amqp-${randomUUID()}` },
        buffer,
        this
      )
      const stop = Effect.suspend(() => {
        consumer.ended = true
        this.consumers.delete(consumer)
        // One that never started (refused, or given up waiting for a link) leaves the queue be.
        if (consumer.handle !== undefined) this.supervisor.consumerGone(consumer.queue, consumer.startedOn)
        // Reading must go on for the cancel-ok to arrive: a buffer that paused it lets go first.
        buffer.release()
        return (consumer.handle?.cancel ?? Effect.void).pipe(Effect.andThen(buffer.drain(options.noAck !== true)))
      })
      yield* Effect.acquireRelease(
        Effect.gen({ self: this }, function*() {
          // Known to the channel first, so that a reconnect during basic.consume starts it on the
          // next link; a lost link is then no failure of this stream.
          this.consumers.add(consumer)
          // Waiting for a link or for the consume-ok may be interrupted: a consumer that starts
          // after it was given up is cancelled then, and what it delivered goes back (stop).
          yield* Effect.interruptible(Effect.flatMap(this.current, (core) => consumer.attach(core))).pipe(
            Effect.retry({
              times: 3,
              while: (error) => isConnectionLoss(error) && this.closedForGood === undefined && !this.supervisor.stopped
            }),
            Effect.onError(() => stop)
          )
        }),
        () => stop
      )
      return buffer
    })
  }
}
