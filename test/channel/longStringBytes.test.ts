/**
 * A header of type `S` (long string) is bytes on the wire, and RabbitMQ passes them through as
 * they are; some clients put binary data there. Bytes that are not UTF-8 decode as
 * `Typed("S", bytes)` and arrive byte-exactly.
 */
import { AmqpChannel } from "@effect-amqp/client"
import { decodeTable, encodeTable, type FieldValue, Typed } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { onSharedBroker, sha256, utf8 } from "../support/channelKit.ts"

/** Not UTF-8: a lone continuation byte, 0xff, 0xfe, a truncated two-byte sequence. */
const raw = new Uint8Array([0xff, 0xfe, 0x00, 0x80, 0x41, 0xc3])

/** The bytes a decoded `S` value stands for, however the decoder chose to represent them. */
const bytesOf = (value: FieldValue | undefined): Uint8Array => {
  const inner = value instanceof Typed ? value.value : value
  if (typeof inner === "string") return new Uint8Array(Buffer.from(inner, "utf8"))
  if (inner instanceof Uint8Array) return inner
  return assert.fail(`not a long string: ${String(inner)}`)
}

describe("long string header values", () => {
  it("decode to the bytes that were encoded (codec alone)", () => {
    const encoded = encodeTable({ raw: new Typed("S", raw) })
    assert.deepStrictEqual(Array.from(bytesOf(decodeTable(encoded)["raw"])), Array.from(raw))
    assert.deepStrictEqual(Array.from(bytesOf(decodeTable(encoded, { typed: true })["raw"])), Array.from(raw))
  })

  it.live("arrive byte-exactly through the broker", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const { queue } = yield* channel.queueDeclare("", { exclusive: true })
        yield* channel.publish("", queue, utf8("body"), {
          properties: { headers: { raw: new Typed("S", raw), text: "plain" } }
        })
        const got = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        const headers = got.properties.headers!
        assert.strictEqual(headers["text"], "plain")
        assert.strictEqual(sha256(bytesOf(headers["raw"])), sha256(raw))
        assert.strictEqual((yield* channel.queueDeclare(queue, { passive: true })).messageCount, 0)
      })
    ))
})
