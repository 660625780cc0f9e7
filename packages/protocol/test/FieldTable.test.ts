import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import {
  Decimal,
  decodeTable,
  encodeTable,
  type FieldTable,
  type FieldValue,
  maxDepth,
  Typed
} from "../src/FieldTable.ts"
import * as Arbitraries from "./fixtures/Arbitraries.ts"
import { encodeErrorOf, frameErrorOf } from "./fixtures/Errors.ts"
import { everyType, tableDecoded, tableInput, tableTyped, wireOrder } from "./fixtures/Fields.ts"
import { Bytes, type Entries, type Field, hex, toHex } from "./fixtures/Wire.ts"

const tableBytes = (entries: Entries): Uint8Array => new Bytes().table(entries).build()

/** The bytes of `{ v: value }`, after the 4-byte table size. */
const encodedValue = (value: FieldValue): string => toHex(encodeTable({ v: value }).subarray(4 + 2))

const expectValue = (field: Field): string => toHex(new Bytes().field(field).build())

/** A table of one key "v" holding a 'T', built by hand: size, key length, key, type, int64. */
const timestampTable = (seconds: bigint): Uint8Array => {
  const bytes = Buffer.alloc(4 + 1 + 1 + 1 + 8)
  bytes.writeUInt32BE(11, 0)
  bytes.write("\x01vT", 4, "latin1")
  bytes.writeBigInt64BE(seconds, 7)
  return bytes
}

