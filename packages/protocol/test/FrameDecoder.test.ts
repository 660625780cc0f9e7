import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import type { CommandAssembler } from "../src/CommandAssembler.ts"
import { encodeFrame, encodeMethod, type Frame, FrameType, HEARTBEAT_FRAME } from "../src/Frame.ts"
import { FRAME_MAX_CEILING, FrameDecoder } from "../src/FrameDecoder.ts"
import { Methods } from "../src/generated/Methods.ts"
import { MessageEncoder } from "../src/MessageEncoder.ts"
import { AmqpFrameError } from "../src/ProtocolError.ts"
import * as Arbitraries from "./fixtures/Arbitraries.ts"
import { frameErrorOf } from "./fixtures/Errors.ts"
import { methodOf } from "./fixtures/Spec.ts"
import { assemble, cutAt, decodeChunks, mixedFrames, mixedStream, pattern, reencode } from "./fixtures/Streams.ts"
import { Bytes, concat, frame, hex, toHex } from "./fixtures/Wire.ts"

const publish = Methods.basicPublish({ exchange: "ex", routingKey: "rk" })

const pieces = (
  encoded: Buffer | Array<Uint8Array>
): Array<Uint8Array> => (Array.isArray(encoded) ? encoded : [encoded])

/** A method frame's bytes with `extra` octets appended to its payload. */
const methodWithExtra = (extra: ReadonlyArray<number>): Uint8Array => {
  const encoded = encodeFrame({ _tag: "MethodFrame", channel: 1, method: Methods.basicQos({ prefetchCount: 10 }) })
  return frame(FrameType.method, 1, new Bytes().raw(encoded.subarray(7, -1)).raw(extra).build())
}

/** Records the sizes passed to `Buffer.allocUnsafe` and `Buffer.alloc` while `f` runs. */
const allocationsDuring = (f: () => void): Array<number> => {
  const sizes: Array<number> = []
  const { alloc, allocUnsafe } = Buffer
  Buffer.allocUnsafe = (size: number) => {
    sizes.push(size)
    return allocUnsafe(size)
  }
  Buffer.alloc = ((size: number, ...rest: Array<never>) => {
    sizes.push(size)
    return alloc(size, ...rest)
  }) as typeof Buffer.alloc
  try {
    f()
  } finally {
    Buffer.allocUnsafe = allocUnsafe
    Buffer.alloc = alloc
  }
  return sizes
}

describe("chunking", () => {
  it("decodes a mixed stream fed whole", () => {
    assert.deepStrictEqual(decodeChunks([mixedStream]), mixedFrames as Array<Frame>)
  })

  it("decodes the same frames from the stream split in two at every offset", () => {
    const whole = reencode(decodeChunks([mixedStream]))
    assert.isTrue(whole.equals(mixedStream))
    for (let at = 0; at <= mixedStream.length; at++) {
      const frames = decodeChunks(cutAt(mixedStream, [at]))
      assert.strictEqual(frames.length, mixedFrames.length, `split at ${at}`)
      assert.isTrue(reencode(frames).equals(whole), `split at ${at}`)
    }
  })

  it("decodes the same frames from the stream fed one byte at a time", () => {
    const decoder = new FrameDecoder({ frameMax: 4096 })
    const frames: Array<Frame> = []
    for (let i = 0; i < mixedStream.length; i++) frames.push(...decoder.push(mixedStream.subarray(i, i + 1)))
    assert.deepStrictEqual(frames, mixedFrames as Array<Frame>)
    assert.isFalse(decoder.hasPartialFrame)
  })

  it("decodes the same frames from the stream cut into random chunks", () => {
    const offsets = fc.uniqueArray(fc.integer({ min: 0, max: mixedStream.length }), { maxLength: 40 })
    fc.assert(
      fc.property(offsets, (cuts) => {
        const frames = decodeChunks(cutAt(mixedStream, cuts.toSorted((a, b) => a - b)))
        assert.isTrue(reencode(frames).equals(mixedStream))
      }),
      { numRuns: 500 }
    )
  })

  it("reports a partial frame between chunks", () => {
    const decoder = new FrameDecoder()
    assert.isFalse(decoder.hasPartialFrame)
    assert.deepStrictEqual(decoder.push(HEARTBEAT_FRAME.subarray(0, 3)), [])
    assert.isTrue(decoder.hasPartialFrame)
    assert.deepStrictEqual(decoder.push(HEARTBEAT_FRAME.subarray(3)), [{ _tag: "HeartbeatFrame", channel: 0 }])
    assert.isFalse(decoder.hasPartialFrame)
  })

  it("hands out body payloads as views of a chunk that holds the whole frame", () => {
    const chunk = Buffer.from(frame(FrameType.body, 1, Uint8Array.of(1, 2, 3)))
    const [decoded] = new FrameDecoder().push(chunk)
    assert.strictEqual(decoded?._tag, "BodyFrame")
    if (decoded?._tag === "BodyFrame") {
      assert.strictEqual(decoded.payload.buffer, chunk.buffer)
      assert.deepStrictEqual(Array.from(decoded.payload), [1, 2, 3])
    }
  })

  it("accepts plain Uint8Array chunks", () => {
    assert.deepStrictEqual(new FrameDecoder().push(new Uint8Array(HEARTBEAT_FRAME)), [{
      _tag: "HeartbeatFrame",
      channel: 0
    }])
  })
})

