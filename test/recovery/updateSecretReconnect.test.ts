/**
 * `AmqpClient.updateSecret` while a reconnect's handshake is under way (its start-ok already
 * carried the old secret): the link that comes up sends `connection.update-secret` with the new
 * one before it goes live, so the broker does not close it when the old one expires.
 */
import { AmqpClient } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Redacted, Schedule } from "effect"
import { leakChecked } from "../support/Probe.ts"
import * as Support from "./support.ts"

describe("updateSecret racing with a reconnect", () => {
  it.live("the link whose handshake was under way gets the new secret", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const startOkSeen = yield* Deferred.make<string>()
      const updated = yield* Deferred.make<void>()
      const server = yield* Effect.forkScoped(
        Effect.gen(function*() {
          const first = yield* peer.accept()
          yield* first.handshake({ tune: { heartbeat: 0 } })
          yield* first.close("reset")
          const second = yield* peer.accept({ timeoutMillis: 5_000 })
          const { startOk } = yield* second.start()
          yield* Deferred.succeed(startOkSeen, Buffer.from(startOk.response).toString("utf8"))
          yield* Deferred.await(updated)
          yield* second.tune({ heartbeat: 0 })
          yield* second.open
          // Whatever the client sends on the new link within 3 s.
          const tags: Array<string> = []
          while (true) {
            const frame = yield* second.nextFrame({ timeoutMillis: 3_000 }).pipe(Effect.option)
            if (frame._tag === "None") return { tags, secret: undefined }
            if (frame.value._tag !== "MethodFrame") continue
            const method = frame.value.method
            tags.push(method._tag)
            if (method._tag === "connection.update-secret") {
              yield* second.sendMethod(0, Methods.connectionUpdateSecretOk())
              return { tags, secret: Buffer.from(method.newSecret as unknown as Uint8Array).toString("utf8") }
            }
            if (method._tag === "channel.open") yield* second.sendMethod(frame.value.channel, Methods.channelOpenOk())
            if (method._tag === "channel.close") yield* second.sendMethod(frame.value.channel, Methods.channelCloseOk())
          }
        }),
        { startImmediately: true }
      )

      const options = yield* Support.scriptedPeerOptions(peer.port, "old-secret")
      const client = yield* AmqpClient.make(options, { reconnect: Schedule.spaced("20 millis") })
      const response = yield* Deferred.await(startOkSeen).pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(response, "\u0000guest\u0000old-secret")
      // The reconnect's start-ok has gone out with the old secret; the link is not up yet.
      yield* client.updateSecret(Redacted.make("new-secret"), "rotation")
      yield* Deferred.succeed(updated, undefined)
      const seen = yield* Fiber.join(server).pipe(Effect.timeout("8 seconds"))
      const link = yield* client.connection
      assert.strictEqual(
        seen.secret,
        "new-secret",
        `updateSecret succeeded, but the link that came up was never given the new secret (it sent ${
          JSON.stringify(seen.tags)
        }; its secret is ${Redacted.value(link.core.currentSecret)})`
      )
    })))
})
