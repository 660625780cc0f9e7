/**
 * The incremental frame decoder: chunks of any size in, complete frames out.
 *
 * It reads the 7-byte frame header first and checks the declared size against frame_max before it
 * allocates anything, so a hostile size costs nothing. A frame that arrives whole inside one chunk
 * is decoded in place (body payloads are views of the chunk, not copies); a frame split across
 * chunks is gathered into one buffer of exactly its size. Every malformed input ends in an
 * `AmqpFrameError` carrying the reply code to close with, and the decoder stays failed after it.
 *
 * @since 0.1.0
 */
import { type Frame, FRAME_END, FRAME_MIN_SIZE, FrameType } from "./Frame.ts"
import { readMethod } from "./generated/Methods.ts"
import { BufferReader, uint32 } from "./internal/BufferReader.ts"
import { readProperties } from "./Properties.ts"
import { AmqpFrameError, frameError, syntaxError, unexpectedFrame } from "./ProtocolError.ts"

const HEADER_SIZE = 7
/** What the reader points at between chunks, so that it keeps no chunk alive. */
const NO_BYTES = Buffer.alloc(0)

/**
 * @since 0.1.0
 * @category models
 */
export interface FrameDecoderOptions {
  /** The largest frame accepted, header and frame-end included. 0 means the protocol's ceiling. */
  readonly frameMax?: number
  /** Decode header tables with their field types kept (`Typed` values). */
  readonly typedHeaders?: boolean
  /**
   * Where the payload of a body frame that spans chunks should be gathered: a view of exactly
   * `size` bytes (say, its place in the message's body), or undefined for a buffer of its own.
   * `CommandAssembler.bodyTarget` answers this so that a large body is copied once, not twice.
   */
  readonly bodyTarget?: (channel: number, size: number) => Uint8Array | undefined
}

/**
 * Frames larger than this are refused even when frame_max is 0 ("no limit"): a 32-bit size field
 * must not be able to make us allocate 4 GiB.
 *
 * @since 0.1.0
 * @category constants
 */
export const FRAME_MAX_CEILING = 128 * 1024 * 1024

/**
 * @since 0.1.0
 * @category decoding
 */
export class FrameDecoder {
  private frameMax: number
  private readonly typedHeaders: boolean
  private readonly header = Buffer.alloc(HEADER_SIZE)
  private headerFill = 0
  private partial: Buffer | undefined
  private partialFill = 0
  /** A body frame's payload being gathered straight into the place `bodyTarget` gave. */
  private target: Uint8Array | undefined
  private readonly bodyTarget: FrameDecoderOptions["bodyTarget"]
  /** Whether this chunk is decoded by `pushEach`, where `bodyTarget` may be asked. */
  private targets = false
  private failure: AmqpFrameError | undefined
  /** Reads every method and header payload in turn; between chunks it holds none of them. */
  private readonly reader = new BufferReader(NO_BYTES, 0, 0)

  constructor(options: FrameDecoderOptions = {}) {
    this.frameMax = effectiveFrameMax(options.frameMax ?? 131072)
    this.typedHeaders = options.typedHeaders === true
    this.bodyTarget = options.bodyTarget
  }

  /** Applies a newly negotiated frame_max (0 means the ceiling). */
  setFrameMax(frameMax: number): void {
    this.frameMax = effectiveFrameMax(frameMax)
  }

  /** True while part of a frame is buffered. */
  get hasPartialFrame(): boolean {
    return this.headerFill > 0 || this.partial !== undefined || this.target !== undefined
  }

  /**
   * Feeds one chunk and returns the frames it completed. Throws only `AmqpFrameError`; once it has
   * thrown, every later call throws the same error.
   */
  push(chunk: Uint8Array): Array<Frame> {
    const frames: Array<Frame> = []
    this.run(chunk, (frame) => frames.push(frame), false)
    return frames
  }

  /**
   * Feeds one chunk and hands each frame to `onFrame` as soon as it is decoded, in order. Only in
   * this mode does the decoder ask `bodyTarget`: the caller has seen every earlier frame by then,
   * so its idea of where the body stands is current. Throws like `push`.
   */
  pushEach(chunk: Uint8Array, onFrame: (frame: Frame) => void): void {
    this.run(chunk, onFrame, true)
  }

  private run(chunk: Uint8Array, emit: (frame: Frame) => void, targets: boolean): void {
    if (this.failure !== undefined) throw this.failure
    this.targets = targets
    try {
      this.decode(toBuffer(chunk), emit)
    } catch (error) {
      this.failure = error instanceof AmqpFrameError
        ? error
        : frameError(`undecodable input: ${error instanceof Error ? error.message : String(error)}`)
      throw this.failure
    } finally {
      this.reader.reset(NO_BYTES, 0, 0)
    }
  }

