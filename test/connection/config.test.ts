/**
 * `amqp://` URLs as RabbitMQ's URI spec reads them: percent-decoded credentials, host and vhost
 * (one path segment), query parameters checked by range, and a typed `AmqpConfigError` that never
 * shows the password. The decoded vhost is checked on the wire too, against the broker.
 */
import {
  type AmqpConfigError,
  AmqpConnection,
  type AmqpConnectionError,
  ConnectionConfig,
  ServerClosed
} from "@effect-amqp/client"
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Redacted } from "effect"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("connection-config")

const password = "hunter2-Pa55"

/** Expects `url` to be refused; returns the message after checking that the password is hidden. */
const configError = (url: string) =>
  ConnectionConfig.fromUrl(url).pipe(
    Effect.flip,
    Effect.map((error) => {
      assert.strictEqual(error._tag, "AmqpConfigError")
      assert.notInclude(error.message, password)
      assert.notInclude(JSON.stringify(error), password)
      assert.notInclude(String(error), password)
      return error.message
    })
  )

describe("URL config", () => {
  it.live("percent-decodes the vhost: /%2f is /, /my%20vhost is 'my vhost', no path is /, an empty path is ''", () =>
    leakChecked(Effect.gen(function*() {
      const vhosts: ReadonlyArray<readonly [string, string]> = [
        ["amqp://127.0.0.1/%2f", "/"],
        ["amqp://127.0.0.1/%2F", "/"],
        ["amqp://127.0.0.1/my%20vhost", "my vhost"],
        ["amqp://127.0.0.1/a%2Fb", "a/b"],
        ["amqp://127.0.0.1/plain", "plain"],
        ["amqp://127.0.0.1", "/"],
        ["amqp://127.0.0.1?heartbeat=5", "/"],
        ["amqp://127.0.0.1/", ""],
        ["amqp://127.0.0.1:5672/?heartbeat=5", ""]
      ]
      for (const [url, vhost] of vhosts) {
        assert.strictEqual((yield* ConnectionConfig.fromUrl(url)).vhost, vhost, url)
      }
    })))

  it.live("reads credentials, port and every query parameter", () =>
    leakChecked(Effect.gen(function*() {
      const options = yield* ConnectionConfig.fromUrl(
        "amqp://us%40er:p%3As%2Fs@127.0.0.1:5673/v?heartbeat=0&frame_max=0&channel_max=10" +
          "&connection_timeout=2500&auth_mechanism=amqplain&connection_name=n%201"
      )
      assert.deepStrictEqual(
        { ...options, password: Redacted.value(options.password) },
        {
          ...ConnectionConfig.defaults,
          host: "127.0.0.1",
          port: 5673,
          username: "us@er",
          password: "p:s/s",
          vhost: "v",
          heartbeat: 0,
          frameMax: 0,
          channelMax: 10,
          connectionTimeout: 2500,
          authMechanism: "AMQPLAIN",
          connectionName: "n 1"
        }
      )
      const secure = yield* ConnectionConfig.fromUrl("amqps://[::1]")
      assert.deepStrictEqual([secure.host, secure.port, secure.tls], ["::1", 5671, {}])
    })))

  it.live("decodes a percent-encoded host like the URI spec's example", () =>
    leakChecked(Effect.gen(function*() {
      // https://www.rabbitmq.com/docs/uri-spec: user "usera", password "apass", host "hoast", vhost "v/host".
      const options = yield* ConnectionConfig.fromUrl("amqp://user%61:%61pass@ho%61st:10000/v%2fhost")
      assert.deepStrictEqual(
        [options.username, Redacted.value(options.password), options.host, options.port, options.vhost],
        ["usera", "apass", "hoast", 10000, "v/host"]
      )
    })))

  it.live("refuses malformed URLs and bad ports with the password hidden", () =>
    leakChecked(Effect.gen(function*() {
      assert.strictEqual(yield* configError("not a url"), "malformed AMQP URL: not a url")
      assert.strictEqual(
        yield* configError(`http://guest:${password}@127.0.0.1`),
        "AMQP URL must start with amqp:// or amqps://, got http://"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1:99999`),
        "invalid connection options: port must be an integer from 1 to 65535, got 99999"
      )
      assert.strictEqual(
        yield* configError(`amqps://[::1]:65536/vhost?heartbeat=5`),
        "invalid connection options: port must be an integer from 1 to 65535, got 65536"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1:port`),
        "malformed AMQP URL: amqp://guest:***@127.0.0.1:port"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1:0`),
        "invalid connection options: port must be an integer from 1 to 65535, got 0"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1/a/b`),
        "the vhost in amqp://guest:***@127.0.0.1/a/b must be one path segment; encode \"/\" as %2f"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1/%zz`),
        "malformed percent-encoding in the vhost of amqp://guest:***@127.0.0.1/%zz"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}%zz@127.0.0.1/`),
        "malformed percent-encoding in the password of amqp://guest:***@127.0.0.1/"
      )
    })))

  it.live("refuses query values out of range or not integers, and unknown parameters", () =>
    leakChecked(Effect.gen(function*() {
      const base = `amqp://guest:${password}@127.0.0.1/`
      assert.strictEqual(
        yield* configError(`${base}?heartbeat=abc`),
        "query parameter heartbeat must be an integer, got \"abc\""
      )
      assert.strictEqual(
        yield* configError(`${base}?frame_max=1.5`),
        "query parameter frame_max must be an integer, got \"1.5\""
      )
      assert.strictEqual(
        yield* configError(`${base}?channel_max=`),
        "query parameter channel_max must be an integer, got \"\""
      )
      const outOfRange: ReadonlyArray<readonly [string, string]> = [
        ["frame_max=4096", "frameMax must be 0 (no limit) or at least 8192, got 4096"],
        ["frame_max=4294967296", "frameMax must be an integer from 0 to 4294967295, got 4294967296"],
        ["heartbeat=-1", "heartbeat must be an integer from 0 to 65535, got -1"],
        ["channel_max=65536", "channelMax must be an integer from 0 to 65535, got 65536"],
        ["connection_timeout=0", "connectionTimeout must be an integer from 1 to 3600000, got 0"],
        ["auth_mechanism=cram-md5", "authMechanism must be PLAIN, AMQPLAIN or EXTERNAL, got \"CRAM-MD5\""],
        [
          "heartbeat=-1&channel_max=70000",
          [
            "heartbeat must be an integer from 0 to 65535, got -1",
            "channelMax must be an integer from 0 to 65535, got 70000"
          ].join("; ")
        ]
      ]
      for (const [query, problem] of outOfRange) {
        assert.strictEqual(yield* configError(`${base}?${query}`), `invalid connection options: ${problem}`)
      }
      assert.strictEqual(
        yield* configError(`${base}?heartbeat=5&verify=none`),
        "unknown query parameter verify in amqp://guest:***@127.0.0.1/?heartbeat=5&verify=none"
      )
    })))

  it.live("sends the decoded vhost to the broker: /%2f opens /, /my%20vhost and / are refused by name", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const root = `amqp://guest:guest@127.0.0.1:${broker.amqpPort}`
          yield* Effect.scoped(AmqpConnection.fromUrl(`${root}/%2f`, { connectionName: names.next("root") }))
          // An empty path is the vhost "", which the broker has not either (hence two spaces).
          const refusals: ReadonlyArray<readonly [string, string]> = [
            ["/my%20vhost", "NOT_ALLOWED - vhost my vhost not found"],
            ["/", "NOT_ALLOWED - vhost  not found"]
          ]
          for (const [path, replyText] of refusals) {
            const error = yield* Effect.scoped(
              AmqpConnection.fromUrl(`${root}${path}`, { connectionName: names.next("missing") })
            ).pipe(Effect.flip, Effect.timeout("5 seconds"))
            assert.deepStrictEqual(
              (error as AmqpConnectionError).reason,
              new ServerClosed({
                replyCode: 530,
                replyText,
                classId: 10,
                methodId: 40,
                method: "connection.open",
                duringHandshake: true
              }),
              path
            )
            assert.isTrue((error as AmqpConnectionError).isPermanent, path)
          }
        }),
        names.own(broker)
      )
    }))
})

