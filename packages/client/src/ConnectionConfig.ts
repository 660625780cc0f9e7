/**
 * Connection options: from an `amqp://` / `amqps://` URL, from the `ConfigProvider` (`AMQP_URL`), or
 * written out, always put through the same checks so that a bad value is a clear `AmqpConfigError`.
 * The checks are plain functions rather than a Schema: `effect/Schema` and `effect/Config` would
 * add about 10 MiB to every process that imports the client.
 *
 * URL rules follow RabbitMQ's URI spec: user and password and the vhost are percent-decoded
 * (`user:@` is the empty password, `user@` leaves it out), a host left out is the default, the
 * vhost is one path segment (`/%2f` is the vhost `/`; no path means `/`; a bare `/` means the
 * empty vhost `""`, which RabbitMQ refuses), and the query parameters `heartbeat`, `frame_max`,
 * `channel_max`, `connection_timeout` (milliseconds), `connection_name` and `auth_mechanism` (which
 * may be repeated in order of preference) set the options of the same names.
 *
 * @since 0.1.0
 */
import { AmqpEncodeError, encodeMethod, encodeTable, type FieldTable } from "@effect-amqp/protocol"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import { AmqpConfigError } from "./AmqpError.ts"
import { startOk } from "./internal/startOk.ts"

/**
 * SASL mechanisms the client speaks.
 *
 * @since 0.1.0
 * @category models
 */
export type AuthMechanism = "PLAIN" | "AMQPLAIN" | "EXTERNAL"

/**
 * TLS settings for `amqps://`. Certificates are verified, and the host name checked, unless
 * `rejectUnauthorized` is false.
 *
 * @since 0.1.0
 * @category models
 */
export interface TlsOptions {
  readonly ca?: string | Buffer | ReadonlyArray<string | Buffer>
  readonly cert?: string | Buffer
  readonly key?: string | Buffer
  readonly pfx?: string | Buffer
  readonly passphrase?: string
  /** Defaults to the host name; never an IP address (RFC 6066 forbids IP literals as SNI). */
  readonly servername?: string
  readonly rejectUnauthorized?: boolean
  readonly minVersion?: "TLSv1.2" | "TLSv1.3"
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ConnectionOptions {
  readonly host: string
  readonly port: number
  readonly username: string
  readonly password: Redacted.Redacted<string>
  readonly vhost: string
  /** Set for `amqps://`; `{}` means TLS with the system's trust store and default checks. */
  readonly tls: TlsOptions | undefined
  /**
   * Seconds. The lower of ours and the server's wins; 0 on one side takes the other's, so
   * heartbeats are off only when both say 0 (RabbitMQ proposes 60).
   */
  readonly heartbeat: number
  /** Bytes; the lower of ours and the server's, 0 taking the server's. Never below 8192 (RabbitMQ 4.1+). */
  readonly frameMax: number
  /** 0 means the server's limit. */
  readonly channelMax: number
  /** Milliseconds to open the socket (TCP and TLS). */
  readonly connectionTimeout: number
  /** Milliseconds for the whole AMQP handshake after the socket opened. */
  readonly handshakeTimeout: number
  /** Milliseconds for each polite step of a close before the socket is destroyed. */
  readonly closeTimeout: number
  readonly authMechanism: AuthMechanism
  /** Shown in the management UI and `rabbitmqctl list_connections client_properties`. */
  readonly connectionName: string | undefined
  readonly clientProperties: FieldTable | undefined
  /**
   * Decode message headers as `Typed` values that keep each field's AMQP type (for tools that show
   * them). Off by default: headers decode to plain values.
   */
  readonly typedHeaders: boolean
}

/**
 * The defaults of every option.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaults: ConnectionOptions = {
  host: "127.0.0.1",
  port: 5672,
  username: "guest",
  password: Redacted.make("guest"),
  vhost: "/",
  tls: undefined,
  heartbeat: 60,
  frameMax: 131072,
  channelMax: 2047,
  connectionTimeout: 10_000,
  handshakeTimeout: 10_000,
  closeTimeout: 5_000,
  authMechanism: "PLAIN",
  connectionName: undefined,
  clientProperties: undefined,
  typedHeaders: false
}

/**
 * Options written out in code; missing ones take their defaults. The password may be given plain
 * and is wrapped in `Redacted`.
 *
 * @since 0.1.0
 * @category constructors
 */
export type ConnectionOptionsInput = Partial<Omit<ConnectionOptions, "password">> & {
  readonly password?: string | Redacted.Redacted<string>
}

/**
 * Fills in defaults and validates.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (input: ConnectionOptionsInput = {}): Effect.Effect<ConnectionOptions, AmqpConfigError> =>
  Effect.suspend(() => {
    if (typeof input !== "object" || input === null) {
      return Effect.fail(configError(`connection options must be an object, got ${shown(input)}`))
    }
    const password = input.password === undefined
      ? defaults.password
      : Redacted.isRedacted(input.password)
      ? input.password
      : Redacted.make(input.password)
    const options: ConnectionOptions = { ...defaults, ...stripUndefined(input), password }
    return validate(options)
  })

const stripUndefined = <A extends object>(input: A): Partial<A> =>
  Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined)) as Partial<A>

const validate = (options: ConnectionOptions): Effect.Effect<ConnectionOptions, AmqpConfigError> => {
  const problems = optionChecks.flatMap(([name, check]) => {
    const problem = check(options[name])
    return problem === undefined ? [] : [`${name} ${problem}`]
  })
  if (problems.length === 0) {
    const tooLarge = startOkProblem(options)
    if (tooLarge !== undefined) problems.push(tooLarge)
  }
  return problems.length === 0
    ? Effect.succeed(options)
    : Effect.fail(configError(`invalid connection options: ${problems.join("; ")}`))
}

/**
 * What the client says of itself, with the credentials, goes out in one frame before tune. A
 * server takes 4096 bytes then (RabbitMQ 4.1 and later 8192, and more when configured with
 * initial_frame_max, for large tokens), so only what no server would take is refused here.
 */
const startOkProblem = (options: ConnectionOptions): string | undefined => {
  const size = encodeMethod(0, startOk(options, options.authMechanism, options.password)).length
  return size <= START_OK_LIMIT
    ? undefined
    : `clientProperties, username and password make connection.start-ok ${size} bytes, ` +
      `over the ${START_OK_LIMIT} the client sends before tune`
}

const START_OK_LIMIT = 131_072

const isAuthMechanism = (value: unknown): value is AuthMechanism =>
  value === "PLAIN" || value === "AMQPLAIN" || value === "EXTERNAL"

/** What is wrong with a value, or `undefined` when nothing is. */
type Check = (value: unknown) => string | undefined

/** A value as a message shows it; no value, however odd, makes this throw. */
const shown = (value: unknown): string => {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value)
    case "number":
    case "boolean":
    case "undefined":
      return String(value)
    case "bigint":
      return `the bigint ${value}n`
    default:
      return value === null ? "null" : `a value of type ${typeof value}`
  }
}

