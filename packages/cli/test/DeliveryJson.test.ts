import { Decimal, decodeTable, type FieldValue, Typed } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import * as DeliveryJson from "../src/DeliveryJson.ts"

describe("DeliveryJson", () => {
  it("names the field type the client decoded a plain value as", () => {
    const cases: Array<[FieldValue, string]> = [
      [true, "t"],
      ["text", "S"],
      [5, "I"],
      [-2147483648, "I"],
      [2147483648, "l"],
      [1.5, "d"],
      [5n, "l"],
      [null, "V"],
      [new Uint8Array(1), "x"],
      [new Date(0), "T"],
      [new Decimal(1, 5), "D"],
      [[1], "A"],
      [{ a: 1 }, "F"],
      [new Typed("u", 7), "u"]
    ]
    for (const [value, type] of cases) assert.strictEqual(DeliveryJson.fieldTypeOf(value), type, String(value))
  })

  it("writes values JSON cannot hold exactly as strings", () => {
    assert.deepStrictEqual(DeliveryJson.typedJson(new Typed("l", 2n ** 62n)), {
      type: "l",
      value: "4611686018427387904"
    })
    assert.deepStrictEqual(DeliveryJson.typedJson(new Typed("d", Number.NaN)), { type: "d", value: "NaN" })
    assert.deepStrictEqual(DeliveryJson.typedJson(new Uint8Array([1, 2, 3])), { type: "x", value: "AQID" })
    assert.deepStrictEqual(DeliveryJson.typedJson(new Date(86_400_000)), {
      type: "T",
      value: "1970-01-02T00:00:00.000Z"
    })
    assert.deepStrictEqual(DeliveryJson.typedJson(new Typed("D", new Decimal(2, 314))), {
      type: "D",
      value: { scale: 2, value: 314 }
    })
  })

  it("types nested tables and arrays value by value", () => {
    const table = { outer: new Typed("F", { list: new Typed("A", [new Typed("b", -1), new Typed("V", null)]) }) }
    assert.deepStrictEqual(DeliveryJson.tableJson(table), {
      outer: {
        type: "F",
        value: { list: { type: "A", value: [{ type: "b", value: -1 }, { type: "V", value: null }] } }
      }
    })
  })

  it("keeps a UTF-8 body as text and marks anything else as base64", () => {
    assert.deepStrictEqual(DeliveryJson.bodyJson(Buffer.from("héllo")), { body: "héllo", bodyEncoding: "utf8" })
    assert.deepStrictEqual(DeliveryJson.bodyJson(new Uint8Array([0xc3, 0x28])), {
      body: "wyg=",
      bodyEncoding: "base64"
    })
    assert.deepStrictEqual(DeliveryJson.bodyJson(new Uint8Array(0)), { body: "", bodyEncoding: "utf8" })
  })

  it("puts headers beside the other properties, not among them", () => {
    const json = DeliveryJson.deliveryJson({
      exchange: "amq.direct",
      routingKey: "rk",
      redelivered: true,
      properties: { messageId: "m1", timestamp: 1700000000, headers: { n: new Typed("I", 1) } },
      body: Buffer.from("hi")
    })
    assert.deepStrictEqual(json, {
      exchange: "amq.direct",
      routingKey: "rk",
      redelivered: true,
      properties: { messageId: "m1", timestamp: 1700000000 },
      headers: { n: { type: "I", value: 1 } },
      size: 2,
      body: "hi",
      bodyEncoding: "utf8"
    })
  })
})

describe("DeliveryJson, losing nothing", () => {
  it("keeps a body's byte order mark: 5 bytes in, the same 5 back", () => {
    const body = new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d])
    const json = DeliveryJson.deliveryJson({ exchange: "", routingKey: "q", redelivered: false, properties: {}, body })
    assert.strictEqual(json["size"], 5)
    assert.strictEqual(json["body"], "\uFEFF{}")
    assert.deepStrictEqual([...Buffer.from(json["body"] as string, "utf8")], [...body])
  })

  it("prints a long string that is not UTF-8 as base64, saying so", () => {
    const bytes = new Uint8Array([0xff, 0xfe, 0x00, 0x80])
    const raw = Buffer.alloc(4 + 2 + 1 + 4 + bytes.length)
    raw.writeUInt32BE(raw.length - 4, 0)
    raw.write("\x01sS", 4, "latin1")
    raw.writeUInt32BE(bytes.length, 7)
    raw.set(bytes, 11)
    assert.deepStrictEqual(DeliveryJson.tableJson(decodeTable(raw, { typed: true })), {
      s: { type: "S", value: Buffer.from(bytes).toString("base64"), encoding: "base64" }
    })
  })

  it("prints a 'T' header beyond a Date's range (nanoseconds) as its exact decimal", () => {
    // { ts: T 1700000000000000000 }, by hand: size, key length, key, type, int64.
    const raw = Buffer.alloc(16)
    raw.writeUInt32BE(12, 0)
    raw.write("\x02tsT", 4, "latin1")
    raw.writeBigInt64BE(1_700_000_000_000_000_000n, 8)
    assert.deepStrictEqual(DeliveryJson.tableJson(decodeTable(raw, { typed: true })), {
      ts: { type: "T", value: "1700000000000000000" }
    })
  })
})
