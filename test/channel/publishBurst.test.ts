/**
 * A burst of publishes in one go, against a scripted peer that reassembles every message it reads:
 * small messages (written as their place in the encoder's slab, several slabs' worth), bodies too
 * large to copy (written as views of the caller's body), empty bodies, on two channels, one of them
 * in confirm mode. Every message arrives whole and in order on its channel, with its body's hash;
 * the confirms all settle; and the burst leaves in a handful of socket writes, not one per message.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as Crypto from "node:crypto"
import { leakChecked } from "../support/Probe.ts"
import { peerUrl } from "../support/scriptedAmqp.ts"
import { countWrites } from "../support/socketWrites.ts"

const PLAIN = 1
const CONFIRMING = 2

interface Planned {
  readonly channel: number
  readonly routingKey: string
  readonly body: Uint8Array
}

/** 900 messages: mostly 1 KiB, with empty bodies, bodies of exactly the copy limit and larger ones. */
const plan: ReadonlyArray<Planned> = Array.from({ length: 900 }, (_, i) => {
  const size = i % 50 === 7 ? 20_000 : i % 61 === 3 ? 16 * 1024 : i % 37 === 5 ? 0 : 1024
  const body = new Uint8Array(size)
  for (let b = 0; b < size; b++) body[b] = (i * 31 + b * 7) & 0xff
  return { channel: i % 3 === 0 ? CONFIRMING : PLAIN, routingKey: `m${i}`, body }
})

const sha = (bytes: Uint8Array) => Crypto.createHash("sha256").update(bytes).digest("hex")

const describeMessage = (channel: number, routingKey: string, body: Uint8Array) =>
  `${channel} ${routingKey} ${body.length} ${sha(body)}`

const onChannel = (channel: number) => (line: string) => line.startsWith(`${channel} `)

/**
 * Opens both channels, puts the second in confirm mode, then reassembles every message the client
 * publishes. Once the confirming channel's last message is in, acks them all with one frame.
 * Answers the closes; returns the messages as read, described.
 */
const reassemble = (peer: ScriptedPeer.ScriptedPeer, counting: { port: number | undefined }) =>
  Effect.gen(function*() {
    const connection = yield* peer.accept()
    yield* connection.handshake({ tune: { heartbeat: 0 } })
    for (const channel of [PLAIN, CONFIRMING]) {
      yield* connection.expect("channel.open", { channel })
      yield* connection.sendMethod(channel, Methods.channelOpenOk())
    }
    yield* connection.expect("confirm.select", { channel: CONFIRMING })
    yield* connection.sendMethod(CONFIRMING, Methods.confirmSelectOk())
    counting.port = connection.clientPort

    const toConfirm = plan.filter((m) => m.channel === CONFIRMING).length
    let confirming = 0
    const read: Array<string> = []
    const open = new Map<number, { routingKey: string; size: number; parts: Array<Uint8Array> }>()
    const complete = (channel: number) => {
      const message = open.get(channel)
      if (message === undefined) return
      const received = message.parts.reduce((n, part) => n + part.length, 0)
      if (received < message.size) return
      open.delete(channel)
      read.push(describeMessage(channel, message.routingKey, Buffer.concat(message.parts)))
      if (channel === CONFIRMING) confirming++
    }
    while (true) {
      const frame = yield* connection.nextFrame({ timeoutMillis: 10_000 })
      if (frame._tag === "HeaderFrame") {
        const message = open.get(frame.channel)
        if (message !== undefined) message.size = frame.bodySize
        complete(frame.channel)
      } else if (frame._tag === "BodyFrame") {
        open.get(frame.channel)?.parts.push(frame.payload)
        complete(frame.channel)
      } else if (frame._tag === "MethodFrame") {
        const method = frame.method
        if (method._tag === "basic.publish") {
          open.set(frame.channel, { routingKey: method.routingKey, size: -1, parts: [] })
        } else if (method._tag === "channel.close") {
          yield* connection.sendMethod(frame.channel, Methods.channelCloseOk())
        } else if (method._tag === "connection.close") {
          yield* connection.sendMethod(0, Methods.connectionCloseOk())
          yield* connection.close("fin")
          return read
        }
      }
      if (frame._tag !== "MethodFrame" && confirming === toConfirm) {
        confirming = -1
        yield* connection.sendMethod(CONFIRMING, Methods.basicAck({ deliveryTag: toConfirm, multiple: true }))
      }
    }
  })

describe("a burst of publishes", () => {
  it.live("arrives whole and in order on each channel, across slabs and large bodies, in a few writes", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const counting: { port: number | undefined } = { port: undefined }
      const counter = yield* countWrites(() => counting.port)
      const served = yield* Effect.forkScoped(reassemble(peer, counting), { startImmediately: true })

      const writes = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* AmqpConnection.fromUrl(peerUrl(peer.port))
        const plain = yield* AmqpChannel.make(connection)
        const confirming = yield* AmqpChannel.make(connection)
        yield* confirming.confirmSelect
        const before = counter.writes

        const confirms: Array<Effect.Effect<void, unknown>> = []
        for (const { channel, routingKey, body } of plan) {
          if (channel === PLAIN) yield* plain.publish("", routingKey, body)
          else confirms.push(yield* confirming.publishAsync("", routingKey, body))
        }
        // Settled once the peer has read everything, which the client wrote in the meantime.
        yield* Effect.all(confirms).pipe(Effect.timeout("5 seconds"))
        return counter.writes - before
      }))

      const read = yield* Fiber.join(served)
      const expected = plan.map((m) => describeMessage(m.channel, m.routingKey, m.body))
      assert.deepStrictEqual(read.filter(onChannel(PLAIN)), expected.filter(onChannel(PLAIN)))
      assert.deepStrictEqual(read.filter(onChannel(CONFIRMING)), expected.filter(onChannel(CONFIRMING)))
      // The first publish at once, the rest gathered into one: 2, or a few more had the burst been cut
      // up by the runtime. One write per slab (the burst fills five) or per message would be more.
      assert.isAtMost(writes, 4, `${plan.length} publishes took ${writes} socket writes`)
    })))
})