/** A body frame of `total` bytes, header and frame-end included. */
const ofSize = (total: number): Uint8Array => frame(FrameType.body, 1, new Uint8Array(total - 8))

describe("frame_max", () => {
  it("accepts a frame of exactly frame_max and rejects one byte more with 501", () => {
    assert.strictEqual(new FrameDecoder({ frameMax: 5000 }).push(ofSize(5000)).length, 1)
    frameErrorOf(501, () => new FrameDecoder({ frameMax: 5000 }).push(ofSize(5001)))
  })

  it("rejects an oversized frame from its 7 header bytes, before allocating anything", () => {
    const header = hex("03 0001 fffffff0")
    const sizes = allocationsDuring(() => {
      frameErrorOf(501, () => new FrameDecoder({ frameMax: 131072 }).push(header))
    })
    assert.isTrue(sizes.every((size) => size < 1024), `allocated ${sizes.join(", ")}`)
  })

  it("rejects an oversized frame fed byte by byte as soon as its size is known", () => {
    const decoder = new FrameDecoder({ frameMax: 131072 })
    const header = hex("03 0001 fffffff0")
    const sizes = allocationsDuring(() => {
      for (let i = 0; i < 6; i++) assert.deepStrictEqual(decoder.push(header.subarray(i, i + 1)), [])
      frameErrorOf(501, () => decoder.push(header.subarray(6)))
    })
    assert.isTrue(sizes.every((size) => size < 1024), `allocated ${sizes.join(", ")}`)
  })

  it("uses a ceiling of 128 MiB when frame_max is 0", () => {
    frameErrorOf(501, () => new FrameDecoder({ frameMax: 0 }).push(hex("03 0001 08000000")))
    const decoder = new FrameDecoder({ frameMax: 0 })
    assert.deepStrictEqual(decoder.push(new Bytes().octet(3).short(1).long(FRAME_MAX_CEILING - 8).build()), [])
    assert.isTrue(decoder.hasPartialFrame)
  })

  it("raises a frame_max below the spec's minimum to 4096", () => {
    assert.strictEqual(new FrameDecoder({ frameMax: 100 }).push(ofSize(4096)).length, 1)
    frameErrorOf(501, () => new FrameDecoder({ frameMax: 100 }).push(ofSize(4097)))
  })

  it("applies a newly negotiated frame_max", () => {
    const decoder = new FrameDecoder({ frameMax: 0 })
    decoder.setFrameMax(4096)
    frameErrorOf(501, () => decoder.push(ofSize(4097)))
  })
})

