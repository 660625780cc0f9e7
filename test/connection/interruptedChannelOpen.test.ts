/**
 * A channel open given up while the caller's scope lives on (a timeout around AmqpChannel.make)
 * closes the channel at once, as a connect given up does: its id is free again once the broker
 * has answered, and the broker sees the channel closed, so retries of a slow open do not use up
 * channel_max.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { answerChannels } from "../support/scriptedAmqp.ts"

const url = (port: number) => `amqp://guest:guest@127.0.0.1:${port}`

describe("a channel open given up while the caller's scope lives on", () => {
  it.live("frees its channel id once the broker has answered, without waiting for the caller's scope", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const server = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.andThen(
            client.handshake({ tune: { heartbeat: 0, channelMax: 2 } }),
            // A slow broker: each channel.open is answered after 300 ms; a close right away.
            answerChannels(client, { openDelay: 300 }, 3_000)
          )),
        { startImmediately: true }
      )
      const connection = yield* AmqpConnection.fromUrl(url(peer.port), { heartbeat: 0, closeTimeout: 500 })

      // Two opens given up after 100 ms, in the same long-lived scope.
      for (let i = 0; i < 2; i++) {
        const attempt = yield* AmqpChannel.make(connection).pipe(Effect.timeout("100 millis"), Effect.exit)
        assert.isTrue(Exit.isFailure(attempt))
      }
      // The broker has answered both opens by now.
      yield* Effect.sleep("800 millis")

      // Nothing of the application's holds a channel: both ids should be free again (closed on
      // the broker, or at least not counted against channel_max).
      const third = yield* AmqpChannel.make(connection).pipe(Effect.timeout("2 seconds"), Effect.exit)
      if (Exit.isFailure(third)) {
        const limit = third.cause.toString().includes("AmqpChannelLimit")
        assert.fail(`a new channel could not open${limit ? " (AmqpChannelLimit)" : ""}: ${third.cause}`)
      }
      // The third channel is the only one open: the two given up took nothing with them.
      assert.strictEqual(
        connection.core.openChannels,
        1,
        `${connection.core.openChannels - 1} channel ids are still taken by opens given up`
      )
      yield* Fiber.interrupt(server)
    })))

  it.live("the broker sees the abandoned channel closed while the caller's scope lives on", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const server = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.handshake({ tune: { heartbeat: 0 } })
            const open = yield* client.expectFrame(
              (f) => f._tag === "MethodFrame" && f.method._tag === "channel.open",
              "channel.open"
            )
            yield* Effect.sleep("300 millis")
            yield* client.sendMethod(open.channel, Methods.channelOpenOk())
            // Within 1.5 s of the open-ok, the client should close what it gave up.
            const close = yield* client.expectFrame(
              (f) => f._tag === "MethodFrame" && f.method._tag === "channel.close",
              "channel.close",
              { timeoutMillis: 1_500 }
            ).pipe(Effect.option)
            if (close._tag === "Some") yield* client.sendMethod(open.channel, Methods.channelCloseOk())
            return close._tag
          })),
        { startImmediately: true }
      )
      const connection = yield* AmqpConnection.fromUrl(url(peer.port), { heartbeat: 0, closeTimeout: 500 })
      const attempt = yield* AmqpChannel.make(connection).pipe(Effect.timeout("100 millis"), Effect.exit)
      assert.isTrue(Exit.isFailure(attempt))
      assert.strictEqual(yield* Fiber.join(server), "Some", "the given-up channel stayed open on the broker")
    })))
})