describe("decoding", () => {
  it("decodes a 64-bit integer as a number within 2^53, as a bigint beyond it, and as a bigint when typed", () => {
    const entries: Entries = [
      ["count", ["l", 3n]],
      ["safe", ["l", 2n ** 53n - 1n]],
      ["negative", ["l", -(2n ** 53n) + 1n]],
      ["beyond", ["l", 2n ** 53n]],
      ["below", ["l", -(2n ** 53n)]]
    ]
    const decoded = decodeTable(tableBytes(entries))
    assert.deepStrictEqual({ ...decoded }, {
      count: 3,
      safe: Number.MAX_SAFE_INTEGER,
      negative: Number.MIN_SAFE_INTEGER,
      beyond: 2n ** 53n,
      below: -(2n ** 53n)
    })
    assert.strictEqual(JSON.stringify({ count: decoded.count }), `{"count":3}`)
    assert.deepStrictEqual(decodeTable(tableBytes(entries), { typed: true }).count, new Typed("l", 3n))
  })

  it("decodes every field type, nested", () => {
    const decoded = decodeTable(tableBytes(everyType))
    assert.deepStrictEqual(decoded, tableDecoded(everyType))
    assert.strictEqual(decoded.int64, -(2n ** 63n))
    assert.instanceOf(decoded.decimal, Decimal)
    assert.instanceOf(decoded.timestamp, Date)
    assert.strictEqual((decoded.timestamp as Date).toISOString(), "2023-11-14T22:13:20.000Z")
    assert.instanceOf(decoded.bytes, Uint8Array)
    assert.isNull(decoded.void)
    assert.isTrue(Array.isArray(decoded.array))
  })

  it("decodes with the field types kept when asked", () => {
    const typed = decodeTable(tableBytes(everyType), { typed: true })
    assert.deepStrictEqual(typed, tableTyped(everyType))
    assert.instanceOf(typed.int8, Typed)
    assert.strictEqual((typed.int8 as Typed).type, "b")
  })

  it("encodes a typed decoding back to the very same bytes", () => {
    const bytes = tableBytes(everyType)
    assert.strictEqual(toHex(encodeTable(decodeTable(bytes, { typed: true }))), toHex(bytes))
  })

  it("decodes a table out of a view with a byte offset", () => {
    const bytes = tableBytes([["k", ["S", "v"]]])
    const padded = new Uint8Array(bytes.length + 3)
    padded.set(bytes, 3)
    assert.deepStrictEqual(decodeTable(padded.subarray(3)), { k: "v" })
  })

  it("copies byte arrays out of the input", () => {
    const bytes = tableBytes([["raw", ["x", Uint8Array.of(1, 2, 3)]]])
    const decoded = decodeTable(bytes)
    bytes.fill(0)
    assert.deepStrictEqual(Array.from(decoded.raw as Uint8Array), [1, 2, 3])
  })

  it("keeps NaN and infinities of doubles and floats", () => {
    const decoded = decodeTable(
      tableBytes([["nan", ["d", NaN]], ["inf", ["d", -Infinity]], ["fnan", ["f", NaN]], ["finf", ["f", Infinity]]])
    )
    assert.isTrue(Number.isNaN(decoded.nan))
    assert.strictEqual(decoded.inf, -Infinity)
    assert.isTrue(Number.isNaN(decoded.fnan))
    assert.strictEqual(decoded.finf, Infinity)
  })

  it("decodes thousands of distinct keys right, the first time and again", () => {
    const entries: Entries = Array.from({ length: 1500 }, (_, i) => [`k\u00e9${i.toString(36)}`, ["I", i]] as const)
    const bytes = tableBytes(entries)
    for (let round = 0; round < 2; round++) assert.deepStrictEqual(decodeTable(bytes), tableDecoded(entries))
    const long = "k".repeat(200)
    assert.deepStrictEqual(decodeTable(tableBytes([[long, ["V", null]]])), { [long]: null })
  })

  it("decodes keys that differ only between the bytes the string cache samples, each time right", () => {
    // Nine bytes: the cache samples offsets 0, 2, 4, 6 and 8, so these share a cache slot.
    const keys = ["a1b2c3d4e", "a9b8c7d6e", "a1b2c3d4e", "a0b0c0d0e", "a9b8c7d6e", "", "a0b0c0d0e"]
    for (let round = 0; round < 3; round++) {
      const decoded = keys.map((key, i) => Object.keys(decodeTable(tableBytes([[key, ["I", i]]])))[0])
      assert.deepStrictEqual(decoded, keys)
    }
    const together = decodeTable(tableBytes(keys.map((key, i) => [key, ["I", i]] as const)))
    assert.deepStrictEqual(together, { "a1b2c3d4e": 2, "a9b8c7d6e": 4, "a0b0c0d0e": 6, "": 5 })
  })

  it("keeps a timestamp beyond a Date's range exact, as Typed('T', seconds), and encodes it back", () => {
    const nanoseconds = 1_700_000_000_000_000_000n
    for (const seconds of [nanoseconds, -nanoseconds, 8_640_000_000_001n, 2n ** 63n - 1n, -(2n ** 63n)]) {
      const bytes = timestampTable(seconds)
      assert.deepStrictEqual(decodeTable(bytes), { v: new Typed("T", seconds) })
      assert.deepStrictEqual(decodeTable(bytes, { typed: true }), { v: new Typed("T", seconds) })
      assert.deepStrictEqual(encodeTable(decodeTable(bytes)), bytes)
    }
    // The edges of a Date's range are still Dates.
    const latest = timestampTable(8_640_000_000_000n)
    assert.deepStrictEqual(decodeTable(latest), { v: new Date(8_640_000_000_000_000) })
    assert.deepStrictEqual(decodeTable(timestampTable(-8_640_000_000_000n)), { v: new Date(-8_640_000_000_000_000) })
    encodeErrorOf(() => encodeTable({ v: new Typed("T", 2n ** 63n) }))
  })

  it("lets the last of two equal keys win", () => {
    assert.deepStrictEqual(decodeTable(tableBytes([["k", ["I", 1]], ["k", ["I", 2]]])), { k: 2 })
  })
})