describe("malformed frames", () => {
  it("rejects a frame-end octet other than 0xCE with 501, whole or split", () => {
    const bad = hex("08 0000 00000000 00")
    frameErrorOf(501, () => new FrameDecoder().push(bad))
    frameErrorOf(501, () => decodeChunks(cutAt(bad, [3, 7])))
    const afterGood = new Bytes().raw(HEARTBEAT_FRAME).raw(bad).build()
    frameErrorOf(501, () => new FrameDecoder().push(afterGood))
  })

  it("rejects an unknown frame type with 501", () => {
    for (const type of [0, 4, 5, 9, 0x41, 255]) {
      frameErrorOf(501, () => new FrameDecoder().push(frame(type, 0, new Uint8Array(0))))
      frameErrorOf(501, () => decodeChunks(cutAt(frame(type, 0, new Uint8Array(0)), [1, 2, 3, 4, 5, 6])))
    }
  })

  it("rejects the protocol header sent back as a frame with 501", () => {
    frameErrorOf(501, () => new FrameDecoder().push(hex("41 4d 51 50 00 00 09 01")))
  })

  it("rejects a heartbeat on a non-zero channel with 501, as the spec's heartbeat rules say", () => {
    frameErrorOf(501, () => new FrameDecoder().push(hex("08 0001 00000000 ce")))
  })

  it("rejects a heartbeat with a payload with 501", () => {
    frameErrorOf(501, () => new FrameDecoder().push(hex("08 0000 00000001 00 ce")))
  })

  it("rejects a content header or body on channel 0 with 505", () => {
    const header = encodeFrame({ _tag: "HeaderFrame", channel: 0, classId: 60, bodySize: 0, properties: {} })
    frameErrorOf(505, () => new FrameDecoder().push(header))
    frameErrorOf(505, () => new FrameDecoder().push(frame(FrameType.body, 0, Uint8Array.of(1))))
  })

  it("rejects a method frame with bytes after its arguments with 502", () => {
    assert.strictEqual(new FrameDecoder().push(methodWithExtra([])).length, 1)
    frameErrorOf(502, () => new FrameDecoder().push(methodWithExtra([0])))
  })

  it("rejects an unknown class or method with 502", () => {
    for (const [classId, methodId] of [[61, 10], [60, 41], [0, 0], [10, 12], [0xffff, 0xffff]] as const) {
      frameErrorOf(
        502,
        () => new FrameDecoder().push(frame(FrameType.method, 1, new Bytes().short(classId).short(methodId).build()))
      )
    }
  })

  it("rejects a method frame cut short inside its arguments with 501", () => {
    const full = encodeFrame({ _tag: "MethodFrame", channel: 1, method: Methods.basicAck({ deliveryTag: 5 }) })
    frameErrorOf(501, () => new FrameDecoder().push(frame(FrameType.method, 1, full.subarray(7, -2))))
    frameErrorOf(501, () => new FrameDecoder().push(frame(FrameType.method, 1, Uint8Array.of(0, 60))))
  })

  it("rejects a method frame whose delivery tag exceeds 2^53 with 502", () => {
    frameErrorOf(502, () => new FrameDecoder().push(hex("01 0001 0000000d 003c 0050 0020000000000000 00 ce")))
  })

  it("keeps throwing the same error once it has failed", () => {
    const decoder = new FrameDecoder()
    const first = frameErrorOf(501, () => decoder.push(hex("08 0001 00000000 ce")))
    const again = frameErrorOf(501, () => decoder.push(HEARTBEAT_FRAME))
    assert.strictEqual(again, first)
    assert.strictEqual(frameErrorOf(501, () => decoder.push(new Uint8Array(0))), first)
  })
})

describe("memory", () => {
  it("keeps no reference to a chunk once its frames are handed out", async () => {
    V8.setFlagsFromString("--expose-gc")
    const collectGarbage = Vm.runInNewContext("gc") as () => void
    const decoder = new FrameDecoder()
    const chunkBuffer = (() => {
      const acks = [1, 2, 3].map((deliveryTag) =>
        encodeFrame({ _tag: "MethodFrame", channel: 1, method: Methods.basicAck({ deliveryTag }) })
      )
      const chunk = new Uint8Array(new ArrayBuffer(64 * 1024), 0, acks.reduce((n, a) => n + a.length, 0))
      let at = 0
      for (const ack of acks) {
        chunk.set(ack, at)
        at += ack.length
      }
      assert.deepStrictEqual(decoder.push(chunk).map((f) => f._tag), ["MethodFrame", "MethodFrame", "MethodFrame"])
      return new WeakRef(chunk.buffer)
    })()
    // A WeakRef's target stays alive until the job that made or read it ends: collect in later ones.
    for (let round = 0; round < 3; round++) {
      await new Promise((resolve) => setImmediate(resolve))
      collectGarbage()
    }
    await new Promise((resolve) => setImmediate(resolve))
    assert.strictEqual(chunkBuffer.deref(), undefined)
    assert.strictEqual(decoder.push(HEARTBEAT_FRAME).length, 1)
  })
})

