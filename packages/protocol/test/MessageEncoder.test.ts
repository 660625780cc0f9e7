import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import type { Command } from "../src/CommandAssembler.ts"
import { encodeMethod, type Frame, FrameType } from "../src/Frame.ts"
import { FrameDecoder } from "../src/FrameDecoder.ts"
import { Methods } from "../src/generated/Methods.ts"
import { BufferWriter } from "../src/internal/BufferWriter.ts"
import { MessageEncoder } from "../src/MessageEncoder.ts"
import type { BasicProperties } from "../src/Properties.ts"
import { AmqpEncodeError } from "../src/ProtocolError.ts"
import { encodeErrorOf } from "./fixtures/Errors.ts"
import { assemble, pattern } from "./fixtures/Streams.ts"
import { Bytes, concat, frame, toHex } from "./fixtures/Wire.ts"

const publish = Methods.basicPublish({ exchange: "ex", routingKey: "rk" })

const properties: BasicProperties = {
  contentType: "application/json",
  deliveryMode: 2,
  messageId: "id-1",
  timestamp: 1700000000,
  headers: { "x-retries": 2, source: "test", ratio: 0.5, big: 2n ** 60n }
}

const pieces = (
  encoded: Buffer | Array<Uint8Array>
): Array<Uint8Array> => (Array.isArray(encoded) ? encoded : [encoded])

const decodeFrames = (bytes: Uint8Array, frameMax: number): Array<Frame> => new FrameDecoder({ frameMax }).push(bytes)

const decodeCommands = (bytes: Uint8Array, frameMax: number): Array<Command> => assemble(decodeFrames(bytes, frameMax))

const payloadSizes = (frames: ReadonlyArray<Frame>): Array<number> =>
  frames.flatMap((f) => (f._tag === "BodyFrame" ? [f.payload.length] : []))

describe("message framing", () => {
  it("encodes method, content header and body frames, laid out by the spec", () => {
    const body = Uint8Array.of(1, 2, 3)
    const expected = concat([
      frame(
        FrameType.method,
        9,
        new Bytes().short(60).short(40).short(0).shortstr("ex").shortstr("rk").octet(0).build()
      ),
      frame(
        FrameType.header,
        9,
        new Bytes().short(60).short(0).longlong(3).short(0x9000).shortstr("text/plain").octet(1).build()
      ),
      frame(FrameType.body, 9, body)
    ])
    const encoded = new MessageEncoder().message(9, publish, { contentType: "text/plain", deliveryMode: 1 }, body)
    assert.isTrue(Buffer.isBuffer(encoded))
    assert.strictEqual(toHex(encoded as Buffer), toHex(expected))
  })

  it("sends no body frame for an empty body", () => {
    const encoded = new MessageEncoder().message(1, publish, {}, new Uint8Array(0))
    const frames = decodeFrames(concat(pieces(encoded)), 4096)
    assert.deepStrictEqual(frames.map((f) => f._tag), ["MethodFrame", "HeaderFrame"])
  })

  it("splits a body into frames of at most frame_max - 8 payload bytes", () => {
    for (const size of [10_000, 100_000]) {
      const encoded = new MessageEncoder({ frameMax: 4096 }).message(1, publish, properties, pattern(size))
      const frames = decodeFrames(concat(pieces(encoded)), 4096)
      const sizes = payloadSizes(frames)
      assert.isTrue(sizes.every((n) => n <= 4088))
      assert.strictEqual(sizes.length, Math.ceil(size / 4088))
      assert.deepStrictEqual(sizes.slice(0, -1), Array(sizes.length - 1).fill(4088))
    }
  })

  it("returns a small message as one buffer", () => {
    const encoder = new MessageEncoder({ frameMax: 4096 })
    for (const size of [0, 1, 100, 4088, 4089, 16 * 1024]) {
      assert.isTrue(Buffer.isBuffer(encoder.message(1, publish, properties, pattern(size))), `size ${size}`)
    }
  })

  it("references a large body instead of copying it", () => {
    const body = pattern(300_000)
    const encoded = new MessageEncoder({ frameMax: 131072 }).message(1, publish, properties, body)
    assert.isTrue(Array.isArray(encoded))
    const parts = pieces(encoded)
    const views = parts.filter((part) => part.buffer === body.buffer)
    assert.strictEqual(views.length, Math.ceil(body.length / 131064))
    assert.strictEqual(views.reduce((n, view) => n + view.length, 0), body.length)
    assert.isTrue(parts.every((part) => part.buffer === body.buffer || part.length < 1024))
    assert.isTrue(Buffer.from(concat(views)).equals(body))
  })

  it("copies bodies up to copyLimit and references larger ones", () => {
    const encoder = new MessageEncoder({ frameMax: 4096, copyLimit: 10 })
    assert.isTrue(Buffer.isBuffer(encoder.message(1, publish, {}, pattern(10))))
    assert.isTrue(Array.isArray(encoder.message(1, publish, {}, pattern(11))))
  })

  it("encodes any content method, not only basic.publish", () => {
    const method = Methods.basicDeliver({ consumerTag: "c", deliveryTag: 4, exchange: "x", routingKey: "r" })
    const [command] = decodeCommands(concat(pieces(new MessageEncoder().message(2, method, {}, pattern(5)))), 4096)
    assert.deepStrictEqual(command?.method, method)
  })
})

