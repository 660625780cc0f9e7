/**
 * Bytes that travel badly still arrive whole, and no faster than the reader takes them: publishers
 * wait while 4 MiB wait in the socket; a 16 MiB body published over TLS to a reader that
 * stops and then reads slowly, and a whole session (handshake, declare, publish with confirm, get)
 * through a proxy that re-chunks every frame into 1-byte writes both ways.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { FaultProxy, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import * as Crypto from "node:crypto"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("connection-transfer")

const sha256 = (bytes: Uint8Array) => Crypto.createHash("sha256").update(bytes).digest("hex")

describe("transfer", () => {
  it.live(
    "makes publishers wait while 4 MiB wait in the socket, and lets them all through once the reader reads",
    () =>
      Effect.gen(function*() {
        const broker = yield* SharedBroker.acquire
        const queue = `effect-amqp-test.connection-transfer.backpressure.${process.pid}`
        const body = Crypto.randomBytes(64 * 1024)
        const total = 400 // 25 MiB: more than the socket may hold plus what the kernel buffers
        yield* leakChecked(
          Effect.gen(function*() {
            const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
            const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${proxy.port}`, {
              connectionName: names.next("backpressure")
            })
            const channel = yield* AmqpChannel.make(connection)
            yield* channel.queueDeclare(queue)

            yield* proxy.stopReading("clientToServer")
            let returned = 0
            const publishing = yield* Effect.forkChild(
              Effect.forEach(Array.from({ length: total }), () =>
                Effect.map(channel.publish("", queue, body), () => {
                  returned++
                }), { discard: true }),
              { startImmediately: true }
            )
            yield* Effect.sleep("1 second")
            const stalledAt = returned
            yield* Effect.sleep("300 millis")
            // The publisher waits: no publish returned while the reader read nothing, and what this
            // process holds for the socket stays under the limit plus the message that crossed it.
            assert.strictEqual(returned, stalledAt)
            assert.isBelow(stalledAt, total)
            const socket = connection.core.transport.socket
            assert.isAtMost(socket.writableLength, 4 * 1024 * 1024 + body.length + 64)
            assert.isAtLeast(socket.writableLength, 4 * 1024 * 1024 - body.length)

            yield* proxy.resumeReading("clientToServer")
            yield* Fiber.join(publishing)
            assert.strictEqual(returned, total)
            const declared = yield* Effect.gen(function*() {
              for (let i = 0; i < 100; i++) {
                const ok = yield* channel.queueDeclare(queue, { passive: true })
                if (ok.messageCount === total) return ok
                yield* Effect.sleep("50 millis")
              }
              return yield* channel.queueDeclare(queue, { passive: true })
            })
            assert.strictEqual(declared.messageCount, total)
            assert.strictEqual(yield* channel.queueDelete(queue), total)
          }),
          names.own(broker)
        )
      }),
    60_000
  )

  it.live(
    "publishes a 16 MiB body over TLS to a slow reader and the broker holds the exact bytes",
    () =>
      Effect.gen(function*() {
        const broker = yield* SharedBroker.acquire
        const queue = `effect-amqp-test.connection-transfer.large.${process.pid}`
        const body = Crypto.randomBytes(16 * 1024 * 1024)
        yield* leakChecked(
          Effect.gen(function*() {
            const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpsPort } })
            const connection = yield* AmqpConnection.fromUrl(`amqps://guest:guest@127.0.0.1:${proxy.port}`, {
              connectionName: names.next("large"),
              tls: { ca: broker.tlsFiles.ca, servername: "localhost" }
            })
            const channel = yield* AmqpChannel.make(connection)
            yield* channel.queueDeclare(queue)
            yield* channel.confirmSelect

            yield* proxy.stopReading("clientToServer")
            const publishing = yield* Effect.forkChild(channel.publish("", queue, body), { startImmediately: true })
            yield* Effect.sleep("1 second")
            assert.isUndefined(publishing.pollUnsafe(), "confirmed while the proxy read nothing")
            assert.isTrue(yield* connection.isOpen)
            const stalled = yield* proxy.stats
            assert.isBelow(stalled.connections[0]!.received.clientToServer, body.length)

            yield* proxy.setBandwidth(12 * 1024 * 1024, "clientToServer")
            yield* proxy.resumeReading("clientToServer")
            yield* Fiber.join(publishing)
            assert.isTrue(yield* connection.isOpen)
            assert.isAbove((yield* proxy.stats).connections[0]!.forwarded.clientToServer, body.length)

            const check = yield* AmqpConnection.fromUrl(broker.url, { connectionName: names.next("check") })
            const reader = yield* AmqpChannel.make(check)
            const got = yield* reader.get(queue, { noAck: true })
            assert.isTrue(Option.isSome(got))
            const message = Option.getOrThrow(got)
            assert.strictEqual(message.body.length, body.length)
            assert.strictEqual(sha256(message.body), sha256(body))
            assert.strictEqual(message.messageCount, 0)
            assert.strictEqual(yield* reader.queueDelete(queue), 0)
          }),
          names.own(broker)
        )
      }),
    60_000
  )

  it.live("works through 1-byte writes both ways: handshake, declare, publish with confirm and get", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const body = Buffer.from("one byte at a time \u00e9\u4e2d\u{1f600}", "utf8")
      yield* leakChecked(
        Effect.gen(function*() {
          const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
          yield* proxy.setChunkSize(1, "both")
          const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${proxy.port}`, {
            connectionName: names.next("chunked")
          })
          assert.deepStrictEqual(connection.tuned, { channelMax: 2047, frameMax: 131072, heartbeat: 60 })
          const channel = yield* AmqpChannel.make(connection)
          const declared = yield* channel.queueDeclare("", { exclusive: true })
          assert.match(declared.queue, /^amq\.gen-/)
          assert.strictEqual(declared.messageCount, 0)
          yield* channel.confirmSelect
          yield* channel.publish("", declared.queue, body, {
            properties: { contentType: "text/plain", headers: { step: "chunked" } }
          })
          const got = Option.getOrThrow(yield* channel.get(declared.queue, { noAck: true }))
          assert.deepStrictEqual(Buffer.from(got.body), body)
          assert.strictEqual(got.properties.contentType, "text/plain")
          assert.deepStrictEqual(got.properties.headers, { step: "chunked" })
          assert.strictEqual(got.routingKey, declared.queue)
          assert.isTrue(Option.isNone(yield* channel.get(declared.queue, { noAck: true })))
        }),
        names.own(broker)
      )
    }))
})