const integer = (minimum: number, maximum: number): Check => (value) =>
  typeof value === "number" && Number.isInteger(value) && value >= minimum && value <= maximum
    ? undefined
    : `must be an integer from ${minimum} to ${maximum}, got ${shown(value)}`

const text: Check = (value) => typeof value === "string" ? undefined : `must be a string, got ${shown(value)}`

const millis = integer(1, 3_600_000)

const optionChecks: ReadonlyArray<readonly [keyof ConnectionOptions, Check]> = [
  [
    "host",
    (value) => typeof value === "string" && value !== "" ? undefined : `must be a non-empty string, got ${shown(value)}`
  ],
  ["port", integer(1, 65535)],
  ["username", text],
  // The vhost travels as a short string: at most 255 bytes.
  [
    "vhost",
    (value) =>
      text(value) ?? (Buffer.byteLength(value as string) <= 255 ? undefined : "must be at most 255 bytes in UTF-8")
  ],
  ["heartbeat", integer(0, 65535)],
  ["frameMax", (value) =>
    integer(0, 4294967295)(value) ??
      (value === 0 || (value as number) >= 8192 ? undefined : `must be 0 (no limit) or at least 8192, got ${value}`)],
  ["channelMax", integer(0, 65535)],
  ["connectionTimeout", millis],
  ["handshakeTimeout", millis],
  ["closeTimeout", millis],
  ["authMechanism", (value) =>
    isAuthMechanism(value)
      ? undefined
      : `must be PLAIN, AMQPLAIN or EXTERNAL, got ${shown(value)}`],
  ["clientProperties", (value) => value === undefined ? undefined : encodableTable(value)]
]

/** Why a table cannot be sent (a key over 255 bytes, a value with no field type), if it cannot. */
const encodableTable: Check = (value) => {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `must be a field table (an object), got ${shown(value)}`
  }
  try {
    encodeTable(value as FieldTable)
    return undefined
  } catch (error) {
    if (error instanceof AmqpEncodeError) return `cannot be encoded: ${error.message}`
    throw error
  }
}

const configError = (message: string) => new AmqpConfigError({ message })

const percentDecode = (url: string, s: string, what: string): string | AmqpConfigError => {
  try {
    return decodeURIComponent(s)
  } catch {
    return configError(`malformed percent-encoding in the ${what} of ${redactUrl(url)}`)
  }
}

