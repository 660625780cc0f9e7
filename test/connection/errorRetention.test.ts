/**
 * An error the application keeps does not keep the connection it came from alive: V8 holds the
 * receiver of every frame of an error's stack until the stack is formatted, and a connection's
 * error is made in a method of its state machine, a channel's in one of the channel's (which holds
 * its connection), and those hold the socket and the encoder's buffers.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { collectAll } from "../support/Memory.ts"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, openChannel, peerUrl, servedBy } from "../support/scriptedAmqp.ts"

describe("a kept error", () => {
  it.live("of a connection or of a channel keeps no connection alive", () =>
    leakChecked(Effect.gen(function*() {
      const kept: Array<unknown> = []
      const connections: Array<WeakRef<object>> = []
      for (let i = 0; i < 3; i++) {
        // The broker closes the channel (404), then drops the connection.
        const peer = yield* servedBy((client) =>
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
        )
        yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* AmqpConnection.fromUrl(peerUrl(peer.port), { heartbeat: 0, closeTimeout: 500 })
          const channel = yield* AmqpChannel.make(connection)
          connections.push(new WeakRef(connection.core))
          kept.push(yield* channel.queueDeclare("q", { passive: true }).pipe(Effect.flip))
          kept.push(yield* connection.closed)
        }))
      }
      yield* Effect.promise(collectAll)
      const alive = connections.filter((ref) => ref.deref() !== undefined).length
      assert.deepStrictEqual(kept.map((error) => (error as { _tag: string })._tag), [
        "AmqpChannelError",
        "AmqpConnectionError",
        "AmqpChannelError",
        "AmqpConnectionError",
        "AmqpChannelError",
        "AmqpConnectionError"
      ])
      assert.strictEqual(alive, 0, "connections reachable from the errors kept")
    })))
})