describe("keys that name prototype machinery", () => {
  const hostile: Entries = [
    ["__proto__", ["F", [["polluted", ["t", true]]]]],
    ["constructor", ["F", [["prototype", ["F", [["polluted", ["t", true]]]]]]]],
    ["prototype", ["S", "plain"]],
    ["nested", ["F", [["__proto__", ["F", [["polluted", ["t", true]]]]]]]]
  ]

  it("decodes them as plain own data without touching any prototype", () => {
    const before = Object.getOwnPropertyNames(Object.prototype).toSorted()
    const decoded = decodeTable(tableBytes(hostile)) as Record<string, unknown>
    assert.isNull(Object.getPrototypeOf(decoded))
    assert.deepStrictEqual(Object.keys(decoded), ["__proto__", "constructor", "prototype", "nested"])
    const proto = Object.getOwnPropertyDescriptor(decoded, "__proto__")?.value as Record<string, unknown>
    assert.strictEqual(proto.polluted, true)
    assert.isNull(Object.getPrototypeOf(proto))
    assert.isUndefined((decoded as { polluted?: unknown }).polluted)
    const nested = decoded.nested as Record<string, unknown>
    assert.isNull(Object.getPrototypeOf(nested))
    assert.deepStrictEqual(Object.keys(nested), ["__proto__"])
    assert.isUndefined(({} as { polluted?: unknown }).polluted)
    assert.deepStrictEqual(Object.getOwnPropertyNames(Object.prototype).toSorted(), before)
  })

  it("encodes them back as keys", () => {
    const bytes = tableBytes(hostile)
    assert.strictEqual(toHex(encodeTable(decodeTable(bytes))), toHex(bytes))
    const parsed = JSON.parse("{\"__proto__\": {\"polluted\": true}}") as FieldTable
    assert.strictEqual(
      toHex(encodeTable(parsed)),
      toHex(tableBytes([["__proto__", ["F", [["polluted", ["t", true]]]]]]))
    )
  })
})