/** What `encode` returns, or undefined when the encoder refuses it. */
const unlessRefused = <A>(encode: () => A): A | undefined => {
  try {
    return encode()
  } catch (error) {
    if (error instanceof AmqpEncodeError) return undefined
    throw error
  }
}

/** Encodes a publish with a `size`-byte body, decodes and assembles it, and checks it came back whole. */
const roundTrip = (frameMax: number, size: number) => {
  const body = pattern(size, size)
  const encoded = new MessageEncoder({ frameMax }).message(7, publish, properties, body)
  const bytes = concat(pieces(encoded))
  const frames = decodeFrames(bytes, frameMax)
  assert.strictEqual(payloadSizes(frames).length, Math.ceil(size / (frameMax - 8)), `${size} at ${frameMax}`)
  const [command, ...rest] = assemble(frames)
  assert.strictEqual(rest.length, 0)
  assert.deepStrictEqual(command?.method, publish)
  assert.deepStrictEqual(command?.properties, properties)
  assert.isTrue(Buffer.from(command?.body ?? []).equals(body), `${size} at ${frameMax}`)
}

describe("publish, the client's path", () => {
  it("lays out a mandatory publish by the spec", () => {
    const body = Uint8Array.of(7, 8)
    const expected = concat([
      frame(
        FrameType.method,
        300,
        new Bytes().short(60).short(40).short(0).shortstr("amq.direct").shortstr("käse").octet(1).build()
      ),
      frame(FrameType.header, 300, new Bytes().short(60).short(0).longlong(2).short(0x1000).octet(2).build()),
      frame(FrameType.body, 300, body)
    ])
    const encoded = new MessageEncoder().publish(300, "amq.direct", "käse", true, { deliveryMode: 2 }, body)
    assert.strictEqual(toHex(concat(pieces(encoded))), toHex(expected))
  })

  it("writes the same bytes as the generated basic.publish encoder", () => {
    const shortString = fc.string({ unit: "binary", maxLength: 120 })
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 65535 }),
        shortString,
        shortString,
        fc.boolean(),
        fc.integer({ min: 4096, max: 20_000 }),
        fc.integer({ min: 0, max: 45_000 }),
        (channel, exchange, routingKey, mandatory, frameMax, size) => {
          const body = pattern(size, channel)
          const generated = new MessageEncoder({ frameMax }).message(
            channel,
            Methods.basicPublish({ exchange, routingKey, mandatory }),
            properties,
            body
          )
          const direct = new MessageEncoder({ frameMax }).publish(
            channel,
            exchange,
            routingKey,
            mandatory,
            properties,
            body
          )
          assert.strictEqual(toHex(concat(pieces(direct))), toHex(concat(pieces(generated))))
        }
      ),
      { numRuns: 300 }
    )
  })

  it("never writes over what it handed out, however its uses mix: slab ranges, views, refusals, growth", () => {
    const operation = fc.record({
      kind: fc.constantFrom("slab", "publish", "method"),
      routingKey: fc.string({ unit: "binary", maxLength: 60 }),
      // Copied bodies weigh most, so that every run fills more than one slab.
      size: fc.constantFrom(0, 1, 100, 4089, 12_000, 12_000, 16 * 1024, 16 * 1024, 16 * 1024 + 1, 40_000),
      // Mostly none; now and then a header that grows the slab, or one over frame_max.
      headerPad: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, fc.integer({ min: 1, max: 200_000 }))
    })
    fc.assert(
      fc.property(fc.array(operation, { minLength: 100, maxLength: 200 }), fc.constantFrom(4096, 20_000, 131072, 0), (
        operations,
        frameMax
      ) => {
        const encoder = new MessageEncoder({ frameMax })
        // Its results are read at once: it may write over them.
        const reference = new MessageEncoder({ frameMax })
        const handedOut: Array<{ readonly bytes: () => string; readonly expected: string }> = []
        operations.forEach(({ kind, routingKey, size, headerPad }, i) => {
          if (kind === "method") {
            const ack = Methods.basicAck({ deliveryTag: i + 1, multiple: true })
            const ackFrame = encoder.method(i, ack)
            handedOut.push({ bytes: () => toHex(ackFrame), expected: toHex(reference.method(i, ack)) })
            return
          }
          const body = pattern(size, i)
          const padded = headerPad > 0 ? { headers: { pad: "x".repeat(headerPad) } } : {}
          const publishOn = (on: MessageEncoder) => on.publish(i, "x", routingKey, i % 2 === 0, padded, body)
          const expected = unlessRefused(() => toHex(concat(pieces(publishOn(reference)))))
          if (kind === "publish") {
            const frames = unlessRefused(() => publishOn(encoder))
            assert.strictEqual(frames === undefined, expected === undefined, `publish ${i}`)
            if (frames !== undefined && expected !== undefined) {
              handedOut.push({ bytes: () => toHex(concat(pieces(frames))), expected })
            }
            return
          }
          const start = unlessRefused(() => encoder.publishToSlab(i, "x", routingKey, i % 2 === 0, padded, body))
          if (size > 16 * 1024) {
            assert.strictEqual(start, -1)
            return
          }
          assert.strictEqual(start === undefined, expected === undefined, `publishToSlab ${i}`)
          if (start !== undefined && expected !== undefined) {
            const bytes = encoder.slab.subarray(start, encoder.slabEnd)
            handedOut.push({ bytes: () => toHex(bytes), expected })
          }
        })
        for (const { bytes, expected } of handedOut) assert.strictEqual(bytes(), expected)
      }),
      { numRuns: 12, endOnFailure: true }
    )
  })

  it("writes nothing into its slab for a body it does not copy, or a publish it refuses", () => {
    const encoder = new MessageEncoder({ copyLimit: 10 })
    const first = encoder.publishToSlab(1, "", "q", false, {}, pattern(3))
    const end = encoder.slabEnd
    assert.strictEqual(encoder.publishToSlab(1, "", "q", false, {}, pattern(11)), -1)
    encodeErrorOf(() => encoder.publishToSlab(1, "", "é".repeat(128), false, {}, pattern(3)))
    assert.strictEqual(encoder.slabEnd, end)
    const next = encoder.publishToSlab(1, "", "q", false, {}, pattern(3))
    assert.strictEqual(next, end)
    assert.strictEqual(toHex(encoder.slab.subarray(next, encoder.slabEnd)), toHex(encoder.slab.subarray(first, end)))
    const last = encoder.slabEnd
    assert.strictEqual(encoder.method(1, Methods.basicQos({ prefetchCount: 1 })).byteOffset, last)
  })

  it("refuses a huge routing key without growing its buffer for it", () => {
    const writer = new BufferWriter(1024)
    const error = encodeErrorOf(() => writer.shortstr("x".repeat(20_000_000)))
    assert.strictEqual(error.message.slice(0, 45), "short string of 20000000 bytes exceeds 255: x")
    assert.strictEqual(writer.buf.length, 1024)
    assert.strictEqual(writer.pos, 0)
  })

  it("refuses a timestamp that is neither a number nor a bigint with a clear reason", () => {
    const error = encodeErrorOf(() =>
      new MessageEncoder().publish(1, "", "q", false, { timestamp: new Date(0) as never }, pattern(1))
    )
    assert.match(error.message, /is not an unsigned 64-bit integer$/)
  })

  it("refuses a routing key over 255 bytes and leaves no bytes behind", () => {
    const encoder = new MessageEncoder()
    const first = encoder.publish(1, "", "q", false, {}, pattern(3)) as Buffer
    const snapshot = Buffer.from(first)
    encodeErrorOf(() => encoder.publish(1, "", "é".repeat(128), false, {}, pattern(3)))
    const next = encoder.publish(1, "", "q", false, {}, pattern(3)) as Buffer
    assert.isTrue(next.equals(snapshot))
    assert.isTrue(first.equals(snapshot))
  })
})

