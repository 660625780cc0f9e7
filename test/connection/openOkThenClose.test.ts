/**
 * A server's connection.close read in the same chunk as connection.open-ok: the connection ends
 * with the server's reason, says it is closed, and a channel opened on it fails at once (the
 * handshake, taking the open-ok after the close, set it open again, and such a channel waited).
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { encodeMethod, Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { leakChecked } from "../support/Probe.ts"

describe("connection.close in the same read as open-ok", () => {
  it.live("leaves a connection that is closed, and fails a channel opened on it at once", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.start()
            yield* client.tune({ heartbeat: 0 })
            yield* client.expect("connection.open")
            yield* client.sendRaw(Buffer.concat([
              encodeMethod(0, Methods.connectionOpenOk()),
              encodeMethod(
                0,
                Methods.connectionClose({
                  replyCode: 320,
                  replyText: "CONNECTION_FORCED - shutdown",
                  classId: 0,
                  methodId: 0
                })
              )
            ]))
            yield* client.expect("connection.close-ok")
            // It does not close its side at once (a broker busy shutting down).
            yield* Effect.sleep("4 seconds")
          })),
        { startImmediately: true }
      )
      const made = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`, {
        heartbeat: 0,
        closeTimeout: 3_000
      }).pipe(Effect.exit)
      if (Exit.isFailure(made)) return // the handshake reported the close: fine
      const connection = made.value
      const closed = yield* connection.closed.pipe(Effect.timeout("1 second"), Effect.option)
      assert.strictEqual(closed._tag, "Some", "the connection's end was not reported")
      const isOpen = yield* connection.isOpen
      const channel = yield* Effect.scoped(AmqpChannel.make(connection)).pipe(
        Effect.timeout("1 second"),
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(channel))
      assert.notInclude(String(Exit.isFailure(channel) ? channel.cause : ""), "TimeoutError", "the channel open hung")
      assert.isFalse(isOpen, "the connection says it is open after the server closed it")
    })))
})
