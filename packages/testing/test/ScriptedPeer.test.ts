import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as ScriptedPeer from "../src/ScriptedPeer.ts"
import {
  frame,
  handshake,
  longstr,
  method,
  protocolHeader,
  rawClient,
  readLongstr,
  shortstr,
  table,
  u16,
  u32
} from "./rawAmqp.ts"
import { connect, received } from "./support.ts"

const text = (bytes: string | Uint8Array) => (typeof bytes === "string" ? bytes : Buffer.from(bytes).toString("utf8"))

describe("ScriptedPeer", () => {
  it.live("drives a full handshake against a raw client", () =>
    Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const server = yield* Effect.forkChild(
        Effect.flatMap(
          peer.accept(),
          (conn) =>
            Effect.map(conn.handshake({ tune: { channelMax: 7, frameMax: 8192, heartbeat: 3 } }), (r) => ({ conn, r }))
        ),
        { startImmediately: true }
      )
      const client = yield* rawClient(peer.port)
      const result = yield* handshake(client, { connectionName: "scripted-test" })
      assert.deepStrictEqual(result.tune, { channelMax: 7, frameMax: 8192, heartbeat: 3 })
      assert.strictEqual(result.mechanisms, "PLAIN AMQPLAIN")
      assert.include(result.serverProperties.toString("latin1"), "effect-amqp scripted peer")
      const { conn, r } = yield* Fiber.join(server)
      assert.deepStrictEqual([...r.header], [0x41, 0x4d, 0x51, 0x50, 0, 0, 9, 1])
      assert.strictEqual(r.startOk.mechanism, "PLAIN")
      assert.strictEqual(text(r.startOk.response), "\u0000guest\u0000guest")
      assert.strictEqual(r.startOk.clientProperties["connection_name"], "scripted-test")
      assert.strictEqual(r.startOk.locale, "en_US")
      assert.isUndefined(r.secureOk)
      assert.deepStrictEqual(
        { channelMax: r.tuneOk.channelMax, frameMax: r.tuneOk.frameMax, heartbeat: r.tuneOk.heartbeat },
        { channelMax: 7, frameMax: 8192, heartbeat: 3 }
      )
      assert.strictEqual(r.open.virtualHost, "/")
      const log = yield* conn.received
      assert.deepStrictEqual(
        log.map((e) => (e._tag === "Frame" && e.frame._tag === "MethodFrame" ? e.frame.method._tag : e._tag)),
        ["Header", "connection.start-ok", "connection.tune-ok", "connection.open"]
      )
      assert.strictEqual(conn.clientPort, client.socket.localPort)
    }))

  it.live("sends connection.secure and returns the client's secure-ok", () =>
    Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const client = yield* rawClient(peer.port)
      const conn = yield* peer.accept()
      client.send(protocolHeader)
      client.send(method(0, 10, 11, Buffer.concat([table({}), shortstr("PLAIN"), longstr("x"), shortstr("en_US")])))
      yield* conn.start()
      const server = yield* Effect.forkChild(conn.secure("what is the password?"), { startImmediately: true })
      yield* client.next("connection.start")
      const challenge = yield* client.next("connection.secure")
      assert.deepStrictEqual([challenge.classId, challenge.methodId], [10, 20])
      assert.strictEqual(readLongstr(challenge.payload, 4)[0].toString(), "what is the password?")
      client.send(method(0, 10, 21, longstr("swordfish")))
      const secureOk = yield* Fiber.join(server)
      assert.strictEqual(text(secureOk.response), "swordfish")
    }))

  it.live("sends raw bytes as they are and resets mid-handshake", () =>
    Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const client = yield* connect(peer.port)
      const conn = yield* peer.accept()
      client.socket.write(protocolHeader)
      yield* conn.expectHeader()
      const garbage = Buffer.from([1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 10, 0xab]) // frame-end is not 0xCE
      yield* conn.sendRaw(garbage)
      yield* client.watch.until(() => (client.bytes === garbage.length ? true : undefined), "garbage")
      yield* conn.close("reset")
      assert.strictEqual(yield* conn.awaitClose(), "closedByPeer")
      yield* client.watch.until(() => (client.closed ? true : undefined), "closed")
      assert.isTrue(received(client).equals(garbage))
      assert.strictEqual(client.errorCode, "ECONNRESET")
    }))

  it.live("closes with FIN, records the client's FIN and the bytes it could not decode, closed after both FINs", () =>
    Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const client = yield* connect(peer.port, { halfOpen: true })
      const conn = yield* peer.accept()
      client.socket.write(Buffer.concat([protocolHeader, Buffer.from([9, 0, 0, 0, 0, 0, 0, 0xce])]))
      client.socket.end()
      assert.strictEqual(yield* conn.awaitEnd(), "fin")
      const closeTimeout = yield* Effect.flip(conn.awaitClose({ timeoutMillis: 50 }))
      assert.strictEqual(closeTimeout.reason, "Timeout") // half-open: our side is still open
      yield* conn.close("fin")
      assert.strictEqual(yield* conn.awaitClose(), "fin")
      yield* client.watch.until(() => (client.gotFin ? true : undefined), "FIN from the peer")
      const log = yield* conn.received
      assert.deepStrictEqual(log.map((e) => e._tag), ["Header", "DecodeError", "End"])
      yield* conn.expectHeader()
      const error = yield* Effect.flip(conn.nextFrame())
      assert.strictEqual(error.reason, "Unexpected")
      assert.include(error.message, "undecodable bytes (unknown frame type 9)")
    }))

  it.live("fails with Unexpected when another method arrives", () =>
    Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const client = yield* rawClient(peer.port)
      const conn = yield* peer.accept()
      client.send(protocolHeader)
      client.send(method(0, 10, 31, Buffer.concat([u16(0), u32(131072), u16(60)])))
      const error = yield* Effect.flip(conn.start())
      assert.strictEqual(error.reason, "Unexpected")
      assert.strictEqual(
        error.message,
        "expected connection.start-ok on channel 0, got connection.tune-ok on channel 0"
      )
    }))

  it.live("enforces the frame_max the client accepted", () =>
    Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const server = yield* Effect.forkChild(
        Effect.flatMap(peer.accept(), (conn) => Effect.as(conn.handshake({ tune: { frameMax: 8192 } }), conn)),
        { startImmediately: true }
      )
      const client = yield* rawClient(peer.port)
      yield* handshake(client)
      const conn = yield* Fiber.join(server)
      client.send(frame(3, 1, Buffer.alloc(8192 - 7))) // one byte over: 8192 - 7 + 8 = 8193
      const error = yield* Effect.flip(conn.nextFrame())
      assert.include(error.message, "exceeds frame_max 8192")
    }))

  it.live("sends heartbeats only when told, and times out waiting on a silent client", () =>
    Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const client = yield* rawClient(peer.port)
      const conn = yield* peer.accept()
      yield* conn.sendHeartbeat
      const beat = yield* client.next("heartbeat")
      assert.deepStrictEqual([beat.type, beat.channel, beat.payload.length], [8, 0, 0])
      yield* conn.silence(100)
      assert.strictEqual(client.frames.length, 1)
      const error = yield* Effect.flip(conn.expectHeader({ timeoutMillis: 50 }))
      assert.strictEqual(error.reason, "Timeout")
    }))
})