/**
 * Parses an `amqp://` or `amqps://` URL. The password never appears in the error of a bad URL.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromUrl = (
  url: string,
  overrides: ConnectionOptionsInput = {}
): Effect.Effect<ConnectionOptions, AmqpConfigError> =>
  Effect.suspend(() => {
    if (typeof url !== "string") return Effect.fail(configError(`AMQP URL must be a string, got ${shown(url)}`))
    // The URL parser drops these wherever they are, a password included.
    if (/[\t\n\r]/.test(url)) {
      return Effect.fail(configError(`AMQP URL must not contain tabs or line breaks: ${redactUrl(url)}`))
    }
    // A fragment means nothing to AMQP; taken silently it would cut off a password with a "#".
    if (url.includes("#")) {
      return Effect.fail(configError(`AMQP URL must not have a fragment (#...); encode "#" as %23: ${redactUrl(url)}`))
    }
    // The authority (user, password, host, port) as written: the URL parser cannot tell "user:@"
    // (an empty password) from "user@", and refuses credentials without a host.
    const scheme = SCHEME.exec(url)
    const authorityStart = scheme === null ? -1 : scheme[0].length
    const authorityLength = authorityStart < 0 ? -1 : url.slice(authorityStart).search(/[/?]|$/)
    const authority = authorityStart < 0 ? "" : url.slice(authorityStart, authorityStart + authorityLength)
    if (authorityStart >= 0 && credentialsCutShort(authority, url.slice(authorityStart + authorityLength))) {
      return Effect.fail(configError(
        `AMQP URL has an "@" after its host: encode "/" and "?" in a user name or password as %2F and %3F, ` +
          `and "@" in a vhost or a query value as %40: ${redactUrl(url)}`
      ))
    }
    const at = authority.lastIndexOf("@")
    const hostAndPort = authority.slice(at + 1)
    // RabbitMQ's URI spec lets the host be left out, credentials or not: it takes the default.
    const noHost = hostAndPort === "" || hostAndPort.startsWith(":")
    const parseable = noHost && authorityStart >= 0
      ? url.slice(0, authorityStart + at + 1) + "host.invalid" + url.slice(authorityStart + at + 1)
      : url
    let parsed: URL
    try {
      parsed = new URL(parseable)
    } catch {
      // The URL parser refuses a port above 65535 like any other error; name it as the options do.
      const port = /^amqps?:\/\/(?:[^@/?]*@)?(?:\[[^\]/]*\]|[^:/?]*):(\d+)(?:[/?]|$)/i.exec(url)?.[1]
      return Effect.fail(configError(
        port !== undefined && Number(port) > 65535
          ? `invalid connection options: port must be an integer from 1 to 65535, got ${Number(port)}`
          : `malformed AMQP URL: ${redactUrl(url)}`
      ))
    }
    const secure = parsed.protocol === "amqps:"
    if (!secure && parsed.protocol !== "amqp:") {
      return Effect.fail(configError(`AMQP URL must start with amqp:// or amqps://, got ${parsed.protocol}//`))
    }
    // Without "//" the URL parser reads the host as a path: "amqp:host" would mean 127.0.0.1.
    if (!/^amqps?:\/\//i.test(url)) {
      return Effect.fail(configError(`AMQP URL must start with amqp:// or amqps://: ${redactUrl(url)}`))
    }
    const input: Record<string, unknown> = {
      tls: secure ? {} : undefined,
      port: secure ? 5671 : 5672
    }
    if (!noHost && parsed.hostname !== "") {
      const host = percentDecode(url, parsed.hostname.replace(/^\[(.*)\]$/, "$1"), "host")
      if (host instanceof AmqpConfigError) return Effect.fail(host)
      input.host = host
    }
    if (parsed.port !== "") input.port = Number(parsed.port)
    // "user@" gives a user name and leaves the password out; "user:@" gives the empty password.
    if (at >= 0) {
      const userInfo = authority.slice(0, at)
      const colon = userInfo.indexOf(":")
      const username = percentDecode(url, colon < 0 ? userInfo : userInfo.slice(0, colon), "user name")
      if (username instanceof AmqpConfigError) return Effect.fail(username)
      input.username = username
      if (colon >= 0) {
        const password = percentDecode(url, userInfo.slice(colon + 1), "password")
        if (password instanceof AmqpConfigError) return Effect.fail(password)
        input.password = Redacted.make(password)
      }
    }
    // No path keeps the default "/"; "/" alone is the empty vhost, as RabbitMQ's URI spec says.
    const path = parsed.pathname
    if (path !== "") {
      const segment = path.slice(1)
      if (segment.includes("/")) {
        return Effect.fail(configError(`the vhost in ${redactUrl(url)} must be one path segment; encode "/" as %2f`))
      }
      const vhost = percentDecode(url, segment, "vhost")
      if (vhost instanceof AmqpConfigError) return Effect.fail(vhost)
      input.vhost = vhost
    }
    const seen = new Set<string>()
    const mechanisms: Array<string> = []
    for (const [key, value] of parsed.searchParams) {
      // auth_mechanism may be repeated, in order of preference (RabbitMQ's query parameter spec).
      if (seen.has(key) && key !== "auth_mechanism") {
        return Effect.fail(configError(`query parameter ${key} is given twice in ${redactUrl(url)}`))
      }
      seen.add(key)
      const numeric = (name: string) => {
        if (!/^-?\d+$/.test(value)) return configError(`query parameter ${key} must be an integer, got "${value}"`)
        input[name] = Number(value)
        return undefined
      }
      let error: AmqpConfigError | undefined
      switch (key) {
        case "heartbeat":
          error = numeric("heartbeat")
          break
        case "frame_max":
          error = numeric("frameMax")
          break
        case "channel_max":
          error = numeric("channelMax")
          break
        case "connection_timeout":
          error = numeric("connectionTimeout")
          break
        case "auth_mechanism":
          mechanisms.push(value.toUpperCase())
          break
        case "connection_name":
          input.connectionName = value
          break
        default:
          error = configError(`unknown query parameter ${key} in ${redactUrl(url)}`)
      }
      if (error !== undefined) return Effect.fail(error)
    }
    // The first mechanism the client speaks; with none, the first given, which the checks refuse.
    if (mechanisms.length > 0) input.authMechanism = mechanisms.find(isAuthMechanism) ?? mechanisms[0]
    const { tls: tlsOverride, ...rest } = overrides
    const tls = secure ? { ...(input.tls as TlsOptions), ...tlsOverride } : tlsOverride
    return make({ ...(input as ConnectionOptionsInput), ...rest, tls })
  })

/**
 * The URL with its password replaced by `***`, for messages. It errs on the side of hiding: all
 * from the first `:` after the scheme to the last `@` goes.
 *
 * @since 0.1.0
 * @category utils
 */