/** Expects `effect` to fail with an `AmqpConfigError`; returns its message. */
const refusal = <A, R>(effect: Effect.Effect<A, AmqpConfigError, R>) =>
  Effect.flip(effect).pipe(Effect.map((error) => {
    assert.strictEqual(error._tag, "AmqpConfigError")
    return error.message
  }))

describe("options written out", () => {
  it.live("fills in defaults and wraps a plain password", () =>
    leakChecked(Effect.gen(function*() {
      const options = yield* ConnectionConfig.make({ host: "broker.internal", password: "s3cret", heartbeat: 0 })
      assert.deepStrictEqual(
        { ...options, password: Redacted.value(options.password) },
        { ...ConnectionConfig.defaults, host: "broker.internal", password: "s3cret", heartbeat: 0 }
      )
    })))

  it.live("names every bad option at once, whatever type a JavaScript caller passed", () =>
    leakChecked(Effect.gen(function*() {
      const untyped = { host: "", port: "5672", closeTimeout: 1.5, authMechanism: "plain", username: 7 }
      assert.strictEqual(
        yield* refusal(ConnectionConfig.make(untyped as unknown as ConnectionConfig.ConnectionOptionsInput)),
        "invalid connection options: " + [
          "host must be a non-empty string, got \"\"",
          "port must be an integer from 1 to 65535, got \"5672\"",
          "username must be a string, got 7",
          "closeTimeout must be an integer from 1 to 3600000, got 1.5",
          "authMechanism must be PLAIN, AMQPLAIN or EXTERNAL, got \"plain\""
        ].join("; ")
      )
    })))

  it.live("measures the vhost in bytes, as the wire does: 255 fit, 256 do not", () =>
    leakChecked(Effect.gen(function*() {
      const fits = "é".repeat(127) + "x"
      assert.strictEqual(Buffer.byteLength(fits), 255)
      assert.strictEqual((yield* ConnectionConfig.make({ vhost: fits })).vhost, fits)
      assert.strictEqual(
        yield* refusal(ConnectionConfig.make({ vhost: "é".repeat(128) })),
        "invalid connection options: vhost must be at most 255 bytes in UTF-8"
      )
    })))
})