describe("the heartbeat frame", () => {
  it("decodes 08 00 00 00 00 00 00 ce", () => {
    assert.strictEqual(toHex(HEARTBEAT_FRAME), "08 00 00 00 00 00 00 ce")
    assert.deepStrictEqual(new FrameDecoder().push(hex("08 0000 00000000 ce")), [{
      _tag: "HeartbeatFrame",
      channel: 0
    }])
  })
})

/**
 * Feeds `chunks` through a decoder and per-channel assemblers. Anything but an `AmqpFrameError` is
 * a bug, and so is the decoder's catch-all "undecodable input", which wraps exceptions it did not
 * expect.
 */
const survives = (chunks: Iterable<Uint8Array>, frameMax = 4096): void => {
  const decoder = new FrameDecoder({ frameMax })
  const assemblers = new Map<number, CommandAssembler>()
  try {
    for (const chunk of chunks) assemble(decoder.push(chunk), assemblers)
  } catch (error) {
    if (!(error instanceof AmqpFrameError)) throw error
    assert.include([501, 502, 503, 505], error.replyCode)
    assert.notMatch(error.message, /^undecodable input/)
  }
}

const cuts = (length: number) =>
  fc.uniqueArray(fc.integer({ min: 0, max: length }), { maxLength: 6 }).map((at) => at.toSorted((a, b) => a - b))

/** Something close to a frame: a known or random type, a size that may or may not match, any payload. */
const frameLike = fc
  .record({
    type: fc.oneof(fc.constantFrom(1, 2, 3, 8), fc.integer({ min: 0, max: 255 })),
    channel: fc.oneof(fc.constantFrom(0, 1, 2), fc.integer({ min: 0, max: 0xffff })),
    payload: fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.tuple(
        fc.constantFrom(0x003c, 0x000a, 0x0014, 0x0032),
        fc.integer({ min: 0, max: 130 }),
        fc.uint8Array({
          maxLength: 64
        })
      ).map(([classId, methodId, rest]) => new Bytes().short(classId).short(methodId).raw(rest).build())
    ),
    sizeDelta: fc.oneof(fc.constant(0), fc.integer({ min: -3, max: 3 })),
    end: fc.oneof(fc.constant(0xce), fc.integer({ min: 0, max: 255 }))
  })
  .map(({ channel, end, payload, sizeDelta, type }) =>
    new Bytes().octet(type).short(channel).long(Math.max(0, payload.length + sizeDelta)).raw(payload).octet(end).build()
  )

/** One piece of a valid stream and the commands it carries: a heartbeat, a method, or a whole message. */
const item: fc.Arbitrary<readonly [Uint8Array, number]> = fc.oneof(
  fc.constant([HEARTBEAT_FRAME, 0] as const),
  // A connection method on channel 0 only, where it belongs.
  fc.tuple(Arbitraries.method.filter(([m]) => !m.content), fc.integer({ min: 0, max: 3 })).map((
    [[m, values], channel]
  ) => [encodeMethod(m.classId === 10 ? 0 : channel, methodOf(m, values)), 1] as const),
  fc.tuple(Arbitraries.properties, fc.integer({ min: 0, max: 9000 }), fc.integer({ min: 1, max: 3 })).map((
    [{ props }, size, channel]
  ) =>
    [concat(pieces(new MessageEncoder({ frameMax: 4096 }).message(channel, publish, props, pattern(size)))), 1] as const
  )
)

const validStream = fc.array(item, { minLength: 1, maxLength: 6 }).map((items) =>
  [concat(items.map(([bytes]) => bytes)), items.reduce((n, [, commands]) => n + commands, 0)] as const
)

