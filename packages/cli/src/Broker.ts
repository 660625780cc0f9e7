/**
 * Which broker a command talks to: `--url`, else `AMQP_URL`, else the local default
 * `amqp://guest:guest@127.0.0.1:5672`. `connect` opens the connection; with `privateFallback` it
 * starts a private RabbitMQ node (`@effect-amqp/testing`'s `BrokerNode`) when the local default
 * refuses the connection, and keeps it for the scope. Only the default is ever replaced: a URL the
 * user gave fails as given.
 *
 * @since 0.1.0
 */
import { AmqpConfigError, AmqpConnection, type AmqpConnectionError, ConnectionConfig } from "@effect-amqp/client"
import { Config, Console, Effect, Option, type Scope } from "effect"
import { CommandFailed } from "./Report.ts"

/**
 * @since 0.1.0
 * @category constants
 */
export const defaultUrl = "amqp://guest:guest@127.0.0.1:5672"

/**
 * A broker URL and where it came from.
 *
 * @since 0.1.0
 * @category models
 */
export interface Target {
  readonly url: string
  readonly source: "flag" | "env" | "default" | "private node"
}

/**
 * `--url` if given, else `AMQP_URL` if set and not empty, else the local default.
 *
 * @since 0.1.0
 * @category constructors
 */
export const target = (flag: Option.Option<string>): Effect.Effect<Target> =>
  Option.match(flag, {
    onSome: (url) => Effect.succeed<Target>({ url, source: "flag" }),
    onNone: () =>
      Config.option(Config.String("AMQP_URL")).pipe(
        Effect.map(Option.filter((url) => url.trim() !== "")),
        Effect.orElseSucceed(() => Option.none<string>()),
        Effect.map(Option.match({
          onSome: (url): Target => ({ url, source: "env" }),
          onNone: (): Target => ({ url: defaultUrl, source: "default" })
        }))
      )
  })

/**
 * `target`'s URL with the password hidden, and its source, for messages.
 *
 * @since 0.1.0
 * @category formatting
 */
export const describe = (t: Target): string => `${displayUrl(t.url)} (${t.source})`

/**
 * The URL with everything between the user name and the last `@` replaced by `***`, so that a
 * password containing `@` or `/` (`amqp://u:p@ss@host`, which `new URL` accepts) is hidden whole.
 * The client's `redactUrl` now follows the same rule; the command line keeps its own so that its
 * messages do not depend on it.
 *
 * @since 0.1.0
 * @category formatting
 */
export const displayUrl = (url: string): string => url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:@/]*:).*@/is, "$1***@")

/** Swaps the client's redaction of `url` in an error message for `displayUrl`'s. */
const scrubConfig = (url: string) => (error: AmqpConfigError) =>
  new AmqpConfigError({ message: error.message.replaceAll(ConnectionConfig.redactUrl(url), displayUrl(url)) })

const scrub = (url: string) => (error: AmqpConnectionError | AmqpConfigError) =>
  error._tag === "AmqpConfigError" ? scrubConfig(url)(error) : error

/**
 * The connection options of `t`'s URL with `overrides`, for clients that connect by themselves (such
 * as `AmqpClient`). A bad URL fails as `connect` would, with the password hidden.
 *
 * @since 0.1.0
 * @category constructors
 */
export const connectionOptions = (
  t: Target,
  overrides: ConnectionConfig.ConnectionOptionsInput = {}
): Effect.Effect<ConnectionConfig.ConnectionOptions, AmqpConfigError> =>
  ConnectionConfig.fromUrl(t.url, overrides).pipe(Effect.mapError(scrubConfig(t.url)))

/**
 * @since 0.1.0
 * @category models
 */
export interface Connected {
  readonly target: Target
  readonly connection: AmqpConnection.AmqpConnection
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ConnectOptions {
  readonly connectionName: string
  readonly typedHeaders?: boolean
  /** Start a private node when the local default refuses the connection. */
  readonly privateFallback?: boolean
}

const refused = (error: AmqpConnectionError | AmqpConfigError): boolean =>
  error._tag === "AmqpConnectionError" && error.reason._tag === "ConnectFailed" &&
  error.reason.code === "ECONNREFUSED"

/**
 * Opens a connection to `t` for the scope, or to a private node as described in the module header.
 *
 * @since 0.1.0
 * @category constructors
 */
export const connect = (
  t: Target,
  options: ConnectOptions
): Effect.Effect<Connected, AmqpConnectionError | AmqpConfigError | CommandFailed, Scope.Scope> => {
  const overrides = { connectionName: options.connectionName, typedHeaders: options.typedHeaders ?? false }
  const open = (to: Target) =>
    AmqpConnection.fromUrl(to.url, overrides).pipe(
      Effect.mapError(scrub(to.url)),
      Effect.map((connection): Connected => ({ target: to, connection }))
    )
  if (options.privateFallback !== true || t.source !== "default") return open(t)
  return open(t).pipe(
    Effect.catchIf(refused, (error) =>
      Effect.gen(function*() {
        yield* Console.error(`effect-amqp: ${error.message}; starting a private RabbitMQ node`)
        const url = yield* startPrivateNode
        return yield* open({ url, source: "private node" })
      }))
  )
}

const startPrivateNode: Effect.Effect<string, CommandFailed, Scope.Scope> = Effect.gen(function*() {
  const testing = yield* Effect.tryPromise({
    try: () => import("@effect-amqp/testing"),
    catch: (cause) =>
      new CommandFailed({
        message: `no broker at ${defaultUrl.replace(/\/\/.*@/, "//")}, and ` +
          `@effect-amqp/testing cannot be loaded to start one: ${String(cause)}`
      })
  })
  const node = yield* testing.BrokerNode.start().pipe(
    Effect.mapError((error) =>
      new CommandFailed({ message: `no broker at 127.0.0.1:5672, and a private node did not start: ${error.message}` })
    )
  )
  return node.url
})
