/**
 * URLs as RabbitMQ's URI spec (and RFC 3986) write them: the spec's examples, a host left out, an
 * empty password, "@" in a vhost or query value, a repeated auth_mechanism; and no message that
 * shows a password, however odd the URL. Parsing only: nothing connects.
 */
import { ConnectionConfig } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { base, parse } from "../support/Urls.ts"

const secret = "hunter2-Pa55"

describe("URLs the URI spec accepts", () => {
  it.live("RabbitMQ URI spec examples", () =>
    leakChecked(Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
        ["amqp://user:pass@host:10000/vhost", {
          host: "host",
          port: 10000,
          username: "user",
          password: "pass",
          vhost: "vhost"
        }],
        ["amqp://user%61:%61pass@ho%61st:10000/v%2fhost", {
          host: "hoast",
          port: 10000,
          username: "usera",
          password: "apass",
          vhost: "v/host"
        }],
        ["amqp://", {}],
        ["amqp://user@", { username: "user" }],
        ["amqp://user:pass@", { username: "user", password: "pass" }],
        ["amqp://host", { host: "host" }],
        ["amqp:///vhost", { vhost: "vhost" }],
        ["amqp://host/", { host: "host", vhost: "" }],
        ["amqp://host/%2f", { host: "host", vhost: "/" }],
        ["amqp://[::1]", { host: "::1" }],
        ["amqp://[::1]:5673/%2f?heartbeat=5", { host: "::1", port: 5673, heartbeat: 5 }],
        ["amqp://us%40er:p%40ss@host/v", { host: "host", username: "us@er", password: "p@ss", vhost: "v" }],
        ["amqp://user:p@ss@host/v", { host: "host", username: "user", password: "p@ss", vhost: "v" }]
      ]
      const got = []
      for (const [url] of cases) got.push(yield* parse(url))
      assert.deepStrictEqual(got, cases.map(([, expected]) => ({ ...base, ...expected })))
    })))

  it.live("an empty password (user:@) is the empty password, as the URI spec says", () =>
    leakChecked(Effect.gen(function*() {
      const got = [yield* parse("amqp://user:@host"), yield* parse("amqp://:@host")]
      assert.deepStrictEqual(got, [
        { ...base, host: "host", username: "user", password: "" },
        { ...base, host: "host", username: "", password: "" }
      ])
    })))

  it.live("an @ in a query value or the vhost, legal in RFC 3986, is accepted", () =>
    leakChecked(Effect.gen(function*() {
      const got = [
        yield* parse("amqp://guest:guest@host/?connection_name=worker@node-1"),
        yield* parse("amqp://host/team@site")
      ]
      assert.deepStrictEqual(got, [
        { ...base, host: "host", vhost: "", connectionName: "worker@node-1" },
        { ...base, host: "host", vhost: "team@site" }
      ])
    })))

  it.live("auth_mechanism may be given more than once: the first one the client speaks is taken", () =>
    leakChecked(Effect.gen(function*() {
      const got = [
        yield* parse("amqp://host?auth_mechanism=amqplain&auth_mechanism=plain"),
        yield* parse("amqp://host?auth_mechanism=cram-md5&auth_mechanism=external")
      ]
      assert.deepStrictEqual(got, [
        { ...base, host: "host", authMechanism: "AMQPLAIN" },
        { ...base, host: "host", authMechanism: "EXTERNAL" }
      ])
    })))
})

describe("messages about a URL", () => {
  it.live("odd URLs whose errors might quote the password", () =>
    leakChecked(Effect.gen(function*() {
      const urls = [
        `amqp:user:${secret}@host?x=amqp://y`,
        `amqp:user:${secret}@host/?connection_name=http://svc`,
        `amqp://user:${secret}@host:99999`,
        `amqp://user:${secret}@ho st`,
        `amqp://user:${secret}@host/a/b`,
        `amqp://user:${secret}@host/%zz`,
        `amqp://user:${secret}%zz@host`,
        `amqp://user:${secret}@host?heartbeat=x`,
        `amqp://user:${secret}@host?nope=1`,
        `amqp://user:${secret}@host?heartbeat=1&heartbeat=2`,
        `amqp://user:${secret}/x@host`,
        `amqp://user:${secret}?x@host`,
        `amqp://user:${secret}#x@host`,
        `amqp://user:${secret}\t@host`,
        `amqp://user:${secret}@[::1`,
        `http://user:${secret}@host`,
        `amqp:/user:${secret}@host`
      ]
      const shown: Array<string> = []
      for (const url of urls) {
        const exit = yield* Effect.exit(ConnectionConfig.fromUrl(url))
        if (Exit.isFailure(exit)) {
          const text = String(exit.cause)
          if (text.includes(secret)) shown.push(url)
        }
      }
      assert.deepStrictEqual(shown, [])
    })))
})