const fromProvider = (provider: ConfigProvider.ConfigProvider) =>
  ConnectionConfig.fromConfig.pipe(Effect.provide(ConfigProvider.layer(provider)))

describe("options from the ConfigProvider", () => {
  it.live("reads AMQP_URL, through the provider's own key mapping, and defaults to the local guest broker", () =>
    leakChecked(Effect.gen(function*() {
      const nested = ConfigProvider.fromUnknown({ amqp_url: "amqp://u:p@rabbit.test:5000/v" }).pipe(
        ConfigProvider.mapInput((path) => path.map((segment) => String(segment).toLowerCase()))
      )
      const options = yield* fromProvider(nested)
      assert.deepStrictEqual([options.host, options.port, options.vhost], ["rabbit.test", 5000, "v"])
      const fallback = yield* fromProvider(ConfigProvider.fromEnv({ env: {} }))
      assert.deepStrictEqual(fallback, yield* ConnectionConfig.fromUrl("amqp://guest:guest@127.0.0.1:5672"))
    })))

  it.live("refuses an AMQP_URL that is not a string, a bad URL in it, and a provider that cannot be read", () =>
    leakChecked(Effect.gen(function*() {
      assert.strictEqual(
        yield* refusal(fromProvider(ConfigProvider.fromUnknown({ AMQP_URL: { host: "rabbit" } }))),
        "AMQP_URL must be a string"
      )
      assert.strictEqual(
        yield* refusal(fromProvider(ConfigProvider.fromEnv({ env: { AMQP_URL: `amqp://guest:${password}@h:0` } }))),
        "invalid connection options: port must be an integer from 1 to 65535, got 0"
      )
      const sealed = ConfigProvider.make(() => Effect.fail(new ConfigProvider.SourceError({ message: "vault sealed" })))
      assert.strictEqual(yield* refusal(fromProvider(sealed)), "AMQP_URL could not be read: vault sealed")
    })))
})

/** The message of the refusal of `input`, options of any JavaScript type. */
const untyped = (input: unknown) =>
  Effect.map(Effect.flip(ConnectionConfig.make(input as ConnectionConfig.ConnectionOptionsInput)), (e) => e.message)

