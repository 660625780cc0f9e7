/**
 * A connection sends small frames without Nagle's delay, over TLS as over plain TCP: a method written
 * right behind another small frame (a publish, an acknowledgement) leaves at once instead of
 * waiting for the broker to acknowledge the first at the TCP level, which Linux delays by 40 ms
 * when the broker has nothing to send back. node:tls ignores the `noDelay` option it is given, so
 * the client sets it on the socket itself; this checks the delay, not a flag.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("nodelay")

const CYCLES = 15

/** A publish, then at once a passive declare of its queue: milliseconds until the declare's reply. */
const cycleMillis = (channel: AmqpChannel.AmqpChannel, queue: string, body: Uint8Array) =>
  Effect.gen(function*() {
    const started = performance.now()
    yield* channel.publish("", queue, body)
    yield* channel.queueDeclare(queue, { passive: true })
    return performance.now() - started
  })

const median = (values: ReadonlyArray<number>) => values.toSorted((a, b) => a - b)[values.length >> 1]!

describe("a connection, plain or TLS", () => {
  for (const transport of ["plain", "tls"] as const) {
    it.live(`(${transport}) sends a method queued behind a small frame without waiting on Nagle's algorithm`, () =>
      Effect.gen(function*() {
        const broker = yield* SharedBroker.acquire
        const queue = names.next("queue")
        const outcome = yield* leakChecked(
          Effect.gen(function*() {
            const connection = yield* (transport === "tls"
              ? AmqpConnection.fromUrl(broker.tlsUrl, {
                connectionName: names.next("connection"),
                tls: { ca: broker.tlsFiles.ca }
              })
              : AmqpConnection.fromUrl(broker.url, { connectionName: names.next("connection") }))
            const channel = yield* AmqpChannel.make(connection)
            yield* channel.queueDeclare(queue, { exclusive: true })
            const body = new Uint8Array([1, 2, 3])
            const cycles: Array<number> = []
            for (let i = 0; i < CYCLES; i++) cycles.push(yield* cycleMillis(channel, queue, body))
            // The publishes reach the queue a moment after the declares that followed them.
            const stored = yield* channel.queueDeclare(queue, { passive: true }).pipe(
              Effect.map((ok) => ok.messageCount),
              Effect.repeat({ until: (count) => count >= CYCLES, schedule: Schedule.spaced("20 millis"), times: 100 })
            )
            return { stored, millis: cycles }
          }),
          names.own(broker)
        )
        assert.strictEqual(outcome.stored, CYCLES)
        // With Nagle's algorithm nearly every cycle took 40 ms or more; without it about 1 ms.
        const millis = outcome.millis
        assert.isBelow(median(millis), 20, `cycle times ${millis.map((m) => m.toFixed(1)).join(", ")} ms`)
      }))
  }
})
