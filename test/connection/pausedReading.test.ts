/**
 * Dead-peer detection while a consumer's backpressure pauses reading (more than 8,192 deliveries
 * buffered, no prefetch): the heartbeat lets one read through whenever half an interval passed
 * without one, so a peer that has gone silent with its socket open is taken for dead two intervals
 * after the last bytes it sent, however slowly the consumer works through its buffer; a peer that
 * goes on sending heartbeats is not.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { HEARTBEAT_FRAME, Methods } from "@effect-amqp/protocol"
import type { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Stream } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, delivery, peerUrl, recordUntilEnd, servedBy } from "../support/scriptedAmqp.ts"

/** Enough deliveries at once, with no prefetch, for the consumer's buffer to pause reading. */
const backlog = (() => {
  const deliveries: Array<Uint8Array> = []
  for (let tag = 1; tag <= 9_000; tag++) deliveries.push(delivery("slow", tag, `m${tag}`))
  return Buffer.concat(deliveries)
})()

/** A 1 s heartbeat, a consumer started, the backlog sent, then `after`. */
const servingBacklog = (after: (client: ScriptedPeer.PeerConnection) => Effect.Effect<unknown, unknown>) =>
  servedBy((client) =>
    Effect.gen(function*() {
      yield* client.handshake({ tune: { heartbeat: 1 } })
      yield* client.expect("channel.open", { channel: CHANNEL })
      yield* client.sendMethod(CHANNEL, Methods.channelOpenOk())
      yield* client.expect("basic.consume", { channel: CHANNEL })
      yield* client.sendMethod(CHANNEL, Methods.basicConsumeOk({ consumerTag: "slow" }))
      yield* client.sendRaw(backlog)
      yield* Effect.ignore(after(client))
    })
  )

/** Connects with a 1 s heartbeat and takes a delivery every 100 ms (never idle long enough to stall). */
const slowConsumer = (port: number) =>
  Effect.gen(function*() {
    const connection = yield* AmqpConnection.fromUrl(peerUrl(port), { heartbeat: 1, closeTimeout: 1_000 })
    const channel = yield* AmqpChannel.make(connection)
    let taken = 0
    yield* Effect.forkScoped(
      channel.consume("q", { consumerTag: "slow" }).pipe(
        Stream.runForEach(() => Effect.andThen(Effect.sync(() => taken++), Effect.sleep(100)))
      )
    )
    return { connection, taken: () => taken }
  })

describe("heartbeats while a consumer pauses reading", () => {
  it.live(
    "a peer silent after its backlog, socket open, is taken for dead within a few intervals",
    () =>
      leakChecked(Effect.gen(function*() {
        const peer = yield* servingBacklog(() => Effect.never)
        const outcome = yield* Effect.scoped(Effect.gen(function*() {
          const { connection, taken } = yield* slowConsumer(peer.port)
          const ended = yield* connection.closed.pipe(Effect.timeoutOption(8_000))
          return { ended, taken: taken() }
        }))
        assert.isTrue(Option.isSome(outcome.ended), "the silent peer was not noticed within 8 s")
        assert.strictEqual(Option.getOrThrow(outcome.ended).reason._tag, "HeartbeatTimeout")
        // The consumer was still working through its buffer, far from the point where reading resumes.
        assert.isBelow(outcome.taken, 100)
      })),
    30_000
  )

  it.live("a peer that goes on sending heartbeats is not (the control)", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* servingBacklog((client) =>
        Effect.gen(function*() {
          const beat = Effect.andThen(Effect.sleep(300), client.sendRaw(HEARTBEAT_FRAME))
          yield* Effect.forkChild(Effect.ignore(Effect.forever(beat)))
          yield* recordUntilEnd(client)
        })
      )
      const outcome = yield* Effect.scoped(Effect.gen(function*() {
        const { connection, taken } = yield* slowConsumer(peer.port)
        const ended = yield* connection.closed.pipe(Effect.timeoutOption(4_000))
        return { ended, taken: taken() }
      }))
      assert.isTrue(Option.isNone(outcome.ended), `the live peer was taken for dead: ${String(outcome.ended)}`)
      assert.isAbove(outcome.taken, 10)
    })), 30_000)
})