export const redactUrl = (url: string): string => {
  // After "scheme://" when the URL starts so; otherwise everything from the first ":" may hide a
  // password ("amqp:user:pass@host", "user:pass@host").
  const start = SCHEME.exec(url)?.[0].length ?? 0
  const at = url.lastIndexOf("@")
  const colon = url.indexOf(":", start)
  if (at < start) {
    // No "@": "amqp://host:5672/v" is shown, but in "amqp://user:pass" or "amqp:user:pass" (no
    // "//"), what follows a ":" may be a password.
    if (colon < 0 || (start > 0 && isHostAndPort(url.slice(start).split(/[/?]/, 1)[0]!))) return url
    return `${url.slice(0, colon + 1)}***`
  }
  if (colon < 0 || colon > at) return url
  return `${url.slice(0, colon + 1)}***${url.slice(at)}`
}

/** A URL's scheme and the "//" that starts its authority. */
const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i

/**
 * Whether a "/" or "?" in a user name or password ended the `authority` early, so that the rest of
 * them, "@" and all, would be read as the vhost or the query (and shown in their errors). When the
 * authority has no "@", one after it is taken only in a vhost after a host[:port] with no ":" in
 * it ("host/team@site"), or in a connection_name ("?connection_name=worker@node-1");
 * "user:pa/ss@host", "us/er:pass@host" and "user:1234?pass@host" are cut short.
 */
const credentialsCutShort = (authority: string, rest: string): boolean => {
  if (authority.includes("@")) return false
  const query = rest.indexOf("?")
  const path = query < 0 ? rest : rest.slice(0, query)
  const pathTaken = !path.includes("@") || (isHostAndPort(authority) && !path.includes(":"))
  const queryTaken = query < 0 ||
    rest.slice(query + 1).split("&").every((pair) => !pair.includes("@") || pair.startsWith("connection_name="))
  return !pathTaken || !queryTaken
}

/** A host, an IPv6 literal or neither, with or without a numeric port: no user name or password. */
const isHostAndPort = (authority: string): boolean => /^(?:\[[^\]]*\]|[^:[\]]*)(?::\d*)?$/.test(authority)

/**
 * Options from `AMQP_URL` as the current `ConfigProvider` gives it (by default the environment),
 * or `amqp://guest:guest@127.0.0.1:5672` when it is not set. The environment provider reads an
 * empty variable as not set, as `${AMQP_URL:-default}` would in a shell.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromConfig: Effect.Effect<ConnectionOptions, AmqpConfigError> = Effect.gen(function*() {
  const provider = yield* ConfigProvider.ConfigProvider
  const node = yield* provider.load(["AMQP_URL"]).pipe(
    Effect.mapError((error) => configError(`AMQP_URL could not be read: ${error.message}`))
  )
  if (node === undefined) return yield* fromUrl("amqp://guest:guest@127.0.0.1:5672")
  if (node.value === undefined) return yield* Effect.fail(configError("AMQP_URL must be a string"))
  return yield* fromUrl(node.value)
})
