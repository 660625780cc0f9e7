/**
 * A channel.close-ok for a channel the client never closed (a confused peer) is not taken as the
 * answer to a close sent later: that close still waits for its own close-ok, and the id stays
 * taken until it comes.
 */
import { AmqpChannel, AmqpChannelLimit, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { channelOf } from "../support/scriptedAmqp.ts"

const url = (port: number) => `amqp://guest:guest@127.0.0.1:${port}`

describe("an unsolicited channel.close-ok", () => {
  it.live("does not count as the answer to a close sent later: the id stays taken until that one comes", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const strayDelivered = yield* Deferred.make<void>()
      const answerClose = yield* Deferred.make<void>()
      const server = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.handshake({ tune: { heartbeat: 0, channelMax: 1 } })
            const id = yield* channelOf(client, "channel.open")
            yield* client.sendMethod(id, Methods.channelOpenOk())
            // A close-ok nobody asked for.
            yield* client.sendMethod(id, Methods.channelCloseOk())
            yield* Deferred.succeed(strayDelivered, undefined)
            yield* channelOf(client, "channel.close")
            yield* Deferred.await(answerClose)
            yield* client.sendMethod(id, Methods.channelCloseOk())
            const reopened = yield* channelOf(client, "channel.open")
            yield* client.sendMethod(reopened, Methods.channelOpenOk())
            return reopened
          })),
        { startImmediately: true }
      )
      const connection = yield* AmqpConnection.fromUrl(url(peer.port), { heartbeat: 0, closeTimeout: 2_000 })
      const scope = yield* Scope.make()
      yield* Scope.provide(AmqpChannel.make(connection), scope)
      yield* Deferred.await(strayDelivered)
      yield* Effect.sleep("50 millis")
      // The application closes its channel; the broker has not answered this close yet.
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void), { startImmediately: true })
      yield* Effect.sleep("150 millis")
      const waited = closing.pollUnsafe() === undefined
      const held = connection.core.openChannels
      // A channel opened now would be on the id the broker still holds.
      const early = yield* Effect.scoped(AmqpChannel.make(connection)).pipe(Effect.timeout("300 millis"), Effect.flip)
      yield* Deferred.succeed(answerClose, undefined)
      yield* Fiber.join(closing)
      assert.isTrue(waited, "the close did not wait for its close-ok")
      assert.strictEqual(held, 1, "the id was freed before the close-ok for our close came")
      assert.instanceOf(
        early,
        AmqpChannelLimit,
        `a channel was opened on the id before the close-ok came: ${String(early)}`
      )
      yield* Fiber.interrupt(server)
    })))
})
