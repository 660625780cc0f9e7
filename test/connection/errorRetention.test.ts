/**
 * An error the application keeps does not keep the connection it came from alive. V8 holds the
 * receiver of every frame of a captured stack until the stack is formatted, and the client's
 * errors are made in methods of its connection's and channels' state machines, which hold the
 * socket and the encoder's buffers; so they capture no stack. Checked for the errors of a channel
 * the broker closed and of its connection, of a publish left unconfirmed, and of an operation on a
 * closed channel: three connections each, none reachable once collected.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { collectAll } from "../support/Memory.ts"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, openChannel, peerUrl, type Script, servedBy } from "../support/scriptedAmqp.ts"

/** After the handshake and channel.open: the broker answers a queue.declare by closing the channel (404). */
const closingTheChannel: Script = (client) =>
  Effect.gen(function*() {
    yield* openChannel(client)
    yield* client.expect("queue.declare", { channel: CHANNEL })
    yield* client.sendMethod(
      CHANNEL,
      Methods.channelClose({ replyCode: 404, replyText: "NOT_FOUND", classId: 50, methodId: 10 })
    )
    yield* client.expect("channel.close-ok", { channel: CHANNEL })
    yield* client.close("fin")
  })

/** After confirm.select: the link drops once a publish arrives. */
const droppingAPublish: Script = (client) =>
  Effect.gen(function*() {
    yield* openChannel(client)
    yield* client.expect("confirm.select", { channel: CHANNEL })
    yield* client.sendMethod(CHANNEL, Methods.confirmSelectOk())
    yield* client.expect("basic.publish", { channel: CHANNEL })
    yield* client.close("fin")
  })

/**
 * Three times: a connection to a peer running `script`, and the errors `keep` gives on a channel
 * of it; then how many of those connections are still reachable after a full collection.
 */
const reachableAfterKeeping = (
  script: Script,
  keep: (
    channel: AmqpChannel.AmqpChannel,
    connection: AmqpConnection.AmqpConnection
  ) => Effect.Effect<Array<unknown>, unknown>
) =>
  leakChecked(Effect.gen(function*() {
    const kept: Array<unknown> = []
    const connections: Array<WeakRef<object>> = []
    for (let i = 0; i < 3; i++) {
      const peer = yield* servedBy(script)
      yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* AmqpConnection.fromUrl(peerUrl(peer.port), { heartbeat: 0, closeTimeout: 500 })
        const channel = yield* AmqpChannel.make(connection)
        connections.push(new WeakRef(connection.core))
        kept.push(...yield* keep(channel, connection))
      }))
      yield* peer.client
    }
    yield* Effect.promise(collectAll)
    return {
      kept: kept.map((error) => (error as { _tag: string })._tag),
      reachable: connections.filter((ref) => ref.deref() !== undefined).length
    }
  }))

describe("a kept error", () => {
  it.live("of a channel the broker closed, and of its connection, keeps no connection alive", () =>
    Effect.gen(function*() {
      const { kept, reachable } = yield* reachableAfterKeeping(
        closingTheChannel,
        (channel, connection) =>
          Effect.gen(function*() {
            const closed = yield* channel.queueDeclare("q", { passive: true }).pipe(Effect.flip)
            return [closed, yield* connection.closed]
          })
      )
      assert.deepStrictEqual(kept, Array.from({ length: 3 }, () => ["AmqpChannelError", "AmqpConnectionError"]).flat())
      assert.strictEqual(reachable, 0)
    }))

  it.live("of a publish left unconfirmed keeps no connection alive", () =>
    Effect.gen(function*() {
      const { kept, reachable } = yield* reachableAfterKeeping(droppingAPublish, (channel) =>
        Effect.gen(function*() {
          yield* channel.confirmSelect
          return [yield* channel.publish("", "q", new Uint8Array([1])).pipe(Effect.flip)]
        }))
      assert.deepStrictEqual(kept, Array(3).fill("AmqpPublishError"))
      assert.strictEqual(reachable, 0)
    }))

  it.live("of an operation on a closed channel keeps no connection alive", () =>
    Effect.gen(function*() {
      const { kept, reachable } = yield* reachableAfterKeeping(closingTheChannel, (channel) =>
        Effect.gen(function*() {
          yield* channel.queueDeclare("q", { passive: true }).pipe(Effect.flip)
          return [yield* channel.queueDeclare("q2").pipe(Effect.flip)]
        }))
      assert.deepStrictEqual(kept, Array(3).fill("AmqpClosedError"))
      assert.strictEqual(reachable, 0)
    }))
})
