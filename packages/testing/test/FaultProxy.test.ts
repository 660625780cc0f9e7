import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as Net from "node:net"
import * as FaultProxy from "../src/FaultProxy.ts"
import { attempt, connect, payload, received, server } from "./support.ts"

const setup = (mode: "echo" | "sink", options: { readonly halfOpen?: boolean } = {}) =>
  Effect.gen(function*() {
    const upstream = yield* server(mode, options)
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: upstream.port } })
    return { upstream, proxy }
  })

const write = (socket: Net.Socket, data: Buffer | string) =>
  Effect.callback<void, Error>((resume) => {
    socket.write(data, (error) => resume(error ? Effect.fail(error) : Effect.void))
  })

describe("FaultProxy", () => {
  it.live("forwards both ways and counts bytes exactly", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("echo")
      const client = yield* connect(proxy.port)
      const data = payload(100_000)
      yield* write(client.socket, data)
      yield* client.watch.until(() => (client.bytes >= data.length ? true : undefined), "echo")
      assert.isTrue(received(client).equals(data))
      const stats = yield* proxy.awaitUntil((s) => s.forwarded.serverToClient === data.length)
      assert.strictEqual(stats.accepted, 1)
      assert.deepStrictEqual(stats.forwarded, { clientToServer: 100_000, serverToClient: 100_000 })
      assert.deepStrictEqual(stats.connections[0]!.received, { clientToServer: 100_000, serverToClient: 100_000 })
      assert.strictEqual(stats.connections[0]!.clientPort, client.socket.localPort)
      assert.strictEqual(upstream.connections[0]!.bytes, 100_000)
    }))

  it.live("shows the client's FIN to the server and records it", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("echo")
      const client = yield* connect(proxy.port)
      yield* write(client.socket, "bye")
      client.socket.end()
      const end = yield* upstream.watch.until(() => upstream.connections[0]?.gotFin ? true : undefined, "server FIN")
      assert.isTrue(end)
      yield* client.watch.until(() => (client.closed ? true : undefined), "client closed")
      const conn = yield* proxy.awaitClosed(0)
      assert.strictEqual(conn.client.peerEnd, "fin")
      assert.strictEqual(conn.server.peerEnd, "fin")
      assert.isTrue(conn.server.sentFin)
      assert.isFalse(conn.client.sentReset)
      assert.isTrue(client.gotFin)
      assert.strictEqual(received(client).toString(), "bye")
      assert.isUndefined(upstream.connections[0]!.errorCode)
    }))

  it.live("reset sends RST to both sides", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("echo")
      const client = yield* connect(proxy.port)
      yield* upstream.watch.until(() => upstream.connections[0], "server connection")
      yield* proxy.reset()
      yield* client.watch.until(() => (client.closed ? true : undefined), "client closed")
      yield* upstream.watch.until(() => (upstream.connections[0]!.closed ? true : undefined), "server closed")
      assert.strictEqual(client.errorCode, "ECONNRESET")
      assert.isFalse(client.gotFin)
      assert.strictEqual(upstream.connections[0]!.errorCode, "ECONNRESET")
      const conn = yield* proxy.awaitClosed(0)
      assert.isTrue(conn.client.sentReset && conn.server.sentReset)
    }))

  it.live("passes a peer's RST on as an RST", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("echo")
      const client = yield* connect(proxy.port)
      yield* upstream.watch.until(() => upstream.connections[0], "server connection")
      client.socket.resetAndDestroy()
      yield* upstream.watch.until(() => (upstream.connections[0]!.closed ? true : undefined), "server closed")
      assert.strictEqual(upstream.connections[0]!.errorCode, "ECONNRESET")
      const conn = yield* proxy.awaitClosed(0)
      assert.strictEqual(conn.client.peerEnd, "reset")
      assert.strictEqual(conn.client.errorCode, "ECONNRESET")
    }))

  it.live("adds latency", () =>
    Effect.gen(function*() {
      const { proxy } = yield* setup("echo")
      const client = yield* connect(proxy.port)
      const roundTrip = Effect.gen(function*() {
        const before = client.bytes
        const start = performance.now()
        yield* write(client.socket, "ping")
        yield* client.watch.until(() => (client.bytes >= before + 4 ? true : undefined), "echo")
        return performance.now() - start
      })
      const baseline = yield* roundTrip
      yield* proxy.setLatency(100, "clientToServer")
      const oneWay = yield* roundTrip
      yield* proxy.setLatency(100, "both")
      const twoWays = yield* roundTrip
      assert.isBelow(baseline, 90)
      assert.isAtLeast(oneWay, 90)
      assert.isBelow(oneWay, 400)
      assert.isAtLeast(twoWays, 190)
      assert.isBelow(twoWays, 600)
    }))

  it.live("limits bandwidth", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("sink")
      yield* proxy.setBandwidth(100_000, "clientToServer")
      const client = yield* connect(proxy.port)
      const start = performance.now()
      yield* write(client.socket, payload(50_000))
      yield* upstream.watch.until(() => (upstream.connections[0]?.bytes === 50_000 ? true : undefined), "all bytes")
      const elapsed = performance.now() - start
      // 50 kB at 100 kB/s: about 500 ms (the first slice goes at once)
      assert.isAtLeast(elapsed, 400)
      assert.isBelow(elapsed, 1_500)
    }))

  it.live("re-chunks into 1-byte writes", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("sink")
      yield* proxy.setChunkSize(1, "clientToServer")
      const client = yield* connect(proxy.port)
      const data = payload(200)
      yield* write(client.socket, data)
      const conn = yield* upstream.watch.until(
        () => (upstream.connections[0]?.bytes === 200 ? upstream.connections[0] : undefined),
        "200 bytes"
      )
      assert.isTrue(received(conn).equals(data))
      assert.strictEqual(conn.dataEvents, 200)
    }))

  it.live("re-chunks into n-byte writes", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("sink")
      yield* proxy.setChunkSize(7, "clientToServer")
      const client = yield* connect(proxy.port)
      const data = payload(700)
      yield* write(client.socket, data)
      const conn = yield* upstream.watch.until(
        () => (upstream.connections[0]?.bytes === 700 ? upstream.connections[0] : undefined),
        "700 bytes"
      )
      assert.isTrue(received(conn).equals(data))
      assert.isTrue(conn.chunks.every((c) => c.length <= 7))
      assert.strictEqual(conn.dataEvents, 100)
    }))

  it.live("closes after n bytes, delivering exactly n", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("sink")
      yield* proxy.closeAfter(1000, "clientToServer")
      const client = yield* connect(proxy.port)
      const data = payload(5000)
      yield* write(client.socket, data)
      const conn = yield* upstream.watch.until(
        () => (upstream.connections[0]?.closed ? upstream.connections[0] : undefined),
        "server side closed"
      )
      assert.strictEqual(conn.bytes, 1000)
      assert.isTrue(received(conn).equals(data.subarray(0, 1000)))
      assert.isTrue(conn.gotFin)
      yield* client.watch.until(() => (client.gotFin ? true : undefined), "client FIN")
      const stats = yield* proxy.stats
      assert.strictEqual(stats.connections[0]!.forwarded.clientToServer, 1000)
    }))

  it.live("close after n bytes can reset instead", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("sink")
      yield* proxy.closeAfter(10, "clientToServer", "reset")
      const client = yield* connect(proxy.port)
      yield* write(client.socket, payload(100))
      yield* client.watch.until(() => (client.closed ? true : undefined), "client closed")
      assert.strictEqual(client.errorCode, "ECONNRESET")
      const conn = yield* upstream.watch.until(
        () => (upstream.connections[0]?.closed ? upstream.connections[0] : undefined),
        "server side closed"
      )
      // The data arrives; a Node receiver that had not read it yet when the RST came sees 'end'
      // rather than ECONNRESET (libuv reports EOF on POLLHUP after a partial read).
      assert.isTrue(received(conn).equals(payload(10)))
      const stats = yield* proxy.awaitClosed(0)
      assert.isTrue(stats.server.sentReset && stats.client.sentReset)
      assert.strictEqual(stats.forwarded.clientToServer, 10)
    }))

  it.live("stop reading makes the sender's buffers fill, resume drains them", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("sink")
      yield* proxy.stopReading("clientToServer")
      const client = yield* connect(proxy.port)
      yield* upstream.watch.until(() => upstream.connections[0], "server connection")
      const chunk = Buffer.alloc(256 * 1024, 7)
      let written = 0
      let accepted = true
      while (accepted && written < 256 * 1024 * 1024) {
        accepted = client.socket.write(chunk)
        written += chunk.length
        yield* Effect.yieldNow
      }
      assert.isFalse(accepted)
      assert.isAbove(client.socket.writableLength, 0)
      assert.strictEqual(upstream.connections[0]!.bytes, 0)
      yield* proxy.resumeReading("clientToServer")
      yield* upstream.watch.until(() => (upstream.connections[0]!.bytes === written ? true : undefined), "all", 20_000)
      assert.strictEqual(client.socket.writableLength, 0)
    }))

  it.live("blackhole forwards nothing and keeps both sockets open", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("echo")
      yield* proxy.setBlackhole(true)
      const client = yield* connect(proxy.port)
      yield* write(client.socket, payload(1000))
      const stats = yield* proxy.awaitUntil((s) => s.connections[0]?.received.clientToServer === 1000)
      yield* Effect.sleep("100 millis") // give a wrongly forwarded byte time to show
      const peer = upstream.connections[0]!
      assert.strictEqual(peer.bytes, 0)
      assert.strictEqual(client.bytes, 0)
      assert.deepStrictEqual(stats.forwarded, { clientToServer: 0, serverToClient: 0 })
      assert.isFalse(client.closed || client.gotFin || peer.closed || peer.gotFin)
      const after = yield* proxy.stats
      assert.strictEqual(after.connections[0]!.client.peerEnd, "open")
      assert.strictEqual(after.connections[0]!.server.peerEnd, "open")
      assert.isFalse(after.connections[0]!.closed)
    }))

  it.live("pause holds data until resume", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("sink")
      const client = yield* connect(proxy.port)
      yield* proxy.pause("clientToServer")
      const data = payload(500)
      yield* write(client.socket, data)
      yield* proxy.awaitUntil((s) => s.connections[0]?.received.clientToServer === 500)
      yield* Effect.sleep("50 millis")
      const peer = upstream.connections[0]!
      assert.strictEqual(peer.bytes, 0)
      yield* proxy.resume("clientToServer")
      yield* upstream.watch.until(() => (peer.bytes === 500 ? true : undefined), "500 bytes")
      assert.isTrue(received(peer).equals(data))
    }))

  it.live("half-close sends FIN one way only", () =>
    Effect.gen(function*() {
      const { proxy, upstream } = yield* setup("sink", { halfOpen: true })
      const client = yield* connect(proxy.port, { halfOpen: true })
      yield* write(client.socket, "before")
      yield* upstream.watch.until(() => (upstream.connections[0]?.bytes === 6 ? true : undefined), "6 bytes")
      yield* proxy.halfClose("clientToServer")
      const peer = upstream.connections[0]!
      yield* upstream.watch.until(() => (peer.gotFin ? true : undefined), "server FIN")
      peer.socket.write("still open")
      yield* client.watch.until(() => (client.bytes === 10 ? true : undefined), "reply")
      assert.strictEqual(received(client).toString(), "still open")
      assert.isFalse(client.gotFin)
      const stats = yield* proxy.stats
      assert.isTrue(stats.connections[0]!.server.sentFin)
      assert.isFalse(stats.connections[0]!.client.sentFin)
      assert.strictEqual(stats.connections[0]!.client.peerEnd, "open")
    }))

  it.live("dropAll resets current connections and keeps accepting", () =>
    Effect.gen(function*() {
      const { proxy } = yield* setup("echo")
      const a = yield* connect(proxy.port)
      const b = yield* connect(proxy.port)
      yield* proxy.awaitConnections(2)
      yield* proxy.dropAll()
      yield* a.watch.until(() => (a.closed ? true : undefined), "a closed")
      yield* b.watch.until(() => (b.closed ? true : undefined), "b closed")
      assert.strictEqual(a.errorCode, "ECONNRESET")
      assert.strictEqual(b.errorCode, "ECONNRESET")
      const c = yield* connect(proxy.port)
      yield* write(c.socket, "again")
      yield* c.watch.until(() => (c.bytes === 5 ? true : undefined), "echo")
      assert.strictEqual((yield* proxy.stats).accepted, 3)
    }))

  it.live("refuses new connections by reset, then accepts again", () =>
    Effect.gen(function*() {
      const { proxy } = yield* setup("echo")
      yield* proxy.refuseNew("reset")
      const refused = yield* attempt(proxy.port)
      assert.strictEqual(refused.errorCode, "ECONNRESET")
      assert.strictEqual((yield* proxy.stats).refused, 1)
      assert.strictEqual((yield* proxy.stats).accepted, 0)
      yield* proxy.acceptNew
      const ok = yield* connect(proxy.port)
      yield* write(ok.socket, "hi")
      yield* ok.watch.until(() => (ok.bytes === 2 ? true : undefined), "echo")
    }))

  it.live("refuses new connections by not listening, then listens again on the same port", () =>
    Effect.gen(function*() {
      const { proxy } = yield* setup("echo")
      yield* proxy.refuseNew("unlisten")
      const refused = yield* attempt(proxy.port)
      assert.deepStrictEqual(refused, { connected: false, errorCode: "ECONNREFUSED" })
      yield* proxy.acceptNew
      const ok = yield* connect(proxy.port)
      yield* write(ok.socket, "hi")
      yield* ok.watch.until(() => (ok.bytes === 2 ? true : undefined), "echo")
    }))

  it.live("closing the scope closes the listener and every connection", () =>
    Effect.gen(function*() {
      const upstream = yield* server("echo")
      const scope = yield* Scope.make()
      const proxy = yield* Scope.provide(FaultProxy.make({ target: { host: "127.0.0.1", port: upstream.port } }), scope)
      const client = yield* connect(proxy.port)
      yield* upstream.watch.until(() => upstream.connections[0], "server connection")
      yield* Scope.close(scope, Exit.void)
      yield* client.watch.until(() => (client.closed ? true : undefined), "client closed")
      yield* upstream.watch.until(() => (upstream.connections[0]!.closed ? true : undefined), "server closed")
      const after = yield* attempt(proxy.port)
      assert.deepStrictEqual(after, { connected: false, errorCode: "ECONNREFUSED" })
    }))

  it.live("awaitUntil fails with the stats when the condition never holds", () =>
    Effect.gen(function*() {
      const { proxy } = yield* setup("echo")
      const error = yield* Effect.flip(proxy.awaitUntil((s) => s.accepted > 0, { timeout: 50, label: "a client" }))
      assert.strictEqual(error.reason, "AwaitTimeout")
      assert.include(error.message, "a client")
      assert.include(error.message, "\"accepted\":0")
    }))
})