describe("round trips", () => {
  for (const frameMax of [4096, 131072]) {
    const payload = frameMax - 8
    const sizes = [0, 1, frameMax - 9, frameMax - 8, frameMax - 7, 2 * payload - 1, 2 * payload, 2 * payload + 1]
    it(`decodes back to the same message around frame boundaries at frame_max ${frameMax}`, () => {
      for (const size of [...sizes, 16 * 1024, 16 * 1024 + 1]) roundTrip(frameMax, size)
    })
    it(`decodes back a 16 MiB message at frame_max ${frameMax}`, () => {
      roundTrip(frameMax, 16 * 1024 * 1024)
    })
  }

  it("decodes back messages of random sizes at random frame_max", () => {
    fc.assert(
      fc.property(fc.integer({ min: 4096, max: 20_000 }), fc.integer({ min: 0, max: 70_000 }), roundTrip),
      { numRuns: 200 }
    )
  })

  it("never writes over buffers it handed out before", () => {
    const encoder = new MessageEncoder({ frameMax: 4096 })
    const outputs: Array<Uint8Array> = []
    for (let i = 0; i < 10_000; i++) {
      const size = i % 1000 === 999 ? 20_000 : i % 300
      outputs.push(
        ...pieces(encoder.message(i % 100 + 1, publish, { ...properties, messageId: `m-${i}` }, pattern(size, i)))
      )
      if (i % 7 === 0) outputs.push(encoder.method(0, Methods.connectionBlocked({ reason: `r-${i}` })))
    }
    const commands = decodeCommands(concat(outputs), 4096)
    assert.strictEqual(commands.length, 10_000 + Math.ceil(10_000 / 7))
    let i = 0
    for (const command of commands) {
      if (command.method._tag === "connection.blocked") {
        assert.strictEqual(command.method.reason, `r-${i - 1}`)
        continue
      }
      const size = i % 1000 === 999 ? 20_000 : i % 300
      assert.strictEqual(command.channel, i % 100 + 1)
      assert.strictEqual(command.properties?.messageId, `m-${i}`)
      assert.isTrue(Buffer.from(command.body ?? []).equals(pattern(size, i)), `message ${i}`)
      i++
    }
  })
})

