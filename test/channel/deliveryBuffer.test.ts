/**
 * A consumer's buffer against a scripted peer that writes several deliveries and then the
 * channel's close in one socket write: the consumer takes the deliveries of that read in order,
 * then its end; deliveries to acknowledge whose channel closed before they were taken are
 * dropped (the broker requeues them), deliveries without acknowledgement are not.
 */
import { AmqpChannel, AmqpChannelError, AmqpConnection } from "@effect-amqp/client"
import { encodeFrame, encodeMethod, type Frame, Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { leakChecked } from "../support/Probe.ts"

const CHANNEL = 1
const CONSUMER_TAG = "ctag-scripted"

/** `basic.deliver`, its content header and its body: one delivery as the broker writes it. */
const delivery = (deliveryTag: number, text: string): Uint8Array => {
  const body = new TextEncoder().encode(text)
  const header: Frame = {
    _tag: "HeaderFrame",
    channel: CHANNEL,
    classId: 60,
    bodySize: body.length,
    properties: {}
  }
  const content: Frame = { _tag: "BodyFrame", channel: CHANNEL, payload: body }
  return Buffer.concat([
    encodeMethod(
      CHANNEL,
      Methods.basicDeliver({
        consumerTag: CONSUMER_TAG,
        deliveryTag,
        redelivered: false,
        exchange: "",
        routingKey: "q"
      })
    ),
    encodeFrame(header),
    encodeFrame(content)
  ])
}

/** Opens channel 1, answers basic.consume, then writes three deliveries and a 406 in one write. */
const script = (connection: ScriptedPeer.PeerConnection) =>
  Effect.gen(function*() {
    yield* connection.handshake({ tune: { heartbeat: 0 } })
    yield* connection.expect("channel.open")
    yield* connection.sendMethod(CHANNEL, Methods.channelOpenOk())
    const consume = yield* connection.expect("basic.consume")
    assert.strictEqual(consume.consumerTag, CONSUMER_TAG)
    yield* connection.sendMethod(CHANNEL, Methods.basicConsumeOk({ consumerTag: CONSUMER_TAG }))
    const close = Methods.channelClose({
      replyCode: 406,
      replyText: "PRECONDITION_FAILED - scripted",
      classId: 60,
      methodId: 80
    })
    yield* connection.sendRaw(
      Buffer.concat([delivery(1, "one"), delivery(2, "two"), delivery(3, "three"), encodeMethod(CHANNEL, close)])
    )
    yield* connection.expect("channel.close-ok")
    yield* connection.expect("connection.close")
    yield* connection.sendMethod(0, Methods.connectionCloseOk())
    yield* connection.awaitEnd()
    yield* connection.close("fin")
  })

/** Consumes with `noAck` and returns the bodies the handler saw and how the consumer ended. */
const consumeAll = (noAck: boolean) =>
  leakChecked(Effect.gen(function*() {
    const peer = yield* ScriptedPeer.make()
    const served = yield* Effect.forkScoped(Effect.flatMap(peer.accept(), script), { startImmediately: true })
    const result = yield* Effect.scoped(Effect.gen(function*() {
      const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`)
      const channel = yield* AmqpChannel.make(connection)
      const seen: Array<string> = []
      const ended = yield* Effect.flip(
        channel.consumeWith("q", (d) => Effect.sync(() => seen.push(new TextDecoder().decode(d.body))), {
          consumerTag: CONSUMER_TAG,
          noAck
        })
      )
      return { seen, ended }
    }))
    yield* Fiber.join(served)
    return result
  }))

const expectedEnd = new AmqpChannelError({
  channel: CHANNEL,
  replyCode: 406,
  replyText: "PRECONDITION_FAILED - scripted",
  classId: 60,
  methodId: 80,
  method: "basic.ack"
})

describe("a consumer's buffer", () => {
  it.live("hands over the deliveries of one read in order, then the channel's end (no acks)", () =>
    Effect.gen(function*() {
      const { ended, seen } = yield* consumeAll(true)
      assert.deepStrictEqual(seen, ["one", "two", "three"])
      assert.deepStrictEqual(ended, expectedEnd)
    }))

  it.live("drops the deliveries to acknowledge whose channel closed in the same read", () =>
    Effect.gen(function*() {
      const { ended, seen } = yield* consumeAll(false)
      assert.deepStrictEqual(seen, [])
      assert.deepStrictEqual(ended, expectedEnd)
    }))
})
