/**
 * Encodes whole messages for the wire: the `basic.publish` method frame, the content header frame
 * and the body split into frames of at most frame_max - 8 payload bytes, in as few buffers as it
 * can. Small bodies are copied next to their frames so the message is one buffer; larger bodies are
 * not copied at all: the result interleaves views of the caller's body with the few bytes of frame
 * header and frame-end between them, ready for one vectored write.
 *
 * Output buffers are views into a shared slab that is never written over once handed out, so many
 * small messages cost no allocation each; `publishToSlab` hands a message out as its place in the
 * slab, without even a view.
 *
 * @since 0.1.0
 */
import { FRAME_END, FRAME_MIN_SIZE, FRAME_OVERHEAD, FrameType } from "./Frame.ts"
import { beginFrame, endFrame, writeHeaderFrame, writeMethodFrame, writePublishFrame } from "./Frame.ts"
import type { BasicPublish, Method } from "./generated/Methods.ts"
import { BufferWriter, putUint32 } from "./internal/BufferWriter.ts"
import type { BasicProperties } from "./Properties.ts"
import { AmqpEncodeError } from "./ProtocolError.ts"

const SLAB_SIZE = 256 * 1024
const BASIC_CLASS = 60

/**
 * @since 0.1.0
 * @category models
 */
export interface MessageEncoderOptions {
  /** The negotiated frame_max; 0 means no limit. */
  readonly frameMax?: number
  /** Bodies up to this size are copied into the message's buffer; larger ones are referenced. */
  readonly copyLimit?: number
}

/**
 * @since 0.1.0
 * @category encoding
 */
export class MessageEncoder {
  private readonly w = new BufferWriter(SLAB_SIZE)
  private maxPayload: number
  /** The largest method or content header frame: frame_max, or none when it is 0 (no limit). */
  private maxFrame: number
  private readonly copyLimit: number

  constructor(options: MessageEncoderOptions = {}) {
    const frameMax = options.frameMax ?? 131072
    this.maxPayload = payloadLimit(frameMax)
    this.maxFrame = frameMax === 0 ? Infinity : Math.max(frameMax, FRAME_MIN_SIZE)
    this.copyLimit = options.copyLimit ?? 16 * 1024
  }

  setFrameMax(frameMax: number): void {
    this.maxPayload = payloadLimit(frameMax)
    this.maxFrame = frameMax === 0 ? Infinity : Math.max(frameMax, FRAME_MIN_SIZE)
  }

  /** One method frame. */
  method(channel: number, method: Method): Buffer {
    const w = this.w
    w.reserve(4096, SLAB_SIZE)
    const start = w.pos
    try {
      writeMethodFrame(w, channel, method)
      this.checkFrameSize("method", w.pos - start)
    } catch (error) {
      this.discard(start, error)
    }
    return w.cut()
  }

  /**
   * A whole message: method, content header and body frames. Returns one buffer, or several to be
   * written in order with nothing in between.
   */
  message(
    channel: number,
    method: BasicPublish | Method,
    properties: BasicProperties,
    body: Uint8Array
  ): Buffer | Array<Uint8Array> {
    const start = this.begin(body.length)
    try {
      writeMethodFrame(this.w, channel, method)
      this.checkFrameSize("method", this.w.pos - start)
      this.header(channel, properties, body.length)
    } catch (error) {
      this.discard(start, error)
    }
    return this.body(channel, body)
  }

  /**
   * A `basic.publish` message, the same bytes as `message` with `Methods.basicPublish`, for the
   * client's publish path: no method object to build.
   */
  publish(
    channel: number,
    exchange: string,
    routingKey: string,
    mandatory: boolean,
    properties: BasicProperties,
    body: Uint8Array
  ): Buffer | Array<Uint8Array> {
    this.publishHead(channel, exchange, routingKey, mandatory, properties, body.length)
    return this.body(channel, body)
  }

  /**
   * `publish` without a view of the result, for the client's hot path. A message whose body is
   * copied (`copyLimit`) is written into the slab, `slab`, from the offset returned up to
   * `slabEnd`, and counts as handed out. A larger body is not written at all: the result is then
   * -1, and `publish` takes the message.
   */
  publishToSlab(
    channel: number,
    exchange: string,
    routingKey: string,
    mandatory: boolean,
    properties: BasicProperties,
    body: Uint8Array
  ): number {
    if (body.length > this.copyLimit) return -1
    const start = this.publishHead(channel, exchange, routingKey, mandatory, properties, body.length)
    this.copyBody(channel, body)
    this.w.start = this.w.pos
    return start
  }