describe("encoding", () => {
  it("encodes every field type, with Typed where inference would pick another", () => {
    assert.strictEqual(toHex(encodeTable(tableInput(everyType))), toHex(tableBytes(everyType)))
  })

  it("encodes the empty table as a zero size", () => {
    assert.strictEqual(toHex(encodeTable({})), "00 00 00 00")
  })

  it("skips keys whose value is undefined", () => {
    assert.strictEqual(toHex(encodeTable({ gone: undefined, kept: true })), toHex(tableBytes([["kept", ["t", true]]])))
  })

  it("infers 'I' for integers in the int32 range", () => {
    for (const n of [0, 1, -1, 2147483647, -2147483648]) assert.strictEqual(encodedValue(n), expectValue(["I", n]))
    assert.strictEqual(encodedValue(-0), "49 00 00 00 00")
  })

  it("infers 'l' for integers outside int32 and for bigints", () => {
    for (const n of [2147483648, -2147483649, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]) {
      assert.strictEqual(encodedValue(n), expectValue(["l", BigInt(n)]))
    }
    assert.strictEqual(encodedValue(2 ** 62), expectValue(["l", 2n ** 62n]))
    assert.strictEqual(encodedValue(-(2 ** 63)), expectValue(["l", -(2n ** 63n)]))
    assert.strictEqual(encodedValue(10n), expectValue(["l", 10n]))
    assert.strictEqual(encodedValue(2n ** 63n - 1n), "6c 7f ff ff ff ff ff ff ff")
  })

  it("infers 'd' for other numbers", () => {
    for (const n of [1.5, -0.1, 2 ** 63, Infinity, NaN]) assert.strictEqual(encodedValue(n), expectValue(["d", n]))
  })

  it("infers S t V x T D A F for strings, booleans, null, bytes, dates, decimals, arrays and tables", () => {
    assert.strictEqual(encodedValue("h\u00e9"), "53 00 00 00 03 68 c3 a9")
    assert.strictEqual(encodedValue(true), "74 01")
    assert.strictEqual(encodedValue(false), "74 00")
    assert.strictEqual(encodedValue(null), "56")
    assert.strictEqual(encodedValue(Uint8Array.of(1, 2)), "78 00 00 00 02 01 02")
    assert.strictEqual(encodedValue(Buffer.from([3])), "78 00 00 00 01 03")
    assert.strictEqual(encodedValue(new Date(1_700_000_000_999)), expectValue(["T", 1700000000]))
    assert.strictEqual(encodedValue(new Decimal(3, -5)), "44 03 ff ff ff fb")
    assert.strictEqual(encodedValue([1, "a"]), "41 00 00 00 0b 49 00 00 00 01 53 00 00 00 01 61")
    assert.strictEqual(encodedValue({ a: 1 }), "46 00 00 00 07 01 61 49 00 00 00 01")
    const bare = Object.create(null) as Record<string, FieldValue>
    bare.a = 1
    assert.strictEqual(encodedValue(bare), "46 00 00 00 07 01 61 49 00 00 00 01")
  })

  it("forces a type with Typed", () => {
    assert.strictEqual(encodedValue(new Typed("b", -1)), "62 ff")
    assert.strictEqual(encodedValue(new Typed("B", 255)), "42 ff")
    assert.strictEqual(encodedValue(new Typed("s", -2)), "73 ff fe")
    assert.strictEqual(encodedValue(new Typed("u", 65535)), "75 ff ff")
    assert.strictEqual(encodedValue(new Typed("i", 4294967295)), "69 ff ff ff ff")
    assert.strictEqual(encodedValue(new Typed("l", 5)), expectValue(["l", 5n]))
    assert.strictEqual(encodedValue(new Typed("f", 1.5)), "66 3f c0 00 00")
    assert.strictEqual(encodedValue(new Typed("d", 1)), expectValue(["d", 1]))
    assert.strictEqual(encodedValue(new Typed("S", Uint8Array.of(0xff))), "53 00 00 00 01 ff")
    assert.strictEqual(encodedValue(new Typed("T", 1700000000)), expectValue(["T", 1700000000]))
    assert.strictEqual(encodedValue(new Typed("V", null)), "56")
  })

  it("refuses values a forced type cannot hold", () => {
    const refused: ReadonlyArray<Typed> = [
      new Typed("t", 1),
      new Typed("b", 128),
      new Typed("b", -129),
      new Typed("B", -1),
      new Typed("B", 1.5),
      new Typed("s", 32768),
      new Typed("u", 65536),
      new Typed("I", 2147483648),
      new Typed("i", -1),
      new Typed("l", 2n ** 63n),
      new Typed("l", 1.5),
      new Typed("f", "1"),
      new Typed("d", 1n),
      new Typed("D", 5),
      new Typed("D", new Decimal(256, 1)),
      new Typed("D", new Decimal(1, 2 ** 31)),
      new Typed("S", 5),
      new Typed("x", "text"),
      new Typed("T", new Date(Number.NaN)),
      new Typed("T", 1.5),
      new Typed("A", { a: 1 }),
      new Typed("F", [1]),
      new Typed("F", null)
    ]
    for (const value of refused) encodeErrorOf(() => encodeTable({ v: value }))
  })

  it("refuses values that have no field type", () => {
    class Thing {
      readonly name = "thing"
    }
    for (const value of [new Map(), new Thing(), () => 1, Symbol("s")]) {
      encodeErrorOf(() => encodeTable({ v: value as never }))
    }
    encodeErrorOf(() => encodeTable({ v: new Typed("Q" as never, 1) }))
  })

  it("refuses a key longer than 255 bytes", () => {
    encodeErrorOf(() => encodeTable({ ["\u00e9".repeat(128)]: 1 }))
    assert.strictEqual(encodeTable({ ["k".repeat(255)]: 1 }).length, 4 + 1 + 255 + 5)
  })
})

