/**
 * In confirm mode, a publish that waits for a congested socket to drain already holds a confirm
 * window slot. Given up there (a timeout around it), it sent nothing and will get no confirm, so
 * the slot goes back: the window keeps its size for the rest of the channel's life.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { FaultProxy, ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { leakChecked } from "../support/Probe.ts"

describe("a confirm-mode publish given up while the socket is congested", () => {
  it.live("gives its window slot back", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.handshake({ tune: { heartbeat: 0 } })
            const open = yield* client.expectFrame(
              (f) => f._tag === "MethodFrame" && f.method._tag === "channel.open",
              "channel.open"
            )
            const id = open.channel
            yield* client.sendMethod(id, Methods.channelOpenOk())
            yield* client.expect("confirm.select")
            yield* client.sendMethod(id, Methods.confirmSelectOk())
            let published = 0
            while (true) {
              const frame = yield* client.nextFrame({ timeoutMillis: 20_000 })
              if (frame._tag !== "MethodFrame") continue
              const m = frame.method
              if (m._tag === "basic.publish") {
                published++
                // Only the first (large) publish is confirmed; the rest stay outstanding.
                if (published === 1) yield* client.sendMethod(id, Methods.basicAck({ deliveryTag: 1, multiple: false }))
              } else if (m._tag === "channel.close") {
                yield* client.sendMethod(id, Methods.channelCloseOk())
              } else if (m._tag === "connection.close") {
                yield* client.sendMethod(0, Methods.connectionCloseOk())
                return published
              }
            }
          })),
        { startImmediately: true }
      )
      const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: peer.port } })
      const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${proxy.port}`, {
        heartbeat: 0,
        closeTimeout: 500
      })
      const window = 3
      const channel = yield* AmqpChannel.make(connection, { maxOutstandingConfirms: window })
      yield* channel.confirmSelect

      yield* proxy.stopReading("clientToServer")
      const big = yield* channel.publishAsync("", "q", new Uint8Array(24 * 1024 * 1024))
      assert.isTrue(connection.core.transport.congested(), "the socket should be congested")

      // Two publishes given up while they wait for the socket to drain.
      for (let i = 0; i < 2; i++) {
        const given = yield* channel.publishAsync("", "q", new Uint8Array(10)).pipe(
          Effect.timeout("100 millis"),
          Effect.exit
        )
        assert.isTrue(Exit.isFailure(given))
      }

      yield* proxy.resumeReading("clientToServer")
      yield* big.pipe(Effect.timeout("10 seconds"))

      // Nothing is outstanding now: a window of 3 admits 3 publishes at once.
      let admitted = 0
      for (let i = 0; i < window; i++) {
        const publish = yield* channel.publishAsync("", "q", new Uint8Array(10)).pipe(
          Effect.timeout("500 millis"),
          Effect.exit
        )
        if (Exit.isSuccess(publish)) admitted++
      }
      assert.strictEqual(admitted, window, `only ${admitted} of ${window} publishes were admitted to an empty window`)
    })))
})