describe("frame_max and failures", () => {
  it("applies a newly negotiated frame_max", () => {
    const encoder = new MessageEncoder({ frameMax: 131072 })
    encoder.setFrameMax(4096)
    assert.deepStrictEqual(
      payloadSizes(decodeFrames(concat(pieces(encoder.message(1, publish, {}, pattern(5000)))), 4096)),
      [
        4088,
        912
      ]
    )
  })

  it("takes frame_max 0 as frames of 128 KiB", () => {
    const encoded = new MessageEncoder({ frameMax: 0 }).message(1, publish, {}, pattern(300_000))
    assert.deepStrictEqual(payloadSizes(decodeFrames(concat(pieces(encoded)), 0)), [131064, 131064, 37872])
  })

  it("raises a frame_max below the spec's minimum to 4096, as the decoder does", () => {
    const encoded = new MessageEncoder({ frameMax: 8 }).message(1, publish, {}, pattern(5000))
    assert.deepStrictEqual(payloadSizes(decodeFrames(concat(pieces(encoded)), 4096)), [4088, 912])
  })

  it("encodes a single method frame", () => {
    const method = Methods.basicAck({ deliveryTag: 77 })
    assert.strictEqual(toHex(new MessageEncoder().method(3, method)), toHex(encodeMethod(3, method)))
  })

  it("leaves no bytes behind when a message fails to encode", () => {
    const encoder = new MessageEncoder()
    const first = encoder.message(1, publish, {}, pattern(3)) as Buffer
    const snapshot = Buffer.from(first)
    encodeErrorOf(() => encoder.message(1, publish, { messageId: "x".repeat(256) }, pattern(3)))
    encodeErrorOf(() => encoder.message(1, publish, { headers: { bad: new Map() as never } }, pattern(3)))
    const next = encoder.message(1, publish, {}, pattern(3)) as Buffer
    assert.isTrue(next.equals(snapshot))
    assert.isTrue(first.equals(snapshot))
  })

  it("leaves no bytes behind when a method fails to encode", () => {
    const encoder = new MessageEncoder()
    encodeErrorOf(() => encoder.method(1, Methods.queueDeclare({ queue: "q".repeat(256) })))
    const method = Methods.basicAck({ deliveryTag: 1 })
    assert.strictEqual(toHex(encoder.method(1, method)), toHex(encodeMethod(1, method)))
  })
})

