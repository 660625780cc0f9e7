import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { encodeMethod, FrameType } from "../src/Frame.ts"
import { FrameDecoder } from "../src/FrameDecoder.ts"
import { type Method, methodInfo, methodName, Methods } from "../src/generated/Methods.ts"
import * as Arbitraries from "./fixtures/Arbitraries.ts"
import { encodeErrorOf } from "./fixtures/Errors.ts"
import { argumentsTable } from "./fixtures/Fields.ts"
import { type ArgValue, decodedMethodOf, methodOf, methods, type MethodSpec, payloadOf } from "./fixtures/Spec.ts"
import { frame, hex, toHex } from "./fixtures/Wire.ts"

const decodeOne = (bytes: Uint8Array): Method => {
  const frames = new FrameDecoder({ frameMax: 0 }).push(bytes)
  assert.strictEqual(frames.length, 1)
  const [only] = frames
  assert.strictEqual(only?._tag, "MethodFrame")
  return only?._tag === "MethodFrame" ? only.method : assert.fail("not a method frame")
}

/** A shortstr of exactly 255 UTF-8 bytes with a multi-byte character in it. */
const longestShortstr = (name: string): string => {
  const head = `${name}:\u20ac`
  return head + "y".repeat(255 - new TextEncoder().encode(head).length)
}

/**
 * Argument values that differ from the spec's defaults and from each other: the high bit set in
 * every integer (variant 0), strings with multi-byte characters up to the 255-byte limit, bits in an
 * alternating pattern that variant 1 inverts, so that every bit is seen both set and clear.
 */
const distinctive = (method: MethodSpec, variant: 0 | 1): Array<ArgValue> => {
  let bit = 0
  return method.args.map((arg, i): ArgValue => {
    switch (arg.type) {
      case "bit":
        return (bit++ + variant) % 2 === 0
      case "octet":
        return variant === 0 ? 0xa0 + i : 0x01 + i
      case "short":
        return variant === 0 ? 0xbeef - i : 0x0102 + i
      case "long":
        return variant === 0 ? 0xfedcba98 - i : 0x01020304 + i
      case "longlong":
      case "timestamp":
        return variant === 0 ? Number.MAX_SAFE_INTEGER - i : 0x01020304050607 + i
      case "shortstr":
        return variant === 0 ? `${method.tag}/${arg.field} \u00e9\u2713` : longestShortstr(arg.field)
      case "longstr":
        return variant === 0 ? `${method.tag} ${arg.field} \u2713` : "z".repeat(70_000)
      case "table":
        return variant === 0 ? argumentsTable : []
    }
  })
}

const channelFor = (method: MethodSpec): number => (method.classId === 10 ? 0 : 0xbeef)

describe("the spec's methods", () => {
  it("covers all 66 methods of the 8 classes with the spec's ids", () => {
    assert.strictEqual(methods.length, 66)
    assert.deepStrictEqual(Object.keys(methodInfo).toSorted(), methods.map((m) => m.tag).toSorted())
    for (const m of methods) {
      const info = methodInfo[m.tag as keyof typeof methodInfo]
      assert.deepStrictEqual(
        [info.classId, info.methodId, info.synchronous, info.content],
        [m.classId, m.methodId, m.synchronous, m.content],
        m.tag
      )
      assert.strictEqual(methodName(m.classId, m.methodId), m.tag)
    }
  })

  it.each(methods.map((m) => [m.tag, m] as const))("encodes %s to the spec's layout and decodes it back", (_, m) => {
    for (const variant of [0, 1] as const) {
      const values = distinctive(m, variant)
      const channel = channelFor(m)
      const expected = frame(FrameType.method, channel, payloadOf(m, values))
      assert.strictEqual(toHex(encodeMethod(channel, methodOf(m, values))), toHex(expected), `variant ${variant}`)
      assert.deepStrictEqual(decodeOne(expected), decodedMethodOf(m, values), `variant ${variant}`)
    }
  })
})

