/**
 * A link that goes dead without a FIN or RST: the fault proxy blackholes it, the client notices by
 * its heartbeat (2 s, lower than the broker's 60 s, so it wins) after two silent intervals, and
 * drops the socket without the polite close it would try on a live link.
 */
import { AmqpConnection } from "@effect-amqp/client"
import { FaultProxy, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { leakChecked, Names } from "../support/Probe.ts"
import * as Tap from "../support/Tap.ts"

const names = new Names("connection-heartbeat")

describe("heartbeat", () => {
  it.live("fails with HeartbeatTimeout about two intervals into a blackhole and sends no connection.close", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
          const tap = yield* Tap.make({ host: "127.0.0.1", port: proxy.port })
          const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${tap.port}`, {
            heartbeat: 2,
            connectionName: names.next("blackhole")
          })
          assert.strictEqual(connection.tuned.heartbeat, 2)

          // Blackhole right after a heartbeat from the broker, so the silence starts with the blackhole.
          const recording = yield* tap.connection(0)
          const since = Date.now()
          yield* recording.until(
            (r) => r.steps.find((s) => s.from === "server" && s.what === "heartbeat" && s.at >= since),
            "a heartbeat from the broker",
            3_000
          )
          const blackholedAt = Date.now()
          yield* proxy.setBlackhole(true)
          const error = yield* connection.closed
          const failedAt = Date.now()

          assert.strictEqual(error.reason._tag, "HeartbeatTimeout")
          const reason = error.reason as { heartbeatSeconds: number; silentMillis: number }
          assert.strictEqual(reason.heartbeatSeconds, 2)
          assert.isAtLeast(reason.silentMillis, 4_000)
          assert.isAtLeast(failedAt - blackholedAt, 3_500)
          assert.isAtMost(failedAt - blackholedAt, 6_000)

          // What the client sent into the dead link: heartbeats only, then its socket went at once.
          const ended = yield* recording.until(
            (r) => r.find("client", "FIN") ?? r.find("client", "RST"),
            "the client to end its socket",
            3_000
          )
          const sent = recording.steps.filter((s) => s.from === "client" && s.at >= blackholedAt).map((s) => s.what)
          const frames = sent.filter((what) => !["FIN", "RST", "error", "closed"].includes(what))
          assert.isAbove(frames.length, 0)
          assert.deepStrictEqual(new Set(frames), new Set(["heartbeat"]), sent.join(", "))
          assert.isBelow(ended.at - failedAt, 500)
        }),
        names.own(broker)
      )
    }))
})
