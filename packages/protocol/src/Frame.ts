/**
 * AMQP frames: the four frame types, the protocol header and the encoders of single frames.
 *
 * A frame is `type (1) | channel (2) | size (4) | payload (size) | frame-end 0xCE`. Method frames
 * carry one method; a content header frame carries the body size and the basic properties; body
 * frames carry slices of the body; heartbeat frames are empty and travel on channel 0.
 *
 * @since 0.1.0
 */
import type { Method } from "./generated/Methods.ts"
import { writeMethod } from "./generated/Methods.ts"
import { BufferWriter, putUint32 } from "./internal/BufferWriter.ts"
import { type BasicProperties, writeProperties } from "./Properties.ts"

/**
 * @since 0.1.0
 * @category constants
 */
export const FrameType = { method: 1, header: 2, body: 3, heartbeat: 8 } as const

/**
 * The octet that ends every frame.
 *
 * @since 0.1.0
 * @category constants
 */
export const FRAME_END = 0xce

/**
 * Bytes a frame adds around its payload: 7 of header and the frame-end octet.
 *
 * @since 0.1.0
 * @category constants
 */
export const FRAME_OVERHEAD = 8

/**
 * The smallest frame_max a peer may negotiate.
 *
 * @since 0.1.0
 * @category constants
 */
export const FRAME_MIN_SIZE = 4096

/**
 * `AMQP 0 0 9 1`: the bytes a client sends before anything else.
 *
 * @since 0.1.0
 * @category constants
 */
export const PROTOCOL_HEADER: Uint8Array = Uint8Array.of(0x41, 0x4d, 0x51, 0x50, 0, 0, 9, 1)

/**
 * @since 0.1.0
 * @category models
 */
export interface MethodFrame {
  readonly _tag: "MethodFrame"
  readonly channel: number
  readonly method: Method
}

/**
 * @since 0.1.0
 * @category models
 */
export interface HeaderFrame {
  readonly _tag: "HeaderFrame"
  readonly channel: number
  readonly classId: number
  readonly bodySize: number
  readonly properties: BasicProperties
}

/**
 * @since 0.1.0
 * @category models
 */
export interface BodyFrame {
  readonly _tag: "BodyFrame"
  readonly channel: number
  readonly payload: Uint8Array
}

/**
 * @since 0.1.0
 * @category models
 */
export interface HeartbeatFrame {
  readonly _tag: "HeartbeatFrame"
  readonly channel: number
}

/**
 * @since 0.1.0
 * @category models
 */
export type Frame = MethodFrame | HeaderFrame | BodyFrame | HeartbeatFrame

/**
 * The 8 bytes of a heartbeat frame.
 *
 * @since 0.1.0
 * @category constants
 */
export const HEARTBEAT_FRAME: Uint8Array = Uint8Array.of(8, 0, 0, 0, 0, 0, 0, FRAME_END)

/** @internal */
export const beginFrame = (w: BufferWriter, type: number, channel: number): number => {
  w.ensure(7)
  const buf = w.buf
  const at = w.pos
  buf[at] = type
  buf[at + 1] = channel >>> 8
  buf[at + 2] = channel & 0xff
  w.pos = at + 7
  return at
}

/** @internal */
export const endFrame = (w: BufferWriter, at: number): void => {
  putUint32(w.buf, at + 3, w.pos - at - 7)
  w.ensure(1)
  w.buf[w.pos++] = FRAME_END
}

/** @internal */
export const writeMethodFrame = (w: BufferWriter, channel: number, method: Method): void => {
  const at = beginFrame(w, FrameType.method, channel)
  writeMethod(w, method)
  endFrame(w, at)
}

/**
 * A `basic.publish` method frame written from its arguments: the same bytes as `writeMethodFrame`
 * with `Methods.basicPublish`, without building the method object or dispatching on its tag, since
 * every message a client sends starts with one.
 *
 * @internal
 */
export const writePublishFrame = (
  w: BufferWriter,
  channel: number,
  exchange: string,
  routingKey: string,
  mandatory: boolean
): void => {
  const at = beginFrame(w, FrameType.method, channel)
  w.long(BASIC_PUBLISH)
  w.short(0)
  w.shortstr(exchange)
  w.shortstr(routingKey)
  w.octet(mandatory ? 1 : 0)
  endFrame(w, at)
}

// Class 60 (basic), method 40 (publish).
const BASIC_PUBLISH = (60 << 16) | 40

/** @internal */
export const writeHeaderFrame = (
  w: BufferWriter,
  channel: number,
  classId: number,
  bodySize: number,
  properties: BasicProperties
): void => {
  const at = beginFrame(w, FrameType.header, channel)
  w.short(classId)
  w.short(0)
  w.longlong(bodySize)
  writeProperties(w, properties)
  endFrame(w, at)
}

/**
 * Sets the delivery tag of an encoded `basic.ack` frame in place. For a writer that holds such a
 * frame, with `multiple`, not yet sent: a further acknowledgement of the same channel that covers
 * every tag up to its own then raises that frame's tag instead of adding a frame.
 *
 * @since 0.1.0
 * @category encoding
 */
export const setAckDeliveryTag = (frame: Uint8Array, deliveryTag: number): void => {
  // Frame type, channel and size take 7 bytes, class and method 4: the tag is the 8 bytes at 11.
  if (frame[0] !== FrameType.method || frame[8] !== 60 || frame[10] !== 80 || frame.length !== 21) {
    throw new TypeError("not an encoded basic.ack frame")
  }
  if (!Number.isSafeInteger(deliveryTag) || deliveryTag < 0) throw new RangeError(`bad delivery tag ${deliveryTag}`)
  const high = Math.floor(deliveryTag / 0x100000000)
  const low = deliveryTag >>> 0
  frame[11] = 0
  frame[12] = high >>> 16
  frame[13] = (high >>> 8) & 0xff
  frame[14] = high & 0xff
  frame[15] = low >>> 24
  frame[16] = (low >>> 16) & 0xff
  frame[17] = (low >>> 8) & 0xff
  frame[18] = low & 0xff
}

/**
 * Encodes any single frame. Meant for tests, tools and the scripted peer; the client's hot path
 * uses `MessageEncoder`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeFrame = (frame: Frame): Buffer => {
  const w = new BufferWriter(256)
  switch (frame._tag) {
    case "MethodFrame":
      writeMethodFrame(w, frame.channel, frame.method)
      break
    case "HeaderFrame":
      writeHeaderFrame(w, frame.channel, frame.classId, frame.bodySize, frame.properties)
      break
    case "BodyFrame": {
      const at = beginFrame(w, FrameType.body, frame.channel)
      w.bytes(frame.payload)
      endFrame(w, at)
      break
    }
    case "HeartbeatFrame": {
      const at = beginFrame(w, FrameType.heartbeat, frame.channel)
      endFrame(w, at)
      break
    }
  }
  return w.take()
}

/**
 * Encodes a method frame.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeMethod = (channel: number, method: Method): Buffer =>
  encodeFrame({ _tag: "MethodFrame", channel, method })