describe("arguments out of range", () => {
  const limits = { octet: 0xff, short: 0xffff, long: 0xffffffff, longlong: Number.MAX_SAFE_INTEGER } as const
  const integerArgs = methods.flatMap((m) =>
    m.args.flatMap((arg, i) => (arg.type in limits ? [[`${m.tag} ${arg.field}`, m, i] as const] : []))
  )

  it.each(integerArgs)("refuses %s values that do not fit its type", (_, m, i) => {
    const max = limits[m.args[i]!.type as keyof typeof limits]
    for (const bad of [-1, max + 1, 1.5, Number.NaN]) {
      const values = distinctive(m, 0)
      values[i] = bad
      encodeErrorOf(() => encodeMethod(1, methodOf(m, values)))
    }
    const values = distinctive(m, 0)
    values[i] = max
    assert.strictEqual(
      toHex(encodeMethod(1, methodOf(m, values))),
      toHex(frame(FrameType.method, 1, payloadOf(m, values)))
    )
  })

  it("refuses a shortstr argument over 255 bytes", () => {
    encodeErrorOf(() => encodeMethod(1, Methods.basicPublish({ routingKey: "\u00e9".repeat(128) })))
    encodeErrorOf(() => encodeMethod(1, Methods.basicPublish({ routingKey: "r".repeat(256) })))
  })
})

describe("well-known frames, written out by hand", () => {
  it("encodes connection.tune-ok", () => {
    const method = Methods.connectionTuneOk({ channelMax: 2047, frameMax: 131072, heartbeat: 60 })
    const bytes = hex("01 0000 0000000c 000a 001f 07ff 00020000 003c ce")
    assert.strictEqual(toHex(encodeMethod(0, method)), toHex(bytes))
    assert.deepStrictEqual(decodeOne(bytes), method)
  })

  it("encodes basic.publish", () => {
    const method = Methods.basicPublish({ exchange: "ex", routingKey: "rk", mandatory: true })
    const bytes = hex("01 0001 0000000d 003c 0028 0000 02 6578 02 726b 01 ce")
    assert.strictEqual(toHex(encodeMethod(1, method)), toHex(bytes))
    assert.deepStrictEqual(decodeOne(bytes), method)
  })

  it("encodes basic.ack with a 64-bit delivery tag", () => {
    const method = Methods.basicAck({ deliveryTag: 0x0102030405, multiple: true })
    const bytes = hex("01 0005 0000000d 003c 0050 0000000102030405 01 ce")
    assert.strictEqual(toHex(encodeMethod(5, method)), toHex(bytes))
    assert.deepStrictEqual(decodeOne(bytes), method)
  })

  it("encodes queue.declare with an arguments table", () => {
    const method = Methods.queueDeclare({ queue: "q", durable: true, arguments: { "x-queue-type": "quorum" } })
    const bytes = hex(`
      01 0001 00000025
      0032 000a 0000 01 71 02
      00000018 0c 782d71756575652d74797065 53 00000006 71756f72756d
      ce`)
    assert.strictEqual(toHex(encodeMethod(1, method)), toHex(bytes))
    assert.deepStrictEqual(decodeOne(bytes), method)
  })

  it("decodes basic.deliver", () => {
    const bytes = hex("01 0002 00000016 003c 003c 04 63746167 0000000000000001 00 00 02 726b ce")
    assert.deepStrictEqual(
      decodeOne(bytes),
      Methods.basicDeliver({ consumerTag: "ctag", deliveryTag: 1, redelivered: false, exchange: "", routingKey: "rk" })
    )
  })

  it("packs queue.delete's three bits into one octet, first bit lowest", () => {
    const method = Methods.queueDelete({ queue: "", ifUnused: false, ifEmpty: true, nowait: true })
    assert.strictEqual(toHex(encodeMethod(1, method)), toHex(hex("01 0001 00000008 0032 0028 0000 00 06 ce")))
  })
})

describe("random methods", () => {
  it("encode to the spec's layout and decode back", () => {
    fc.assert(
      fc.property(Arbitraries.method, fc.integer({ min: 0, max: 0xffff }), ([m, values], channel) => {
        const expected = frame(FrameType.method, channel, payloadOf(m, values))
        assert.strictEqual(toHex(encodeMethod(channel, methodOf(m, values))), toHex(expected))
        assert.deepStrictEqual(decodeOne(expected), decodedMethodOf(m, values))
      }),
      { numRuns: 2000 }
    )
  })
})