/** Tables nested `levels` deep in all: `{ d: { d: ... {} } }`. */
const nestedTables = (levels: number): FieldTable => {
  let table: FieldTable = {}
  for (let i = 1; i < levels; i++) table = { d: table }
  return table
}

/** A table holding arrays nested `levels` deep: `{ a: [[...[]]] }`, built without recursion. */
const nestedArrayBytes = (levels: number): Uint8Array => {
  const bytes = new Bytes().long(2 + 5 * levels).shortstr("a")
  for (let i = 0; i < levels; i++) bytes.octet(0x41).long(5 * (levels - 1 - i))
  return bytes.build()
}

describe("nesting limits", () => {
  it("encodes and decodes tables nested to the depth limit", () => {
    const deepest = nestedTables(maxDepth + 1)
    const bytes = encodeTable(deepest)
    assert.deepStrictEqual(decodeTable(bytes), deepest)
  })

  it("refuses to encode a table nested deeper than the limit", () => {
    encodeErrorOf(() => encodeTable(nestedTables(maxDepth + 2)))
  })

  it("refuses to decode a table nested deeper than the limit, with 502", () => {
    const bytes = encodeTable({ d: nestedTables(maxDepth) })
    // One more level than the encoder allows, written by hand around valid bytes.
    const deeper = new Bytes().sized((inner) => inner.shortstr("d").octet(0x46).raw(bytes)).build()
    frameErrorOf(502, () => decodeTable(deeper))
  })

  it("treats arrays like tables", () => {
    let deepest: FieldValue = []
    for (let i = 1; i < maxDepth; i++) deepest = [deepest]
    assert.deepStrictEqual(decodeTable(encodeTable({ a: deepest })), { a: deepest })
    encodeErrorOf(() => encodeTable({ a: [deepest] }))
    assert.deepStrictEqual(toHex(encodeTable({ a: deepest })), toHex(nestedArrayBytes(maxDepth)))
    frameErrorOf(502, () => decodeTable(nestedArrayBytes(maxDepth + 1)))
  })

  it("rejects hostile nesting a hundred thousand levels deep without overflowing the stack", () => {
    frameErrorOf(502, () => decodeTable(nestedArrayBytes(100_000)))
  })

  it("refuses a cyclic table as too deep rather than looping", () => {
    const cyclic: Record<string, FieldValue> = {}
    cyclic.self = cyclic
    encodeErrorOf(() => encodeTable(cyclic))
  })
})

describe("malformed tables", () => {
  it("rejects an unknown field type with 502", () => {
    frameErrorOf(502, () => decodeTable(hex("00 00 00 03 01 6b 51")))
  })

  it("rejects a value that runs past the table's declared size with 502", () => {
    // The table says 5 bytes; the 'I' value needs 7 after the key.
    frameErrorOf(502, () => decodeTable(hex("00 00 00 05 01 6b 49 00 00 00 01")))
  })

  it("rejects a table larger than its input", () => {
    frameErrorOf(501, () => decodeTable(hex("00 00 00 09 01 6b 49 00 00 00 01")))
  })

  it("rejects bytes after the table with 502", () => {
    frameErrorOf(502, () => decodeTable(hex("00 00 00 00 00")))
  })

  it("rejects a key whose value is missing with 502", () => {
    frameErrorOf(502, () => decodeTable(hex("00 00 00 02 01 6b")))
  })
})

describe("random tables", () => {
  it("encode to the bytes the spec lays out and decode back", () => {
    fc.assert(
      fc.property(Arbitraries.entries, (entries) => {
        const bytes = tableBytes(wireOrder(entries))
        assert.strictEqual(toHex(encodeTable(tableInput(entries))), toHex(bytes))
        assert.deepStrictEqual(decodeTable(bytes), tableDecoded(entries))
        assert.strictEqual(toHex(encodeTable(decodeTable(bytes, { typed: true }))), toHex(bytes))
      }),
      { numRuns: 2000 }
    )
  })
})
