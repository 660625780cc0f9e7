/**
 * A connect that is given up while the caller's scope lives on (a timeout around it, a service
 * that stops during the handshake) closes its own socket at once, as the peer sees it: nothing of
 * the attempt waits for the caller's scope, nor for connectionTimeout when the socket or its TLS
 * session is still opening. A scripted peer that never finishes the handshake stands in for a
 * broker that hangs.
 */
import { AmqpClient, AmqpConnection, ConnectionConfig } from "@effect-amqp/client"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import * as Net from "node:net"
import { leakChecked } from "../support/Probe.ts"

type Stage = "before connection.start" | "after tune"

/**
 * Accepts one client, takes it to `stage`, then answers nothing; reports how the client's side
 * ended and the methods it sent.
 */
const hangingPeer = (peer: ScriptedPeer.ScriptedPeer, stage: Stage) =>
  Effect.forkScoped(
    Effect.flatMap(peer.accept(), (client) =>
      Effect.gen(function*() {
        if (stage === "before connection.start") {
          yield* client.expectHeader()
        } else {
          yield* client.start()
          yield* client.tune({ heartbeat: 10 })
          yield* client.expect("connection.open")
        }
        const end = yield* client.awaitEnd({ timeoutMillis: 2_500 })
        const methods = (yield* client.received).flatMap((r) =>
          r._tag === "Frame" && r.frame._tag === "MethodFrame" ? [r.frame.method._tag] : []
        )
        return { end, methods }
      })),
    { startImmediately: true }
  )

const options = (port: number) =>
  ConnectionConfig.fromUrl(`amqp://guest:guest@127.0.0.1:${port}`, { handshakeTimeout: 30_000, closeTimeout: 500 })

describe("a connect given up while the caller's scope lives on", () => {
  for (const stage of ["before connection.start", "after tune"] as const) {
    it.live(`AmqpConnection: the socket ends at once (${stage})`, () =>
      leakChecked(Effect.gen(function*() {
        const peer = yield* ScriptedPeer.make()
        const server = yield* hangingPeer(peer, stage)
        const attempt = yield* AmqpConnection.make(yield* options(peer.port)).pipe(
          Effect.timeout("300 millis"),
          Effect.exit
        )
        assert.isTrue(Exit.isFailure(attempt))

        // Still inside the caller's scope: the peer saw the end within its 2.5 s.
        const { end, methods } = yield* Fiber.join(server)
        assert.strictEqual(end, "fin")
        const closes = methods.filter((m) => m === "connection.close")
        assert.deepStrictEqual(closes, stage === "after tune" ? ["connection.close"] : [])
      })))
  }

  it.live("AmqpClient: the attempt's socket ends with the client's scope, during the handshake", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const server = yield* hangingPeer(peer, "after tune")
      const made = yield* Effect.scoped(AmqpClient.make(yield* options(peer.port))).pipe(
        Effect.timeout("300 millis"),
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(made))
      const { end } = yield* Fiber.join(server)
      assert.strictEqual(end, "fin")
    })))

  it.live("a TLS connect whose handshake never completes is given up at once, its socket closed", () =>
    leakChecked(Effect.gen(function*() {
      // Accepts, reads and never answers: a TLS port that swallows the ClientHello.
      const closedAt = yield* Deferred.make<number>()
      const server = Net.createServer((socket) => {
        socket.resume()
        socket.on("error", () => {})
        socket.on("close", () => Deferred.doneUnsafe(closedAt, Exit.succeed(Date.now())))
      })
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const port = (server.address() as Net.AddressInfo).port
      const secure = yield* ConnectionConfig.fromUrl(`amqps://guest:guest@127.0.0.1:${port}`, {
        connectionTimeout: 5_000,
        tls: { rejectUnauthorized: false }
      })
      const began = Date.now()
      const attempt = yield* AmqpConnection.make(secure).pipe(Effect.timeout("300 millis"), Effect.exit)
      assert.isTrue(Exit.isFailure(attempt))
      assert.isBelow(Date.now() - began, 1_500, "the timed-out connect waited for its connectionTimeout")
      const closed = yield* Deferred.await(closedAt).pipe(Effect.timeout("2 seconds"))
      assert.isBelow(closed - began, 1_500)
    })))
})
