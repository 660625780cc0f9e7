/**
 * A peer that stops answering, or never closes its side: every step of the shutdown stays bounded
 * in total, not once per channel; a channel id whose `close-ok` never came (or whose close crossed
 * the broker's, which is answered) is not reused while the peer may still hold it; and a
 * connection ended by the client (a protocol violation) destroys its socket within closeTimeout
 * even though the peer never sends its FIN.
 */
import { AmqpChannel, AmqpChannelLimit, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { channelOf } from "../support/scriptedAmqp.ts"

const url = (port: number) => `amqp://guest:guest@127.0.0.1:${port}`
const CLOSE_TIMEOUT = 300

/** The methods in what the client sent, by name. */
const methodsOf = (received: ReadonlyArray<ScriptedPeer.Received>) =>
  received.flatMap((r) => r._tag === "Frame" && r.frame._tag === "MethodFrame" ? [r.frame.method._tag] : [])

describe("a peer that stops answering", () => {
  it.live("ten channels and the connection close in two closeTimeouts, every close still sent", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const channels = 10
      const server = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.handshake({ tune: { heartbeat: 0 } })
            for (let i = 1; i <= channels; i++) {
              yield* client.sendMethod(yield* channelOf(client, "channel.open"), Methods.channelOpenOk())
            }
            // From here on it reads and answers nothing, like a hung broker whose TCP stack lives.
            const end = yield* client.awaitEnd({ timeoutMillis: 10_000 })
            return { end, methods: methodsOf(yield* client.received) }
          })),
        { startImmediately: true }
      )

      const scope = yield* Scope.make()
      const connection = yield* Scope.provide(
        AmqpConnection.fromUrl(url(peer.port), { heartbeat: 0, closeTimeout: CLOSE_TIMEOUT }),
        scope
      )
      for (let i = 0; i < channels; i++) yield* Scope.provide(AmqpChannel.make(connection), scope)
      const began = Date.now()
      yield* Scope.close(scope, Exit.void)
      const took = Date.now() - began

      // One close-ok wait, then the FIN's wait for the peer; the rest do not wait.
      assert.isAtLeast(took, 2 * CLOSE_TIMEOUT - 50)
      assert.isBelow(took, 4 * CLOSE_TIMEOUT, `shutdown took ${took} ms with closeTimeout ${CLOSE_TIMEOUT} ms`)
      const { end, methods } = yield* Fiber.join(server)
      assert.strictEqual(end, "fin")
      assert.deepStrictEqual(methods.slice(-channels - 1), [
        ...Array.from({ length: channels }, () => "channel.close"),
        "connection.close"
      ])
    })))

  it.live("a channel id whose close-ok is late stays taken until it comes", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const lateCloseOk = yield* Deferred.make<void>()
      const server = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.handshake({ tune: { heartbeat: 0, channelMax: 1 } })
            const first = yield* channelOf(client, "channel.open")
            yield* client.sendMethod(first, Methods.channelOpenOk())
            const closed = yield* channelOf(client, "channel.close")
            yield* Deferred.await(lateCloseOk)
            // Long after the client stopped waiting, the broker closes the channel too: that is
            // answered, and the id stays taken until the close-ok for the client's own close.
            yield* client.sendMethod(
              closed,
              Methods.channelClose({ replyCode: 406, replyText: "PRECONDITION_FAILED", classId: 60, methodId: 40 })
            )
            yield* channelOf(client, "channel.close-ok")
            yield* client.sendMethod(closed, Methods.channelCloseOk())
            const second = yield* channelOf(client, "channel.open")
            yield* client.sendMethod(second, Methods.channelOpenOk())
            return [first, closed, second]
          })),
        { startImmediately: true }
      )
      const connection = yield* AmqpConnection.fromUrl(url(peer.port), { heartbeat: 0, closeTimeout: CLOSE_TIMEOUT })
      yield* Effect.scoped(AmqpChannel.make(connection))

      // The only id is still the broker's: a new channel is refused, not opened on it.
      const refused = yield* Effect.scoped(AmqpChannel.make(connection)).pipe(Effect.flip)
      assert.instanceOf(refused, AmqpChannelLimit)

      yield* Deferred.succeed(lateCloseOk, undefined)
      const reopened = yield* AmqpChannel.make(connection).pipe(
        Effect.retry({ while: (e) => e instanceof AmqpChannelLimit, times: 20 })
      )
      assert.strictEqual(reopened.id, 1)
      assert.deepStrictEqual(yield* Fiber.join(server), [1, 1, 1])
      assert.isTrue(yield* connection.isOpen)
    })))

  it.live("a close crossing the broker's is answered, and the id stays taken until the close-ok for ours", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const closeOkForOurs = yield* Deferred.make<void>()
      const server = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.handshake({ tune: { heartbeat: 0, channelMax: 1 } })
            const id = yield* channelOf(client, "channel.open")
            yield* client.sendMethod(id, Methods.channelOpenOk())
            yield* channelOf(client, "channel.close")
            // The broker's own close crossed ours: it waits for our close-ok, and answers ours later.
            yield* client.sendMethod(
              id,
              Methods.channelClose({ replyCode: 406, replyText: "PRECONDITION_FAILED", classId: 60, methodId: 40 })
            )
            const answered = yield* channelOf(client, "channel.close-ok")
            yield* Deferred.await(closeOkForOurs)
            yield* client.sendMethod(id, Methods.channelCloseOk())
            const reopened = yield* channelOf(client, "channel.open")
            yield* client.sendMethod(reopened, Methods.channelOpenOk())
            return [id, answered, reopened]
          })),
        { startImmediately: true }
      )
      const connection = yield* AmqpConnection.fromUrl(url(peer.port), { heartbeat: 0, closeTimeout: CLOSE_TIMEOUT })
      yield* Effect.scoped(AmqpChannel.make(connection))

      // Until the broker's close-ok for our close comes, a channel opened on the id would get it.
      const refused = yield* Effect.flip(Effect.scoped(AmqpChannel.make(connection)))
      assert.instanceOf(refused, AmqpChannelLimit)
      yield* Deferred.succeed(closeOkForOurs, undefined)
      const reopened = yield* AmqpChannel.make(connection).pipe(
        Effect.retry({ while: (e) => e instanceof AmqpChannelLimit, times: 20 })
      )
      assert.strictEqual(reopened.id, 1)
      assert.deepStrictEqual(yield* Fiber.join(server), [1, 1, 1])
    })))

  it.live("after a protocol violation, a peer that never closes its side loses the socket in closeTimeout", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const server = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (client) =>
          Effect.gen(function*() {
            yield* client.handshake({ tune: { heartbeat: 0 } })
            // Once the client is open (it opens a channel): a heartbeat frame whose frame-end octet
            // is not 0xCE; then never a FIN.
            yield* channelOf(client, "channel.open")
            yield* client.sendRaw(Uint8Array.of(8, 0, 0, 0, 0, 0, 0, 0))
            return yield* client.awaitEnd()
          })),
        { startImmediately: true }
      )
      const connection = yield* AmqpConnection.fromUrl(url(peer.port), { heartbeat: 0, closeTimeout: CLOSE_TIMEOUT })
      yield* Effect.forkScoped(Effect.exit(AmqpChannel.make(connection)), { startImmediately: true })
      const closed = yield* connection.closed
      const endedAt = Date.now()
      assert.strictEqual(closed.reason._tag, "ProtocolViolation")
      assert.strictEqual(yield* Fiber.join(server), "fin")

      // The connection's scope is still open: the socket goes by the client's own deadline.
      const socket = connection.core.transport.socket
      while (!socket.destroyed && Date.now() - endedAt < 3_000) yield* Effect.sleep(10)
      const took = Date.now() - endedAt
      assert.isTrue(socket.destroyed, "the socket of the ended connection is still open after 3 s")
      assert.isAtLeast(took, CLOSE_TIMEOUT - 20)
      assert.isBelow(took, CLOSE_TIMEOUT + 300, `the socket outlived the connection by ${took} ms`)
    })))
})