describe("input from outside the type system", () => {
  it.live("a password cut short by an unencoded '/' or '?' is refused, and never shown", () =>
    leakChecked(Effect.gen(function*() {
      // The URL parser would read "1234" as the port, and the rest of the password as the query or vhost.
      const urls: ReadonlyArray<readonly [string, string]> = [
        [`amqp://guest:1234?${password}@127.0.0.1:5672/`, "amqp://guest:***@127.0.0.1:5672/"],
        [`amqp://guest:5?heartbeat=${password}@127.0.0.1`, "amqp://guest:***@127.0.0.1"],
        [`amqp://guest:ab/${password}@127.0.0.1/`, "amqp://guest:***@127.0.0.1/"],
        [`amqp://gu/est:${password}@127.0.0.1/`, "amqp://gu/est:***@127.0.0.1/"]
      ]
      for (const [url, shown] of urls) {
        assert.strictEqual(
          yield* configError(url),
          `AMQP URL has an "@" after its host: encode "/" and "?" in a user name or password as %2F and %3F, ` +
            `and "@" in a vhost or a query value as %40: ${shown}`
        )
      }
      const encoded = yield* ConnectionConfig.fromUrl(`amqp://guest:1234%3F${password}@127.0.0.1/v%40x`)
      assert.deepStrictEqual([Redacted.value(encoded.password), encoded.vhost], [`1234?${password}`, "v@x"])
    })))

  it.live("tabs, line breaks, repeated and non-decimal query values are refused", () =>
    leakChecked(Effect.gen(function*() {
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@127.0.0.1:56\t72/`),
        "AMQP URL must not contain tabs or line breaks: amqp://guest:***@127.0.0.1:56\t72/"
      )
      assert.strictEqual(
        yield* configError(`amqp://guest:${password}@h/?heartbeat=5&heartbeat=6`),
        "query parameter heartbeat is given twice in amqp://guest:***@h/?heartbeat=5&heartbeat=6"
      )
      for (const value of ["0x10", "1e4", " 5", "+5"]) {
        assert.strictEqual(
          yield* configError(`amqp://guest:${password}@h/?frame_max=${encodeURIComponent(value)}`),
          `query parameter frame_max must be an integer, got "${value}"`
        )
      }
    })))

  it.live("values of the wrong JavaScript type fail with AmqpConfigError that names them", () =>
    leakChecked(Effect.gen(function*() {
      assert.strictEqual(yield* untyped(null), "connection options must be an object, got null")
      assert.strictEqual(
        yield* untyped({ port: Object.create(null), heartbeat: 5672n, host: Symbol("h") }),
        "invalid connection options: host must be a non-empty string, got a value of type symbol; " +
          "port must be an integer from 1 to 65535, got a value of type object; " +
          "heartbeat must be an integer from 0 to 65535, got the bigint 5672n"
      )
      assert.strictEqual(
        (yield* Effect.flip(ConnectionConfig.fromUrl(42 as unknown as string))).message,
        "AMQP URL must be a string, got 42"
      )
    })))

  it.live("IPv6 hosts, NaN, Infinity and numbers past 2^53 are read exactly or refused", () =>
    leakChecked(Effect.gen(function*() {
      const v6 = yield* ConnectionConfig.fromUrl("amqp://u:p@[::1]:5673/v")
      assert.deepStrictEqual([v6.host, v6.port, v6.username, v6.vhost], ["::1", 5673, "u", "v"])
      assert.strictEqual(
        (yield* Effect.flip(ConnectionConfig.make({ heartbeat: Number.NaN, frameMax: Infinity, channelMax: 2 ** 53 })))
          .message,
        "invalid connection options: heartbeat must be an integer from 0 to 65535, got NaN; " +
          "frameMax must be an integer from 0 to 4294967295, got Infinity; " +
          "channelMax must be an integer from 0 to 65535, got 9007199254740992"
      )
      const withValue = yield* fromProvider(
        ConfigProvider.make(() => Effect.succeed(ConfigProvider.makeRecord(new Set(["x"]), "amqp://h:5999/v")))
      )
      assert.deepStrictEqual([withValue.host, withValue.port, withValue.vhost], ["h", 5999, "v"])
      assert.strictEqual(
        yield* refusal(fromProvider(ConfigProvider.fromUnknown({ AMQP_URL: ["amqp://h"] }))),
        "AMQP_URL must be a string"
      )
    })))
})
