/**
 * AmqpClient.updateSecret with a secret whose update-secret frame is over the negotiated
 * frame_max fails with AmqpEncodeError, and changes nothing: the next reconnect logs in with the
 * secret the client had, not the refused one.
 */
import { AmqpClient } from "@effect-amqp/client"
import { AmqpEncodeError } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Redacted, Schedule } from "effect"
import { leakChecked } from "../support/Probe.ts"
import * as Support from "./support.ts"

describe("an update-secret refused by the encoder", () => {
  it.live("changes nothing: the next reconnect logs in with the secret the client had", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const updateTried = yield* Deferred.make<void>()
      const server = yield* Effect.forkScoped(
        Effect.gen(function*() {
          const first = yield* peer.accept()
          yield* first.handshake({ tune: { heartbeat: 0, frameMax: 8192 } })
          yield* Deferred.await(updateTried)
          yield* first.close("reset")
          const second = yield* peer.accept({ timeoutMillis: 5_000 })
          const { startOk } = yield* second.handshake({ tune: { heartbeat: 0 } })
          return Buffer.from(startOk.response).toString("utf8")
        }),
        { startImmediately: true }
      )

      const options = yield* Support.scriptedPeerOptions(peer.port, "guest")
      const client = yield* AmqpClient.make(options, { reconnect: Schedule.spaced("20 millis") })
      const huge = "x".repeat(10_000)
      const result = yield* client.updateSecret(Redacted.make(huge), "rotate").pipe(Effect.flip)
      assert.instanceOf(result, AmqpEncodeError, "the update-secret frame is over frame_max 8192")
      yield* Deferred.succeed(updateTried, undefined)

      const response = yield* Fiber.join(server).pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(
        response,
        "\u0000guest\u0000guest",
        `the reconnect logged in with the refused secret (a response of ${response.length} bytes)`
      )
    })))
})
