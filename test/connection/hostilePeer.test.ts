/**
 * A server that breaks the protocol ends the connection with `ProtocolViolation`, and the client
 * first sends `connection.close` with the reply code the AMQP 0-9-1 spec gives for the breach:
 * - a heartbeat on a channel other than 0: 501 FRAME_ERROR;
 * - a `connection` method (close, blocked) on a channel: 503 COMMAND_INVALID;
 * - a content header whose class is not its method's: 501 FRAME_ERROR;
 * - any frame on a channel that is not open: 504 CHANNEL_ERROR;
 * - a second `open-ok`, in the same read as the first or a later one, or a `connection.close-ok`
 *   that answers no close: 505 UNEXPECTED_FRAME.
 * A method waiting on the channel meanwhile ends with the same error instead of waiting forever.
 */
import { AmqpChannel, AmqpConnection, AmqpConnectionError, ProtocolViolation } from "@effect-amqp/client"
import { encodeFrame, encodeMethod, Methods } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit } from "effect"
import * as Net from "node:net"
import { leakChecked } from "../support/Probe.ts"
import { answerCloses, closeCodesSent, openChannel, peerUrl, servedBy } from "../support/scriptedAmqp.ts"

const options = { heartbeat: 0, closeTimeout: 1_000 }

/** Sends `bytes` while the client waits for its queue.declare-ok on channel 1. */
const duringDeclare = (bytes: Uint8Array) =>
  Effect.gen(function*() {
    const peer = yield* servedBy((client) =>
      Effect.gen(function*() {
        yield* openChannel(client)
        yield* client.expect("queue.declare", { channel: 1 })
        yield* client.sendRaw(bytes)
        yield* answerCloses(client)
      })
    )
    const error = yield* Effect.scoped(Effect.gen(function*() {
      const connection = yield* AmqpConnection.fromUrl(peerUrl(peer.port), options)
      const channel = yield* AmqpChannel.make(connection)
      return yield* channel.queueDeclare("q").pipe(Effect.timeout("4 seconds"), Effect.flip)
    }))
    return { error, codes: yield* closeCodesSent(yield* peer.client) }
  })

const replyCodeOf = (error: unknown): number => {
  assert.instanceOf(error, AmqpConnectionError, `the declare ended with ${String(error)}`)
  const reason = (error as AmqpConnectionError).reason
  assert.instanceOf(reason, ProtocolViolation, `the connection ended with ${reason._tag}`)
  return (reason as ProtocolViolation).replyCode
}

const returnedOf = (classId: number) =>
  Buffer.concat([
    encodeMethod(1, Methods.basicReturn({ replyCode: 312, replyText: "NO_ROUTE", exchange: "", routingKey: "q" })),
    encodeFrame({ _tag: "HeaderFrame", channel: 1, classId, bodySize: 1, properties: {} }),
    encodeFrame({ _tag: "BodyFrame", channel: 1, payload: Buffer.from("x") })
  ])

describe("a server that breaks the protocol on a channel", () => {
  const cases: ReadonlyArray<readonly [string, Uint8Array, number]> = [
    ["a heartbeat on channel 1", Buffer.from([8, 0, 1, 0, 0, 0, 0, 0xce]), 501],
    [
      "connection.close on channel 1",
      encodeMethod(1, Methods.connectionClose({ replyCode: 320, replyText: "bye", classId: 0, methodId: 0 })),
      503
    ],
    ["connection.blocked on channel 1", encodeMethod(1, Methods.connectionBlocked({ reason: "low on memory" })), 503],
    ["a basic.return whose content header is of class 10", returnedOf(10), 501],
    [
      "a reply on channel 7, never opened",
      encodeMethod(7, Methods.queueDeclareOk({ queue: "q", messageCount: 0, consumerCount: 0 })),
      504
    ]
  ]
  for (const [what, bytes, code] of cases) {
    it.live(`${what}: ${code}, and the waiting declare ends with it`, () =>
      leakChecked(Effect.gen(function*() {
        const { codes, error } = yield* duringDeclare(bytes)
        assert.strictEqual(replyCodeOf(error), code)
        assert.deepStrictEqual(codes, [code])
      })))
  }

  it.live("a basic.return with a content header of its own class is no breach (the control)", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* servedBy((client) =>
        Effect.gen(function*() {
          yield* openChannel(client)
          yield* client.expect("queue.declare", { channel: 1 })
          yield* client.sendRaw(returnedOf(60))
          yield* client.sendMethod(1, Methods.queueDeclareOk({ queue: "q", messageCount: 3, consumerCount: 0 }))
          yield* answerCloses(client)
        })
      )
      const declared = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* AmqpConnection.fromUrl(peerUrl(peer.port), options)
        const channel = yield* AmqpChannel.make(connection)
        return yield* channel.queueDeclare("q")
      }))
      assert.strictEqual(declared.messageCount, 3)
      assert.deepStrictEqual(yield* closeCodesSent(yield* peer.client), [200])
    })))
})

