/**
 * The ordered shutdown as the peer sees it, decoded from the bytes a tap forwarded to the broker:
 * closing the scope, or interrupting the fiber that owns it mid-handshake or mid-publish, sends
 * `channel.close` and `connection.close` last, waits for `close-ok`, and only then a FIN. Before
 * `tune-ok` there is no AMQP close to send, and the client only sends its FIN.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { FaultProxy, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Option } from "effect"
import * as Crypto from "node:crypto"
import { leakChecked, Names } from "../support/Probe.ts"
import * as Tap from "../support/Tap.ts"
import type { Recording } from "../support/Wire.ts"

const names = new Names("connection-shutdown")

const sha256 = (bytes: Uint8Array) => Crypto.createHash("sha256").update(bytes).digest("hex")

const handshake = ["protocol-header", "connection.start-ok", "connection.tune-ok", "connection.open"]

/** What the client sent up to its FIN (or RST), once it has sent it. */
const clientSteps = (recording: Recording) =>
  recording.until((r) => r.find("client", "FIN") ?? r.find("client", "RST"), "the client to end its side").pipe(
    Effect.as(recording.of("client").filter((what) => what !== "heartbeat" && what !== "closed"))
  )

/** client -> tap -> fault proxy -> the shared node's plain port. */
const throughProxy = Effect.gen(function*() {
  const broker = yield* SharedBroker.acquire
  const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
  const tap = yield* Tap.make({ host: "127.0.0.1", port: proxy.port })
  return { broker, proxy, tap, url: `amqp://guest:guest@127.0.0.1:${tap.port}` }
})

describe("ordered shutdown", () => {
  it.live("closing the scope sends channel.close, then connection.close, waits for close-ok, then FIN", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const tap = yield* Tap.make({ host: "127.0.0.1", port: broker.amqpPort })
          yield* Effect.scoped(Effect.gen(function*() {
            const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${tap.port}`, {
              connectionName: names.next("scope")
            })
            yield* AmqpChannel.make(connection)
          }))
          const recording = yield* tap.connection(0)
          assert.deepStrictEqual(yield* clientSteps(recording), [
            ...handshake,
            "channel.open",
            "channel.close",
            "connection.close",
            "FIN"
          ])
          const close = recording.find("client", "connection.close")!
          assert.deepInclude(close.frame, { channel: 0 })
          assert.deepInclude((close.frame as { method: object }).method, { replyCode: 200 })
          const closeOk = recording.find("server", "connection.close-ok")!
          assert.isAtMost(closeOk.at, recording.find("client", "FIN")!.at)
        }),
        names.own(broker)
      )
    }))

  it.live("interrupting the fiber after tune-ok, before open-ok, still sends connection.close before FIN", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const { proxy, tap, url } = yield* throughProxy
          yield* proxy.setLatency(300, "serverToClient")
          const fiber = yield* Effect.forkChild(
            Effect.scoped(Effect.andThen(
              AmqpConnection.fromUrl(url, { connectionName: names.next("handshake"), closeTimeout: 2_000 }),
              Effect.never
            ))
          )
          const recording = yield* tap.connection(0)
          yield* recording.until((r) => r.find("client", "connection.open"), "connection.open")
          yield* Fiber.interrupt(fiber)

          // The broker's open-ok may arrive while the client is closing; the spec says to discard it.
          const steps = yield* clientSteps(recording)
          const closes = recording.steps.filter((s) => s.from === "client" && s.what === "connection.close")
          assert.deepStrictEqual(steps, [...handshake, "connection.close", "FIN"], JSON.stringify(closes))
          assert.isAtMost(recording.find("server", "connection.close-ok")!.at, recording.find("client", "FIN")!.at)
        }),
        names.own(broker)
      )
    }))

  it.live("interrupting the fiber before tune sends no AMQP close, only a FIN", () =>
    leakChecked(Effect.gen(function*() {
      const { proxy, tap, url } = yield* throughProxy
      yield* proxy.setLatency(300, "serverToClient")
      const fiber = yield* Effect.forkChild(Effect.scoped(Effect.andThen(AmqpConnection.fromUrl(url), Effect.never)))
      const recording = yield* tap.connection(0)
      yield* recording.until((r) => r.find("client", "protocol-header"), "the protocol header")
      yield* Effect.sleep("50 millis")
      const started = Date.now()
      yield* Fiber.interrupt(fiber)

      assert.deepStrictEqual(yield* clientSteps(recording), ["protocol-header", "FIN"])
      assert.isBelow(Date.now() - started, 2_000)
    })))

  it.live("interrupting the fiber mid-publish sends the whole message, channel.close, connection.close, then FIN", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const queue = `effect-amqp-test.connection-shutdown.${process.pid}`
      const body = Crypto.randomBytes(1024 * 1024)
      yield* leakChecked(
        Effect.gen(function*() {
          const { proxy, tap, url } = yield* throughProxy
          yield* proxy.setBandwidth(2 * 1024 * 1024, "clientToServer")
          const declared = yield* Deferred.make<void>()
          const fiber = yield* Effect.forkChild(Effect.scoped(Effect.gen(function*() {
            const connection = yield* AmqpConnection.fromUrl(url, { connectionName: names.next("publish") })
            const channel = yield* AmqpChannel.make(connection)
            yield* channel.queueDeclare(queue)
            yield* channel.confirmSelect
            yield* Deferred.succeed(declared, undefined)
            yield* channel.publish("", queue, body)
          })))
          yield* Deferred.await(declared)
          const recording = yield* tap.connection(0)
          yield* recording.until((r) => r.find("client", "content-header"), "the publish to start")
          yield* Fiber.interrupt(fiber)

          // frame_max 131072 less 8 bytes of frame overhead per body frame.
          const bodyFrames = Math.ceil(body.length / (131072 - 8))
          assert.deepStrictEqual(yield* clientSteps(recording), [
            ...handshake,
            "channel.open",
            "queue.declare",
            "confirm.select",
            "basic.publish",
            "content-header",
            ...Array.from({ length: bodyFrames }, () => "content-body"),
            "channel.close",
            "connection.close",
            "FIN"
          ])

          // The broker got the whole message: the close came after it, not through it.
          const check = yield* AmqpConnection.fromUrl(broker.url, { connectionName: names.next("check") })
          const reader = yield* AmqpChannel.make(check)
          const got = yield* reader.get(queue, { noAck: true })
          assert.isTrue(Option.isSome(got))
          assert.strictEqual(sha256(Option.getOrThrow(got).body), sha256(body))
          assert.strictEqual(yield* reader.queueDelete(queue), 0)
        }),
        names.own(broker)
      )
    }))
})
