/**
 * A channel numbers its confirm-mode publishes as the broker does: from the first publish the
 * broker reads after `confirm.select`, not from the select-ok.
 * - A `confirmSelect` given up before its select-ok still put the channel in confirm mode: the
 *   next publish is the broker's tag 1, and a later rejected publish fails as nacked (it was
 *   reported confirmed, by the ack of the publish before it).
 * - A plain publish admitted before `confirm.select` but held until after it (a congested socket)
 *   is numbered by the broker too: the confirm-mode publish behind it is tag 2, and its nack is
 *   its own (it was taken as tag 1 and confirmed by the plain publish's ack).
 */
import { AmqpChannel, AmqpConnection, AmqpPublishError, Nacked } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { FaultProxy, ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { onSharedBroker, unique } from "../support/channelKit.ts"
import { leakChecked } from "../support/Probe.ts"

describe("confirm numbering", () => {
  it.live("after a confirmSelect given up before its select-ok, a rejected publish fails as nacked", () =>
    Effect.gen(function*() {
      const queue = unique("confirm-numbering")
      const outcome = yield* onSharedBroker((connect) =>
        Effect.gen(function*() {
          const connection = yield* connect()
          const admin = yield* AmqpChannel.make(connection)
          const channel = yield* AmqpChannel.make(connection)
          // A full queue rejects further publishes with basic.nack.
          yield* admin.queueDeclare(queue, { arguments: { "x-max-length": 1, "x-overflow": "reject-publish" } })

          const select = yield* Effect.forkChild(channel.confirmSelect, { startImmediately: true })
          yield* Fiber.interrupt(select)
          yield* channel.publish("", queue, Buffer.from("first")).pipe(Effect.timeout("5 seconds"))
          const second = yield* channel.publish("", queue, Buffer.from("second")).pipe(
            Effect.timeout("5 seconds"),
            Effect.flip
          )
          const stored = (yield* admin.queueDeclare(queue, { passive: true })).messageCount
          yield* admin.queueDelete(queue)
          return { second, stored }
        })
      )
      assert.strictEqual(outcome.stored, 1)
      assert.deepStrictEqual(outcome.second, new AmqpPublishError({ reason: new Nacked({ deliveryTag: 2 }) }))
    }))

  it.live("a plain publish held past confirm.select is counted: the next confirm is its own", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const served = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.handshake({ tune: { heartbeat: 0 } })
            yield* client.expect("channel.open")
            yield* client.sendMethod(1, Methods.channelOpenOk())
            const seen: Array<string> = []
            let selected = false
            let numbered = 0
            while (true) {
              const frame = yield* client.nextFrame({ timeoutMillis: 20_000 })
              if (frame._tag !== "MethodFrame") continue
              const m = frame.method
              if (m._tag === "confirm.select") {
                selected = true
                seen.push("confirm.select")
                yield* client.sendMethod(1, Methods.confirmSelectOk())
              } else if (m._tag === "basic.publish") {
                seen.push(`publish ${m.routingKey}`)
                if (!selected) continue
                // As a full queue would: the first numbered publish is taken, the second refused.
                numbered++
                const answer = numbered === 1
                  ? Methods.basicAck({ deliveryTag: 1, multiple: false })
                  : Methods.basicNack({ deliveryTag: numbered, multiple: false, requeue: false })
                yield* client.sendMethod(1, answer)
              } else if (m._tag === "channel.close") {
                yield* client.sendMethod(1, Methods.channelCloseOk())
              } else if (m._tag === "connection.close") {
                yield* client.sendMethod(0, Methods.connectionCloseOk())
                return seen
              }
            }
          })),
        { startImmediately: true }
      )
      const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: peer.port } })
      const outcome = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${proxy.port}`, {
          heartbeat: 0
        })
        const channel = yield* AmqpChannel.make(connection)
        yield* proxy.stopReading("clientToServer")
        yield* channel.publish("", "filler", new Uint8Array(24 * 1024 * 1024))
        assert.isTrue(connection.core.transport.congested(), "the socket should be congested")
        const held = yield* Effect.forkChild(channel.publish("", "held", Buffer.from("plain")), {
          startImmediately: true
        })
        const select = yield* Effect.forkChild(channel.confirmSelect, { startImmediately: true })
        yield* proxy.resumeReading("clientToServer")
        yield* Fiber.join(select).pipe(Effect.timeout("10 seconds"))
        yield* Fiber.join(held).pipe(Effect.timeout("10 seconds"))
        return yield* channel.publish("", "confirmed", Buffer.from("second")).pipe(
          Effect.timeout("5 seconds"),
          Effect.flip
        )
      }))
      const seen = yield* Fiber.join(served)
      assert.deepStrictEqual(seen, ["publish filler", "confirm.select", "publish held", "publish confirmed"])
      assert.deepStrictEqual(outcome, new AmqpPublishError({ reason: new Nacked({ deliveryTag: 2 }) }))
    })))
})
