/**
 * More URLs: forms RabbitMQ's URI spec accepts (a port without a host, "@" in a vhost or query
 * value after host:port or an IPv6 literal), and a password where it does not belong (in the user
 * name's "/" or "?", without "@host"), which no message may show. Parsing only: nothing connects.
 */
import { ConnectionConfig } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { base, parse } from "../support/Urls.ts"

const secret = "hunter2-Pa55"

describe("more URLs the URI spec accepts", () => {
  it.live("a port without a host (amqp://:10000, the spec's own example) takes the default host", () =>
    leakChecked(Effect.gen(function*() {
      const got = [yield* parse("amqp://:10000"), yield* parse("amqp://:10000/v")]
      assert.deepStrictEqual(got, [{ ...base, port: 10000 }, { ...base, port: 10000, vhost: "v" }])
    })))

  it.live("an @ in a query value or vhost after host:port or an IPv6 literal is accepted", () =>
    leakChecked(Effect.gen(function*() {
      const got = [
        yield* parse("amqp://host:5672/?connection_name=worker@node-1"),
        yield* parse("amqp://[::1]/team@site"),
        yield* parse("amqp://[::1]:5673?connection_name=a@b")
      ]
      assert.deepStrictEqual(got, [
        { ...base, host: "host", vhost: "", connectionName: "worker@node-1" },
        { ...base, host: "::1", vhost: "team@site" },
        { ...base, host: "::1", port: 5673, connectionName: "a@b" }
      ])
    })))

  it.live("forms that parse right: case, amqps, IPv6 with credentials, encodings, empty parts", () =>
    leakChecked(Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
        ["AMQP://host", { host: "host" }],
        ["AMQPS://u:p@host", { host: "host", port: 5671, username: "u", password: "p", tls: true }],
        ["amqps://", { port: 5671, tls: true }],
        ["amqp://u:p@[::1]:5673/v", { host: "::1", port: 5673, username: "u", password: "p", vhost: "v" }],
        ["amqp://u@[::1]", { host: "::1", username: "u" }],
        ["amqp://:@/", { username: "", password: "", vhost: "" }],
        ["amqp://u:p@:5673", { port: 5673, username: "u", password: "p" }],
        ["amqp://ho%40st", { host: "ho@st" }],
        ["amqp://u:p%3Aq%2F%3F%40@host", { host: "host", username: "u", password: "p:q/?@" }],
        ["amqp://u:p:q@host", { host: "host", username: "u", password: "p:q" }],
        ["amqp://u:sec ret@host", { host: "host", username: "u", password: "sec ret" }],
        ["amqp://host?connection_name=a%3Db%26c", { host: "host", connectionName: "a=b&c" }],
        ["amqp://host?connection_name=a=b", { host: "host", connectionName: "a=b" }],
        ["amqp://u:p@host/v@x", { host: "host", username: "u", password: "p", vhost: "v@x" }]
      ]
      const got = []
      for (const [url] of cases) got.push(yield* parse(url))
      assert.deepStrictEqual(got, cases.map(([, expected]) => ({ ...base, ...expected })))
    })))
})

describe("a password where it does not belong", () => {
  it.live("a '/' in the user name is refused, not read as a host and a vhost", () =>
    leakChecked(Effect.gen(function*() {
      const got = yield* parse(`amqp://us/er:${secret}@host`)
      assert.isFalse(JSON.stringify(got).includes(secret), JSON.stringify(got))
    })))

  it.live("user:password with the '@host' left off: the malformed-URL message hides the password", () =>
    leakChecked(Effect.gen(function*() {
      const shown: Array<string> = []
      for (const url of [`amqp://user:${secret}`, `amqp://user:${secret}/vhost`]) {
        const exit = yield* Effect.exit(ConnectionConfig.fromUrl(url))
        if (Exit.isFailure(exit) && String(exit.cause).includes(secret)) shown.push(url)
      }
      assert.deepStrictEqual(shown, [])
    })))

  it.live("a '?' in the user name is refused, and the message hides the password", () =>
    leakChecked(Effect.gen(function*() {
      const exit = yield* Effect.exit(ConnectionConfig.fromUrl(`amqp://us?er:${secret}@host`))
      assert.isTrue(Exit.isFailure(exit))
      assert.isFalse(String(Exit.isFailure(exit) ? exit.cause : "").includes(secret))
    })))

  it.live("odd URLs that must not show the password", () =>
    leakChecked(Effect.gen(function*() {
      const urls = [
        ` amqp://u:${secret}@host`,
        `amqp:u:${secret}@host`,
        `amqp://u:50%${secret}@host`,
        `amqp://u:${secret}%E0%A4%A@host`,
        `amqp://u:${secret}@ho%zzst`,
        `amqp://u:${secret}@host:-1`,
        `amqp://u:${secret}@host:abc`,
        `amqps://u:${secret}@host:5671:1`,
        `amqp://u:${secret}@[fe80::1%25eth0]`,
        `amqp://u:${secret}@[::1]x`,
        `amqp://u:${secret}@host\\x`,
        `amqp://u:pa/${secret}@host/v@x`,
        `amqp://u:pa?${secret}@host`,
        `amqp://u%zz:${secret}@host`,
        `amqpx://u:${secret}@host`,
        `amqp://u:${secret}@host/%2`
      ]
      const shown: Array<string> = []
      for (const url of urls) {
        const exit = yield* Effect.exit(ConnectionConfig.fromUrl(url))
        if (Exit.isFailure(exit) && String(exit.cause).includes(secret)) shown.push(url)
      }
      assert.deepStrictEqual(shown, [])
    })))
})