  private decode(chunk: Buffer, emit: (frame: Frame) => void): void {
    let offset = 0
    const length = chunk.length
    while (offset < length) {
      const target = this.target
      if (target !== undefined) {
        if (this.partialFill < target.length) {
          const take = Math.min(target.length - this.partialFill, length - offset)
          target.set(chunk.subarray(offset, offset + take), this.partialFill)
          this.partialFill += take
          offset += take
          continue
        }
        const endOctet = chunk[offset++]!
        if (endOctet !== FRAME_END) throw frameError(`frame-end octet is 0x${endOctet.toString(16)}, expected 0xce`)
        this.target = undefined
        this.partialFill = 0
        this.headerFill = 0
        emit({ _tag: "BodyFrame", channel: (this.header[1]! << 8) | this.header[2]!, payload: target })
        continue
      }
      if (this.partial !== undefined) {
        const take = Math.min(this.partial.length - this.partialFill, length - offset)
        chunk.copy(this.partial, this.partialFill, offset, offset + take)
        this.partialFill += take
        offset += take
        if (this.partialFill === this.partial.length) {
          const payload = this.partial
          this.partial = undefined
          this.partialFill = 0
          emit(this.frame(this.header, 0, payload, 0, payload.length - 1))
        }
        continue
      }
      if (this.headerFill === 0 && length - offset >= HEADER_SIZE) {
        const size = this.checkSize(chunk, offset)
        const end = offset + HEADER_SIZE + size
        if (end < length) {
          emit(this.frame(chunk, offset, chunk, offset + HEADER_SIZE, end))
          offset = end + 1
          continue
        }
        chunk.copy(this.header, 0, offset, offset + HEADER_SIZE)
        this.headerFill = HEADER_SIZE
        offset += HEADER_SIZE
        this.startPartial(size)
        continue
      }
      const take = Math.min(HEADER_SIZE - this.headerFill, length - offset)
      chunk.copy(this.header, this.headerFill, offset, offset + take)
      this.headerFill += take
      offset += take
      if (this.headerFill === HEADER_SIZE) this.startPartial(this.checkSize(this.header, 0))
    }
  }

  /** Prepares to gather a frame of `size` payload bytes whose header is in `this.header`. */
  private startPartial(size: number): void {
    this.partialFill = 0
    const channel = (this.header[1]! << 8) | this.header[2]!
    if (
      this.targets && this.header[0] === FrameType.body && channel !== 0 && size > 0 && this.bodyTarget !== undefined
    ) {
      const target = this.bodyTarget(channel, size)
      if (target !== undefined && target.length === size) {
        this.target = target
        return
      }
    }
    this.partial = Buffer.allocUnsafe(size + 1)
  }

  private checkSize(buf: Buffer, at: number): number {
    const type = buf[at]!
    if (type !== FrameType.method && type !== FrameType.header && type !== FrameType.body && type !== 8) {
      throw frameError(`unknown frame type ${type}`)
    }
    const size = uint32(buf, at + 3)
    if (size + HEADER_SIZE + 1 > this.frameMax) {
      throw frameError(`frame of ${size + HEADER_SIZE + 1} bytes exceeds frame_max ${this.frameMax}`)
    }
    return size
  }

  /** Decodes one complete frame whose payload is `payload[start, end)` and whose end octet is at `end`. */
  private frame(head: Buffer, headAt: number, payload: Buffer, start: number, end: number): Frame {
    this.headerFill = 0
    if (payload[end] !== FRAME_END) {
      throw frameError(`frame-end octet is 0x${payload[end]!.toString(16)}, expected 0xce`)
    }
    const type = head[headAt]!
    const channel = (head[headAt + 1]! << 8) | head[headAt + 2]!
    switch (type) {
      case FrameType.method: {
        const r = this.reader.reset(payload, start, end)
        const method = readMethod(r)
        if (r.pos !== end) throw syntaxError(`${method._tag} has ${end - r.pos} bytes after its arguments`)
        return { _tag: "MethodFrame", channel, method }
      }
      case FrameType.header: {
        if (channel === 0) throw unexpectedFrame("content header on channel 0")
        const r = this.reader.reset(payload, start, end)
        const classId = r.short()
        const weight = r.short()
        if (weight !== 0) throw syntaxError("content header weight must be 0")
        const bodySize = r.longlong()
        const properties = readProperties(r, this.typedHeaders)
        if (r.pos !== end) throw syntaxError(`content header has ${end - r.pos} bytes after its properties`)
        return { _tag: "HeaderFrame", channel, classId, bodySize, properties }
      }
      case FrameType.body:
        if (channel === 0) throw unexpectedFrame("content body on channel 0")
        return { _tag: "BodyFrame", channel, payload: payload.subarray(start, end) }
      default:
        if (channel !== 0) throw frameError(`heartbeat on channel ${channel}`)
        if (end !== start) throw frameError("heartbeat frame with a payload")
        return { _tag: "HeartbeatFrame", channel }
    }
  }
}

const effectiveFrameMax = (frameMax: number): number =>
  frameMax === 0 ? FRAME_MAX_CEILING : Math.max(Math.min(frameMax, FRAME_MAX_CEILING), FRAME_MIN_SIZE)

const toBuffer = (chunk: Uint8Array): Buffer =>
  Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