/** A declare whose arguments hold one string of `length` bytes. */
const declare = (length: number) => Methods.queueDeclare({ queue: "q", arguments: { s: "x".repeat(length) } })

/** The string length that makes the declare's frame exactly `size` bytes (each byte adds one). */
const lengthFor = (size: number) => size - encodeMethod(1, declare(0)).length

describe("methods and content headers against frame_max", () => {
  it("sends a method frame of exactly frame_max and refuses one byte more", () => {
    const encoder = new MessageEncoder({ frameMax: 8192 })
    assert.strictEqual(encoder.method(1, declare(lengthFor(8192))).length, 8192)
    encodeErrorOf(() => encoder.method(1, declare(lengthFor(8193))))
  })

  it("sends a content header frame of exactly frame_max and refuses one byte more", () => {
    const encoder = new MessageEncoder({ frameMax: 8192 })
    const headerSize = (length: number) =>
      (encoder.message(1, publish, { headers: { s: "x".repeat(length) } }, pattern(0)) as Buffer).length -
      encodeMethod(1, publish).length
    const fits = 8192 - headerSize(0)
    assert.strictEqual(headerSize(fits), 8192)
    encodeErrorOf(() => encoder.message(1, publish, { headers: { s: "x".repeat(fits + 1) } }, pattern(0)))
  })

  it("sets no limit on method frames when frame_max is 0", () => {
    const encoder = new MessageEncoder({ frameMax: 0 })
    assert.strictEqual(encoder.method(1, declare(lengthFor(200_000))).length, 200_000)
  })
})
