/**
 * A channel closed twice at once (an AmqpClient channel's own scope and the client's, which
 * closes the incarnation too) sends one channel.close: RabbitMQ answers a second with 504
 * CHANNEL_ERROR on the whole connection, and its second close-ok would reach the next channel
 * opened on the id. The second close waits for the first.
 */
import { AmqpClient, ConnectionConfig } from "@effect-amqp/client"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Schedule, Scope } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { answerChannels } from "../support/scriptedAmqp.ts"

describe("a channel closed twice at once", () => {
  it.live("sends one channel.close: the handle's close and the client's shutdown overlap", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const server = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.andThen(
            client.handshake({ tune: { heartbeat: 0 } }),
            // A broker that takes a moment to close a channel (requeueing, say).
            answerChannels(client, { closeDelay: 300, connectionCloseDelay: 350 })
          )),
        { startImmediately: true }
      )

      const options = yield* ConnectionConfig.make({
        host: "127.0.0.1",
        port: peer.port,
        heartbeat: 0,
        closeTimeout: 1_000
      })
      const clientScope = yield* Scope.make()
      const client = yield* Scope.provide(
        AmqpClient.make(options, { reconnect: Schedule.spaced("20 millis") }),
        clientScope
      )
      const channelScope = yield* Scope.make()
      yield* Scope.provide(client.channel(), channelScope)

      // The application's fiber ends its channel; meanwhile the service shuts the client down.
      const closingChannel = yield* Effect.forkChild(Scope.close(channelScope, Exit.void), { startImmediately: true })
      yield* Effect.sleep("50 millis")
      yield* Scope.close(clientScope, Exit.void)
      yield* Fiber.join(closingChannel)

      const seen = yield* Fiber.join(server)
      const closes = seen.filter((m) => m.endsWith(":channel.close"))
      assert.deepStrictEqual(closes, ["1:channel.close"], `the client sent: ${seen.join(", ")}`)
    })))
})
