/**
 * Just enough AMQP 0-9-1 framing for the raw reference client and the null broker: a scanner that
 * walks frames in socket chunks without decoding bodies, readers for the few hot method fields,
 * and whole-message encoding with the protocol package.
 *
 * Rare methods are decoded with `FrameDecoder` from `@effect-amqp/protocol`; only `basic.publish`,
 * `basic.deliver`, `basic.ack` and content frames are read by hand, so neither the reference client
 * nor the null broker becomes the bottleneck it is meant to rule out.
 */
import { encodeFrame, encodeMethod, FrameDecoder, type Method } from "@effect-amqp/protocol"

export const FRAME_END = 0xce
export const BASIC = 60
export const BASIC_PUBLISH = 40
export const BASIC_DELIVER = 60
export const BASIC_ACK = 80

/** Callbacks of the scanner; payloads are `buf[start, end)`. */
export interface FrameHandler {
  readonly method: (channel: number, classId: number, methodId: number, buf: Buffer, start: number, end: number) => void
  readonly header: (channel: number, bodySize: number) => void
  /** A body frame of `size` bytes has been passed over completely. */
  readonly body: (channel: number, size: number) => void
}

/**
 * Walks the frames of a byte stream. Body payloads are skipped, never copied; a method or header
 * frame split across chunks is joined first.
 */
export class FrameScanner {
  private rest: Buffer | undefined
  private skip = 0
  private skipChannel = 0
  private skipSize = 0
  private readonly handler: FrameHandler

  constructor(handler: FrameHandler) {
    this.handler = handler
  }

  push(chunk: Buffer): void {
    let buf = chunk
    let offset = 0
    if (this.skip > 0) {
      if (this.skip > chunk.length) {
        this.skip -= chunk.length
        return
      }
      offset = this.skip
      this.skip = 0
      this.handler.body(this.skipChannel, this.skipSize)
    }
    if (this.rest !== undefined) {
      buf = Buffer.concat([this.rest, chunk.subarray(offset)])
      offset = 0
      this.rest = undefined
    }
    const length = buf.length
    while (offset < length) {
      if (length - offset < 7) {
        this.rest = buf.subarray(offset)
        return
      }
      const type = buf[offset]!
      const channel = buf.readUInt16BE(offset + 1)
      const size = buf.readUInt32BE(offset + 3)
      const start = offset + 7
      const end = start + size
      if (type === 3) {
        if (end + 1 <= length) {
          this.handler.body(channel, size)
          offset = end + 1
          continue
        }
        this.skip = end + 1 - length
        this.skipChannel = channel
        this.skipSize = size
        return
      }
      if (end + 1 > length) {
        this.rest = buf.subarray(offset)
        return
      }
      if (buf[end] !== FRAME_END) throw new Error(`frame-end octet is ${buf[end]}`)
      if (type === 1) {
        this.handler.method(channel, buf.readUInt16BE(start), buf.readUInt16BE(start + 2), buf, start, end)
      } else if (type === 2) {
        this.handler.header(channel, readLonglong(buf, start + 4))
      } else if (type !== 8) {
        throw new Error(`unknown frame type ${type}`)
      }
      offset = end + 1
    }
  }
}

export const readLonglong = (buf: Buffer, at: number): number =>
  buf.readUInt32BE(at) * 0x1_0000_0000 + buf.readUInt32BE(at + 4)

/** Decodes a whole method frame whose payload is `buf[start, end)` with the protocol package. */
export const decodeMethod = (buf: Buffer, start: number, end: number): Method => {
  const frames = new FrameDecoder({ frameMax: 0 }).push(buf.subarray(start - 7, end + 1))
  const frame = frames[0]
  if (frames.length !== 1 || frame === undefined || frame._tag !== "MethodFrame") throw new Error("not a method frame")
  return frame.method
}

/** `basic.deliver`: the offset of the delivery tag in a payload starting at `start`. */
export const deliveryTagOffset = (buf: Buffer, start: number): number => start + 4 + 1 + buf[start + 4]!

/** `basic.publish`: the routing key (the queue, on the default exchange). */
export const publishRoutingKey = (buf: Buffer, start: number): string => {
  const exchangeAt = start + 6
  const keyAt = exchangeAt + 1 + buf[exchangeAt]!
  return buf.toString("latin1", keyAt + 1, keyAt + 1 + buf[keyAt]!)
}

/** The frames of one message (method, content header with no properties, body frames), in one buffer. */
export const encodeMessage = (channel: number, method: Method, body: Uint8Array, frameMax: number): Buffer => {
  const parts: Array<Uint8Array> = [
    encodeMethod(channel, method),
    encodeFrame({ _tag: "HeaderFrame", channel, classId: BASIC, bodySize: body.length, properties: {} })
  ]
  const max = frameMax - 8
  for (let offset = 0; offset < body.length; offset += max) {
    parts.push(encodeFrame({ _tag: "BodyFrame", channel, payload: body.subarray(offset, offset + max) }))
  }
  return Buffer.concat(parts)
}

/** `copies` back-to-back copies of `template`. */
export const repeat = (template: Buffer, copies: number): Buffer => {
  const out = Buffer.allocUnsafe(template.length * copies)
  for (let i = 0; i < copies; i++) template.copy(out, i * template.length)
  return out
}

/** How many copies of a message of `size` bytes make a write of about `target` bytes. */
export const copiesFor = (size: number, target = 256 * 1024): number => Math.max(1, Math.floor(target / size))
