/**
 * `AmqpClient` across the `hosts` option: a list that cannot be used (empty, a port out of range)
 * fails `make` at once with `AmqpConfigError`; otherwise each attempt takes the next host, at the
 * reconnect schedule's pace, and its events name the host and why the attempt failed.
 */
import { AmqpClient, AmqpConfigError, type AmqpConnectionError, ConnectionConfig } from "@effect-amqp/client"
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import * as Net from "node:net"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("hosts-option")

/** A loopback server that accepts TCP and never answers. */
const hungServer = Effect.acquireRelease(
  Effect.callback<{ port: number; server: Net.Server; sockets: Set<Net.Socket> }>((resume) => {
    const sockets = new Set<Net.Socket>()
    const server = Net.createServer((s) => {
      sockets.add(s)
      s.on("error", () => {})
      s.on("close", () => sockets.delete(s))
    })
    server.listen(
      0,
      "127.0.0.1",
      () => resume(Effect.succeed({ port: (server.address() as Net.AddressInfo).port, server, sockets }))
    )
  }),
  ({ server, sockets }) =>
    Effect.callback<void>((resume) => {
      for (const s of sockets) s.destroy()
      server.close(() => resume(Effect.void))
    })
)

/** A loopback port nothing listens on. */
const refusedPort = Effect.callback<number>((resume) => {
  const server = Net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as Net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** What `make` fails with for `hosts`, within 5 s, leaving nothing behind. */
const makeFailure = (hosts: ReadonlyArray<{ readonly host: string; readonly port: number }>) =>
  leakChecked(Effect.gen(function*() {
    const options = yield* ConnectionConfig.make({ host: "127.0.0.1", port: 1, connectionTimeout: 300 })
    return yield* AmqpClient.make(options, { hosts, reconnect: Schedule.recurs(1) }).pipe(
      Effect.timeout("5 seconds"),
      Effect.flip
    )
  }))

describe("AmqpClient hosts that cannot be used", () => {
  it.live("an empty list fails make with AmqpConfigError", () =>
    Effect.gen(function*() {
      const error = yield* makeFailure([])
      assert.deepStrictEqual(error, new AmqpConfigError({ message: "invalid client options: hosts is empty" }))
    }))

  it.live("a port out of range fails make with AmqpConfigError", () =>
    Effect.gen(function*() {
      const error = yield* makeFailure([{ host: "127.0.0.1", port: 5672 }, { host: "127.0.0.1", port: 70_000 }])
      assert.deepStrictEqual(
        error,
        new AmqpConfigError({
          message: "invalid client options: hosts[1].port must be an integer from 1 to 65535, got 70000"
        })
      )
    }))
})

describe("AmqpClient failover order and events", () => {
  it.live("tries refused, hung, then good host in order, paced by the schedule, with accurate events", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const hung = yield* hungServer
          const refused = yield* refusedPort
          const events: Array<{ at: number; event: AmqpClient.LifecycleEvent }> = []
          const options = yield* ConnectionConfig.make({
            host: "127.0.0.1",
            port: broker.amqpPort,
            connectionTimeout: 400,
            handshakeTimeout: 400,
            connectionName: names.next("order")
          })
          const started = Date.now()
          const client = yield* AmqpClient.make(options, {
            hosts: [
              { host: "127.0.0.1", port: refused },
              { host: "127.0.0.1", port: hung.port },
              { host: "127.0.0.1", port: broker.amqpPort }
            ],
            reconnect: Schedule.spaced("300 millis"),
            onEvent: (event) => events.push({ at: Date.now() - started, event })
          })
          const connection = yield* client.connection
          assert.isTrue(yield* connection.isOpen)
          const summary = events.map(({ event }) =>
            event._tag === "Connecting"
              ? `Connecting ${event.port}`
              : event._tag === "AttemptFailed"
              ? `AttemptFailed ${event.port} ${event.error.reason._tag}`
              : event._tag === "Connected"
              ? `Connected ${event.port}`
              : event._tag
          )
          assert.deepStrictEqual(summary, [
            `Connecting ${refused}`,
            `AttemptFailed ${refused} ConnectFailed`,
            `Connecting ${hung.port}`,
            `AttemptFailed ${hung.port} Timeout`,
            `Connecting ${broker.amqpPort}`,
            `Connected ${broker.amqpPort}`
          ])
          const failed = events.filter((e) => e.event._tag === "AttemptFailed")
          const connecting = events.filter((e) => e.event._tag === "Connecting")
          // The schedule's 300 ms between a failed attempt and the next.
          assert.isAtLeast(connecting[1]!.at - failed[0]!.at, 280)
          assert.isAtLeast(connecting[2]!.at - failed[1]!.at, 280)
          const timeout = (failed[1]!.event as { error: AmqpConnectionError }).error.reason
          assert.strictEqual(timeout._tag, "Timeout")
        }),
        names.own(broker)
      )
    }))
})