/** Where a mutation strikes: anywhere, or within the first 32 bytes of a frame, where the sizes are. */
interface Position {
  readonly nearFrame: boolean
  readonly index: number
  readonly offset: number
}

type Mutation =
  | { readonly op: "flip"; readonly at: Position; readonly bit: number }
  | { readonly op: "insert"; readonly at: Position; readonly byte: number }
  | { readonly op: "delete"; readonly at: Position }
  | { readonly op: "truncate"; readonly at: Position }
  | { readonly op: "overwrite"; readonly at: Position; readonly bytes: Uint8Array }

const position: fc.Arbitrary<Position> = fc.record({ nearFrame: fc.boolean(), index: fc.nat(), offset: fc.nat() })

/** Random bytes, or the extremes of the integer fields they may land on. */
const overwriteWith = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 8 }),
  fc.constantFrom(0x00, 0x7f, 0x80, 0xff).chain((b) =>
    fc.integer({ min: 1, max: 8 }).map((n) => new Uint8Array(n).fill(b))
  )
)

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant("flip" as const), at: position, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant("insert" as const), at: position, byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant("delete" as const), at: position }),
  fc.record({ op: fc.constant("truncate" as const), at: position }),
  fc.record({ op: fc.constant("overwrite" as const), at: position, bytes: overwriteWith })
)

/** The offsets at which the frames of a valid stream begin. */
const frameStarts = (bytes: Uint8Array): Array<number> => {
  const starts: Array<number> = []
  for (let at = 0; at + 7 <= bytes.length; at += 8 + Buffer.from(bytes.buffer, bytes.byteOffset).readUInt32BE(at + 3)) {
    starts.push(at)
  }
  return starts
}

const mutate = (bytes: Uint8Array, starts: ReadonlyArray<number>, m: Mutation): Uint8Array => {
  if (bytes.length === 0) return bytes
  const at = m.at.nearFrame && starts.length > 0
    ? Math.min(starts[m.at.index % starts.length]! + (m.at.offset % 32), bytes.length - 1)
    : m.at.offset % bytes.length
  switch (m.op) {
    case "flip": {
      const out = Uint8Array.from(bytes)
      out[at] = out[at]! ^ (1 << m.bit)
      return out
    }
    case "insert":
      return concat([bytes.subarray(0, at), Uint8Array.of(m.byte), bytes.subarray(at)])
    case "delete":
      return concat([bytes.subarray(0, at), bytes.subarray(at + 1)])
    case "truncate":
      return bytes.subarray(0, at)
    case "overwrite": {
      const out = Uint8Array.from(bytes)
      out.set(m.bytes.subarray(0, out.length - at), at)
      return out
    }
  }
}

/** Checks `survives` on streams from `stream`, each cut into a few random chunks. */
const assertSurvives = (stream: fc.Arbitrary<Uint8Array>, numRuns: number): void =>
  fc.assert(
    fc.property(
      stream.chain((bytes) => fc.tuple(fc.constant(bytes), cuts(bytes.length))),
      ([bytes, at]) => survives(cutAt(bytes, at))
    ),
    { numRuns }
  )

describe("hostile input", () => {
  it("ends random bytes in frames or an AmqpFrameError, nothing else", () => {
    assertSurvives(fc.uint8Array({ maxLength: 2048 }), 1000)
  })

  it("ends random frame-like sequences in frames or an AmqpFrameError, nothing else", () => {
    assertSurvives(fc.array(frameLike, { minLength: 1, maxLength: 8 }).map(concat), 3000)
  })

  it("ends mutated valid streams in frames or an AmqpFrameError, nothing else", () => {
    const mutations = fc.array(mutation, { minLength: 1, maxLength: 4 })
    const mutated = fc.tuple(validStream, mutations).map(([[bytes], ms]) =>
      ms.reduce((out, m) => mutate(out, frameStarts(bytes), m), bytes)
    )
    assertSurvives(mutated, 2000)
  })

  it("decodes unmutated valid streams into commands", () => {
    fc.assert(
      fc.property(validStream, ([bytes, commands]) => {
        assert.strictEqual(assemble(decodeChunks([bytes])).length, commands)
      }),
      { numRuns: 300 }
    )
  })
})
