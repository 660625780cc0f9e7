import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { Typed } from "../src/FieldTable.ts"
import { encodeFrame, type Frame, FrameType } from "../src/Frame.ts"
import { FrameDecoder } from "../src/FrameDecoder.ts"
import type { BasicProperties } from "../src/Properties.ts"
import * as Arbitraries from "./fixtures/Arbitraries.ts"
import { encodeErrorOf, frameErrorOf } from "./fixtures/Errors.ts"
import { argumentsTable, tableDecoded, tableInput } from "./fixtures/Fields.ts"
import { type ArgValue, basicProperties, writeArg } from "./fixtures/Spec.ts"
import { Bytes, type Entries, frame, hex, toHex } from "./fixtures/Wire.ts"

const BASIC = 60

/** A sample value for each property, by the property's type. */
const sample = (field: string, type: string): ArgValue =>
  type === "table" ? argumentsTable : type === "octet" ? 9 : type === "timestamp" ? 1700000000 : `${field}-\u00e9`

/** The content header payload with the given properties present, laid out from the spec's property list. */
const headerPayload = (bodySize: number, present: Readonly<Record<string, ArgValue>>): Uint8Array => {
  const bytes = new Bytes().short(BASIC).short(0).longlong(bodySize)
  let flags = 0
  basicProperties.forEach((p, i) => {
    if (p.field in present) flags += 2 ** (15 - i)
  })
  bytes.short(flags)
  for (const p of basicProperties) if (p.field in present) writeArg(bytes, p.type, present[p.field]!)
  return bytes.build()
}

/** The `BasicProperties` a caller would pass for `present` (tables given as entries). */
const propertiesOf = (present: Readonly<Record<string, ArgValue>>, table = tableInput): BasicProperties =>
  Object.fromEntries(
    Object.entries(present).map(([k, v]) => [k, k === "headers" ? table(v as Entries) : v])
  ) as BasicProperties

const headerFrame = (channel: number, bodySize: number, properties: BasicProperties): Frame => ({
  _tag: "HeaderFrame",
  channel,
  classId: BASIC,
  bodySize,
  properties
})

const decodeAll = (bytes: Uint8Array, typedHeaders = false): Array<Frame> =>
  new FrameDecoder({ frameMax: 0, typedHeaders }).push(bytes)

describe("content header properties", () => {
  it("lists the 14 basic properties in the spec", () => {
    assert.deepStrictEqual(basicProperties.map((p) => p.field), [
      "contentType",
      "contentEncoding",
      "headers",
      "deliveryMode",
      "priority",
      "correlationId",
      "replyTo",
      "expiration",
      "messageId",
      "timestamp",
      "type",
      "userId",
      "appId",
      "clusterId"
    ])
  })

  it.each(basicProperties.map((p, i) => [p.field, p.type, i] as const))(
    "gives %s (%s) flag bit 15 - %i",
    (field, type, i) => {
      const present = { [field]: sample(field, type) }
      const expected = frame(FrameType.header, 3, headerPayload(1234, present))
      assert.strictEqual(expected[7 + 12]! * 256 + expected[7 + 13]!, 2 ** (15 - i))
      assert.strictEqual(toHex(encodeFrame(headerFrame(3, 1234, propertiesOf(present)))), toHex(expected))
      assert.deepStrictEqual(decodeAll(expected), [headerFrame(3, 1234, propertiesOf(present, tableDecoded))])
    }
  )

  it("encodes all 14 together in flag order", () => {
    const present = Object.fromEntries(basicProperties.map((p) => [p.field, sample(p.field, p.type)]))
    const expected = frame(FrameType.header, 1, headerPayload(2 ** 40, present))
    assert.strictEqual(toHex(expected.subarray(19, 21)), "ff fc")
    assert.strictEqual(toHex(encodeFrame(headerFrame(1, 2 ** 40, propertiesOf(present)))), toHex(expected))
    assert.deepStrictEqual(decodeAll(expected), [headerFrame(1, 2 ** 40, propertiesOf(present, tableDecoded))])
  })

  it("encodes a typical header, written out by hand", () => {
    const bytes = hex("02 0001 0000001a 003c 0000 0000000000000005 9000 0a 746578742f706c61696e 02 ce")
    const typical = headerFrame(1, 5, { contentType: "text/plain", deliveryMode: 2 })
    assert.strictEqual(toHex(encodeFrame(typical)), toHex(bytes))
    assert.deepStrictEqual(decodeAll(bytes), [typical])
  })

  it("encodes no properties as a zero flag word and decodes them as an empty object", () => {
    const bytes = hex("02 0001 0000000e 003c 0000 0000000000000000 0000 ce")
    assert.strictEqual(toHex(encodeFrame(headerFrame(1, 0, {}))), toHex(bytes))
    assert.deepStrictEqual(decodeAll(bytes), [headerFrame(1, 0, {})])
  })

  it("leaves out properties set to undefined", () => {
    const properties = { contentType: undefined, priority: 1 } as unknown as BasicProperties
    assert.strictEqual(
      toHex(encodeFrame(headerFrame(1, 0, properties))),
      toHex(frame(FrameType.header, 1, headerPayload(0, { priority: 1 })))
    )
  })

  it("decodes headers with their types kept when the decoder is asked to", () => {
    const bytes = frame(FrameType.header, 1, headerPayload(0, { headers: [["n", ["b", -1]]] }))
    const [decoded] = decodeAll(bytes, true)
    assert.deepStrictEqual(decoded, headerFrame(1, 0, { headers: { n: new Typed("b", -1) } }))
  })
})