const openOk = encodeMethod(0, Methods.connectionOpenOk())

/** The handshake with `answer` as the reply to connection.open, then `later` 100 ms after. */
const handshakeAnswering = (answer: Uint8Array, later?: Uint8Array) =>
  servedBy((client) =>
    Effect.gen(function*() {
      yield* client.start()
      yield* client.tune({ heartbeat: 0 })
      yield* client.expect("connection.open")
      yield* client.sendRaw(answer)
      if (later !== undefined) {
        yield* Effect.sleep("100 millis")
        yield* client.sendRaw(later)
      }
      yield* answerCloses(client)
    })
  )

describe("a server that breaks the protocol on channel 0", () => {
  it.live("a second open-ok in the same read as the first: the connection is refused with 505", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* handshakeAnswering(Buffer.concat([openOk, openOk]))
      const error = yield* Effect.scoped(AmqpConnection.fromUrl(peerUrl(peer.port), options)).pipe(Effect.flip)
      assert.strictEqual(replyCodeOf(error), 505)
      assert.deepStrictEqual(yield* closeCodesSent(yield* peer.client), [505])
    })))

  for (
    const [what, later] of [
      ["a second open-ok a read later", openOk],
      ["a connection.close-ok that answers no close", encodeMethod(0, Methods.connectionCloseOk())]
    ] as const
  ) {
    it.live(`${what}: the open connection ends with 505`, () =>
      leakChecked(Effect.gen(function*() {
        const peer = yield* handshakeAnswering(openOk, later)
        const ended = yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* AmqpConnection.fromUrl(peerUrl(peer.port), options)
          return yield* connection.closed.pipe(Effect.timeout("2 seconds"))
        }))
        assert.strictEqual(replyCodeOf(ended), 505)
        assert.deepStrictEqual(yield* closeCodesSent(yield* peer.client), [505])
      })))
  }
})

describe("a server that does not speak AMQP at all", () => {
  it.live("an HTTP server's answer fails the connect at once, though it never closes its side", () =>
    leakChecked(Effect.gen(function*() {
      // Answers like a web server, then keeps the socket open whatever the client does.
      const closedAt = yield* Deferred.make<number>()
      const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.once("data", () => socket.write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
        socket.on("error", () => {})
        socket.on("close", () => Deferred.doneUnsafe(closedAt, Exit.succeed(Date.now())))
      })
      yield* Effect.acquireRelease(
        Effect.callback<void>((resume) => void server.listen(0, "127.0.0.1", () => resume(Effect.void))),
        () => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const began = Date.now()
      const port = (server.address() as Net.AddressInfo).port
      const error = yield* Effect.flip(Effect.scoped(AmqpConnection.fromUrl(peerUrl(port), { closeTimeout: 5_000 })))
      // Waiting closeTimeout for the server to close its side would only hold the error back.
      assert.isBelow(Date.now() - began, 1_500)
      assert.strictEqual(replyCodeOf(error), 501)
      assert.isBelow((yield* Deferred.await(closedAt).pipe(Effect.timeout("2 seconds"))) - began, 1_500)
    })))
})
