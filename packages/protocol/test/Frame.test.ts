import { assert, describe, it } from "@effect/vitest"
import {
  encodeFrame,
  encodeMethod,
  FRAME_END,
  FRAME_MIN_SIZE,
  FRAME_OVERHEAD,
  FrameType,
  HEARTBEAT_FRAME,
  PROTOCOL_HEADER,
  setAckDeliveryTag
} from "../src/Frame.ts"
import { Constants, Methods } from "../src/generated/Methods.ts"
import { hex, toHex } from "./fixtures/Wire.ts"

describe("frame constants", () => {
  it("starts a connection with the bytes AMQP 0 0 9 1", () => {
    assert.strictEqual(toHex(PROTOCOL_HEADER), "41 4d 51 50 00 00 09 01")
    assert.strictEqual(Buffer.from(PROTOCOL_HEADER).toString("latin1"), "AMQP\x00\x00\x09\x01")
  })

  it("agrees with the spec's constants", () => {
    assert.deepStrictEqual(
      [FrameType.method, FrameType.header, FrameType.body, FrameType.heartbeat, FRAME_END, FRAME_MIN_SIZE],
      [
        Constants.FRAME_METHOD,
        Constants.FRAME_HEADER,
        Constants.FRAME_BODY,
        Constants.FRAME_HEARTBEAT,
        Constants.FRAME_END,
        Constants.FRAME_MIN_SIZE
      ]
    )
    assert.strictEqual(FRAME_OVERHEAD, 8)
  })
})

describe("encodeFrame", () => {
  it("encodes a heartbeat as 08 00 00 00 00 00 00 ce", () => {
    assert.strictEqual(toHex(encodeFrame({ _tag: "HeartbeatFrame", channel: 0 })), "08 00 00 00 00 00 00 ce")
    assert.strictEqual(toHex(HEARTBEAT_FRAME), "08 00 00 00 00 00 00 ce")
  })

  it("encodes a body frame around its payload", () => {
    const frame = encodeFrame({ _tag: "BodyFrame", channel: 2, payload: Uint8Array.of(0x61, 0x62, 0x63) })
    assert.strictEqual(toHex(frame), toHex(hex("03 0002 00000003 616263 ce")))
  })

  it("encodes the highest channel number", () => {
    const frame = encodeMethod(65535, Methods.channelFlowOk({ active: true }))
    assert.strictEqual(toHex(frame), toHex(hex("01 ffff 00000005 0014 0015 01 ce")))
  })

  it("writes a payload size that needs all four octets", () => {
    const frame = encodeFrame({ _tag: "BodyFrame", channel: 1, payload: new Uint8Array(0x012345) })
    assert.strictEqual(toHex(frame.subarray(0, 7)), "03 00 01 00 01 23 45")
    assert.strictEqual(frame.length, 0x012345 + 8)
    assert.strictEqual(frame.at(-1), 0xce)
  })
})

describe("setAckDeliveryTag", () => {
  it("sets the tag of an encoded basic.ack in place, as encoding it with that tag would", () => {
    for (const tag of [2, 0x1_0000_0000 + 5, Number.MAX_SAFE_INTEGER]) {
      const frame = encodeMethod(7, Methods.basicAck({ deliveryTag: 1, multiple: true }))
      setAckDeliveryTag(frame, tag)
      assert.strictEqual(toHex(frame), toHex(encodeMethod(7, Methods.basicAck({ deliveryTag: tag, multiple: true }))))
    }
    const big = encodeMethod(1, Methods.basicAck({ deliveryTag: 1, multiple: false }))
    setAckDeliveryTag(big, 0x0102_0304_0506)
    assert.strictEqual(toHex(big), toHex(hex("01 0001 0000000d 003c 0050 0000010203040506 00 ce")))
  })

  it("refuses a frame that is not a basic.ack, and a tag that is not one", () => {
    const nack = encodeMethod(1, Methods.basicNack({ deliveryTag: 1, multiple: true, requeue: false }))
    assert.throws(() => setAckDeliveryTag(nack, 2), TypeError)
    const ack = encodeMethod(1, Methods.basicAck({ deliveryTag: 1, multiple: true }))
    assert.throws(() => setAckDeliveryTag(ack, -1), RangeError)
    assert.throws(() => setAckDeliveryTag(ack, 2 ** 53), RangeError)
    assert.strictEqual(toHex(ack), toHex(encodeMethod(1, Methods.basicAck({ deliveryTag: 1, multiple: true }))))
  })
})