describe("property values out of range", () => {
  it("refuses octets and timestamps that do not fit their type", () => {
    const refused: ReadonlyArray<BasicProperties> = [
      { deliveryMode: 256 },
      { priority: -1 },
      { priority: 1.5 },
      { timestamp: -1 },
      { timestamp: 2 ** 53 },
      { timestamp: 1.5 },
      { timestamp: -1n },
      { timestamp: 2n ** 64n },
      { contentType: "t".repeat(256) }
    ]
    for (const properties of refused) encodeErrorOf(() => encodeFrame(headerFrame(1, 0, properties)))
  })
})

/** A content header with only a timestamp, its 64 bits given as two 32-bit halves. */
const timestampHeader = (high: number, low: number) =>
  frame(FrameType.header, 1, new Bytes().short(BASIC).short(0).longlong(0).short(0x0040).long(high).long(low).build())

describe("timestamps past 2^53", () => {
  // Another client may send any 64-bit value (nanoseconds since the epoch, say).
  const wire = timestampHeader

  it("decodes a timestamp up to 2^53 - 1 as a number and one past it as the exact bigint", () => {
    assert.deepStrictEqual(decodeAll(wire(0x1fffff, 0xffffffff)), [
      headerFrame(1, 0, { timestamp: Number.MAX_SAFE_INTEGER })
    ])
    assert.deepStrictEqual(decodeAll(wire(0x200000, 0)), [headerFrame(1, 0, { timestamp: 2n ** 53n })])
    assert.deepStrictEqual(decodeAll(wire(0xffffffff, 0xfffffffe)), [
      headerFrame(1, 0, { timestamp: 2n ** 64n - 2n })
    ])
  })

  it("encodes a bigint timestamp as the same 8 bytes", () => {
    const bytes = wire(0x10000000, 0x00000007)
    assert.strictEqual(toHex(encodeFrame(headerFrame(1, 0, { timestamp: 2n ** 60n + 7n }))), toHex(bytes))
    assert.strictEqual(toHex(encodeFrame(headerFrame(1, 0, { timestamp: 5n }))), toHex(wire(0, 5)))
  })
})

describe("body size", () => {
  it("carries body sizes up to 2^53 - 1", () => {
    const bytes = frame(FrameType.header, 1, headerPayload(Number.MAX_SAFE_INTEGER, {}))
    assert.strictEqual(toHex(bytes.subarray(11, 19)), "00 1f ff ff ff ff ff ff")
    assert.strictEqual(toHex(encodeFrame(headerFrame(1, Number.MAX_SAFE_INTEGER, {}))), toHex(bytes))
    assert.deepStrictEqual(decodeAll(bytes), [headerFrame(1, Number.MAX_SAFE_INTEGER, {})])
  })

  it("refuses to encode a body size that is not a safe unsigned integer", () => {
    for (const size of [-1, 1.5, 2 ** 53, Number.NaN]) encodeErrorOf(() => encodeFrame(headerFrame(1, size, {})))
  })

  it("rejects a body size of 2^53 or more with 502", () => {
    frameErrorOf(502, () => decodeAll(hex("02 0001 0000000e 003c 0000 0020000000000000 0000 ce")))
  })
})

describe("malformed content headers", () => {
  it("rejects a non-zero weight with 502", () => {
    frameErrorOf(502, () => decodeAll(hex("02 0001 0000000e 003c 0001 0000000000000000 0000 ce")))
  })

  it("rejects the undefined flag bit 1 with 502, with or without a continuation", () => {
    frameErrorOf(502, () => decodeAll(hex("02 0001 0000000e 003c 0000 0000000000000000 0002 ce")))
    frameErrorOf(502, () => decodeAll(hex("02 0001 00000010 003c 0000 0000000000000000 0003 0000 ce")))
  })

  it("reads past a continuation flag word, and rejects properties flagged in it with 502", () => {
    assert.deepStrictEqual(
      decodeAll(hex("02 0001 00000013 003c 0000 0000000000000000 8001 0000 02 6869 ce")),
      [headerFrame(1, 0, { contentType: "hi" })]
    )
    frameErrorOf(502, () => decodeAll(hex("02 0001 00000010 003c 0000 0000000000000000 0001 8000 ce")))
  })

  it("rejects bytes after the last property with 502", () => {
    frameErrorOf(502, () => decodeAll(hex("02 0001 0000000f 003c 0000 0000000000000000 0000 00 ce")))
  })

  it("rejects a property cut short by the frame's end with 501", () => {
    frameErrorOf(501, () => decodeAll(hex("02 0001 00000011 003c 0000 0000000000000000 8000 05 6869 ce")))
  })
})

describe("random properties", () => {
  it("encode to the spec's layout and decode back", () => {
    fc.assert(
      fc.property(Arbitraries.properties, fc.maxSafeNat(), ({ headers, props }, bodySize) => {
        const present: Record<string, ArgValue> = { ...props } as Record<string, ArgValue>
        if (headers !== undefined) present.headers = headers
        const expected = frame(FrameType.header, 7, headerPayload(bodySize, present))
        assert.strictEqual(toHex(encodeFrame(headerFrame(7, bodySize, props))), toHex(expected))
        assert.deepStrictEqual(decodeAll(expected), [headerFrame(7, bodySize, propertiesOf(present, tableDecoded))])
      }),
      { numRuns: 1000 }
    )
  })
})