  /** The `basic.publish` and content header frames, with room made for the body's; returns where they start. */
  private publishHead(
    channel: number,
    exchange: string,
    routingKey: string,
    mandatory: boolean,
    properties: BasicProperties,
    size: number
  ): number {
    const start = this.begin(size)
    try {
      writePublishFrame(this.w, channel, exchange, routingKey, mandatory)
      this.checkFrameSize("method", this.w.pos - start)
      this.header(channel, properties, size)
    } catch (error) {
      this.discard(start, error)
    }
    return start
  }

  /** The slab `publishToSlab` writes into; it changes when one fills up. */
  get slab(): Buffer {
    return this.w.buf
  }

  /** Where the last message `publishToSlab` wrote ends in `slab`. */
  get slabEnd(): number {
    return this.w.start
  }

  /** Makes room for the frames of a message with a body of `size` bytes; returns where it starts. */
  private begin(size: number): number {
    const copied = size <= this.copyLimit ? size + Math.ceil(size / this.maxPayload) * FRAME_OVERHEAD : 0
    this.w.reserve(1024 + copied, SLAB_SIZE)
    return this.w.pos
  }

  private header(channel: number, properties: BasicProperties, size: number): void {
    const headerStart = this.w.pos
    writeHeaderFrame(this.w, channel, BASIC_CLASS, size, properties)
    this.checkFrameSize("content header", this.w.pos - headerStart)
  }

  /**
   * The body frames after the method and header, and the whole message handed out: one buffer when
   * the body is copied, else the frames' few bytes interleaved with views of the caller's body.
   */
  private body(channel: number, body: Uint8Array): Buffer | Array<Uint8Array> {
    const w = this.w
    const size = body.length
    if (size <= this.copyLimit) {
      this.copyBody(channel, body)
      return w.cut()
    }
    const out: Array<Uint8Array> = []
    for (let offset = 0; offset < size; offset += this.maxPayload) {
      const end = Math.min(offset + this.maxPayload, size)
      const at = beginFrame(w, FrameType.body, channel)
      putUint32(w.buf, at + 3, end - offset)
      out.push(w.cut(), body.subarray(offset, end))
      w.ensure(1)
      w.buf[w.pos++] = FRAME_END
    }
    out.push(w.cut())
    return out
  }

  /** The body frames of a body that is copied, into the room `begin` made for them. */
  private copyBody(channel: number, body: Uint8Array): void {
    const w = this.w
    const size = body.length
    if (size === 0) return
    if (size <= this.maxPayload) {
      const at = beginFrame(w, FrameType.body, channel)
      w.bytes(body)
      endFrame(w, at)
      return
    }
    for (let offset = 0; offset < size; offset += this.maxPayload) {
      const at = beginFrame(w, FrameType.body, channel)
      w.bytes(body.subarray(offset, Math.min(offset + this.maxPayload, size)))
      endFrame(w, at)
    }
  }

  /**
   * A method or content header cannot be split across frames: one over frame_max would make the
   * broker close the whole connection with 501, so the message is refused here instead.
   */
  private checkFrameSize(what: string, frameSize: number): void {
    if (frameSize > this.maxFrame) {
      throw new AmqpEncodeError({
        message: `the ${what} frame is ${frameSize} bytes, over frame_max (${this.maxFrame})`
      })
    }
  }

  /** Forgets the bytes of a frame that failed half-way, so the next cut does not hand them out. */
  private discard(start: number, error: unknown): never {
    this.w.pos = start
    throw error instanceof AmqpEncodeError ? error : new AmqpEncodeError({ message: String(error) })
  }
}

// Below the spec's minimum a body frame could carry nothing (the loop would never end); the decoder
// raises such a frame_max to the minimum too.
const payloadLimit = (frameMax: number): number =>
  (frameMax === 0 ? 128 * 1024 : Math.max(frameMax, FRAME_MIN_SIZE)) - FRAME_OVERHEAD
