/**
 * `AmqpConnection`: one scoped AMQP connection that owns its socket (TCP or TLS), its reader, its
 * writer and its heartbeat fiber. Nothing it starts outlives its scope.
 *
 * Closing the scope, or interrupting the fiber that opened it, shuts down in order:
 * `connection.close` and its `close-ok`, FIN, stop the heartbeat, wait for the peer, destroy, each
 * step bounded by `closeTimeout`. A dead peer skips the polite steps. Whatever ends the connection,
 * every pending operation ends with the same typed `AmqpConnectionError`.
 *
 * This module does not reconnect; `AmqpClient` wraps it for that.
 *
 * @since 0.1.0
 */
import type { FieldTable } from "@effect-amqp/protocol"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import type * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { AmqpConfigError, AmqpConnectionError, AmqpEncodeError } from "./AmqpError.ts"
import * as ConnectionConfig from "./ConnectionConfig.ts"
import { type ConnectionCore, type ConnectionEvent, establish, type Tuned } from "./internal/connectionCore.ts"
import * as Transport from "./internal/transport.ts"

export type { ConnectionEvent, Tuned } from "./internal/connectionCore.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface AmqpConnection {
  readonly name: string | undefined
  readonly options: ConnectionConfig.ConnectionOptions
  /** What the server said of itself in `connection.start`: product, version, capabilities. */
  readonly serverProperties: FieldTable
  /** The negotiated channel_max, frame_max and heartbeat. */
  readonly tuned: Tuned
  /** True until the connection has ended. */
  readonly isOpen: Effect.Effect<boolean>
  /** The reason the broker gave in `connection.blocked`, while it blocks publishers. */
  readonly blocked: Effect.Effect<string | undefined>
  /** Blocked, unblocked and closed, as they happen. */
  readonly events: Stream.Stream<ConnectionEvent>
  /** Waits until the connection has ended and returns why. */
  readonly closed: Effect.Effect<AmqpConnectionError>
  /**
   * Refreshes the credentials on the open connection (`connection.update-secret`). A reason over
   * 255 bytes fails with `AmqpEncodeError` and sends nothing.
   */
  readonly updateSecret: (
    secret: Redacted.Redacted<string>,
    reason: string
  ) => Effect.Effect<void, AmqpConnectionError | AmqpEncodeError>
  /** The largest event-loop delay the heartbeat fiber saw, in milliseconds. */
  readonly eventLoopLag: Effect.Effect<number>
  /** @internal */
  readonly core: ConnectionCore
}

/**
 * @since 0.1.0
 * @category tags
 */
export const AmqpConnection: Context.Service<AmqpConnection, AmqpConnection> = Context.Service<AmqpConnection>(
  "@effect-amqp/client/AmqpConnection"
)

/**
 * Opens a connection with validated options; it lives until the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: ConnectionConfig.ConnectionOptions
): Effect.Effect<AmqpConnection, AmqpConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    // Everything the attempt acquires lives in a scope of its own, closed at once if the attempt
    // fails or is interrupted, so it leaves no socket or heartbeat behind in the caller's scope.
    const scope = yield* Scope.fork(yield* Effect.scope)
    const attempt = Effect.gen(function*() {
      const events = yield* Effect.acquireRelease(PubSub.unbounded<ConnectionEvent>(), PubSub.shutdown)
      const transport = yield* Transport.open(options)
      const core = yield* establish(options, transport, events)
      return { events, core }
    })
    const { events, core } = yield* Scope.provide(attempt, scope).pipe(
      Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
    )
    return {
      name: options.connectionName,
      options,
      serverProperties: core.serverProperties,
      tuned: core.tuned,
      isOpen: Effect.sync(() => !core.isClosed()),
      blocked: Effect.sync(() => core.blockedReason),
      events: Stream.fromPubSub(events),
      closed: core.closedSignal,
      updateSecret: (secret, reason) => core.updateSecret(secret, reason),
      eventLoopLag: Effect.sync(() => core.maxEventLoopLag),
      core
    } satisfies AmqpConnection
  }).pipe(Effect.withSpan("AmqpConnection.make", { attributes: { host: options.host, port: options.port } }))

/**
 * Opens a connection from an `amqp://` or `amqps://` URL.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromUrl = (
  url: string,
  overrides?: ConnectionConfig.ConnectionOptionsInput
): Effect.Effect<AmqpConnection, AmqpConnectionError | AmqpConfigError, Scope.Scope> =>
  Effect.flatMap(ConnectionConfig.fromUrl(url, overrides), make)

/**
 * A layer that provides `AmqpConnection` from options.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: ConnectionConfig.ConnectionOptionsInput
): Layer.Layer<AmqpConnection, AmqpConnectionError | AmqpConfigError> =>
  Layer.effect(AmqpConnection, Effect.flatMap(ConnectionConfig.make(options), make))

/**
 * A layer that provides `AmqpConnection` from `AMQP_URL`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<
  AmqpConnection,
  AmqpConnectionError | AmqpConfigError
> = Layer.effect(AmqpConnection, Effect.flatMap(ConnectionConfig.fromConfig, make))
