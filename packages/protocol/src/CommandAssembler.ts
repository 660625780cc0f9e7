/**
 * Reassembles commands from the frames of one channel: a method, and for content-carrying methods
 * (`basic.deliver`, `basic.get-ok`, `basic.return`, `basic.publish`) the content header and body
 * frames that must follow it with nothing else in between.
 *
 * A frame out of that order is a 505 UNEXPECTED_FRAME; a body longer than its header announced, a
 * header of another class than its method, or a heartbeat here is a 501 FRAME_ERROR; a
 * `connection` method, which belongs on channel 0, is a 503 COMMAND_INVALID. A body that arrives
 * in one frame is passed on without a copy.
 *
 * @since 0.1.0
 */
import { type BodyFrame, type Frame, FRAME_OVERHEAD, type HeaderFrame } from "./Frame.ts"
import { type Method, methodInfo } from "./generated/Methods.ts"
import type { BasicProperties } from "./Properties.ts"
import { commandInvalid, frameError, unexpectedFrame } from "./ProtocolError.ts"

/**
 * A method with its content, if it carries any.
 *
 * @since 0.1.0
 * @category models
 */
export interface Command {
  readonly channel: number
  readonly method: Method
  readonly properties?: BasicProperties
  readonly body?: Uint8Array
}

const EMPTY = new Uint8Array(0)

const CONNECTION_CLASS = 10
const BASIC_CLASS = 60

/**
 * The largest body given one buffer up front (RabbitMQ's default max_message_size); larger ones
 * are joined at the end.
 */
const MAX_PREALLOCATED = 128 * 1024 * 1024

/**
 * @since 0.1.0
 * @category decoding
 */
export class CommandAssembler {
  private method: Method | undefined
  private header: HeaderFrame | undefined
  /** Body frames received so far; joined only once the body is complete. */
  private chunks: Array<Uint8Array> = []
  private received = 0
  /**
   * Where the last body frame's payload ended in its buffer, while every frame so far has been
   * laid out back to back in one buffer (frames decoded in place from one socket chunk).
   */
  private runEnd = -1
  /** The whole body, allocated once a body frame had to be gathered across chunks. */
  private body: Buffer | undefined

  readonly channel: number
  private readonly joinInPlace: boolean

  /**
   * `joinInPlace`: the frames' memory belongs to the assembler (fresh socket chunks, say), so a
   * body over several frames of one chunk may be joined by moving bytes inside that chunk instead
   * of copying the body. Off by default: the caller's buffers are left untouched.
   */
  constructor(channel: number, options?: { readonly joinInPlace?: boolean }) {
    this.channel = channel
    this.joinInPlace = options?.joinInPlace === true
  }

  /** True while a content-carrying method waits for its header or body. */
  get inProgress(): boolean {
    return this.method !== undefined
  }

  /** Feeds one frame of this channel; returns the command it completed, if any. */
  push(frame: Frame): Command | undefined {
    switch (frame._tag) {
      case "MethodFrame": {
        if (this.method !== undefined) {
          throw unexpectedFrame(
            `${frame.method._tag} on channel ${this.channel} while content of ${this.method._tag} was expected`
          )
        }
        // The message of most frames read: known to carry content, it skips the table lookup.
        if (frame.method._tag === "basic.deliver") {
          this.method = frame.method
          return undefined
        }
        const info = methodInfo[frame.method._tag]
        if (info.classId === CONNECTION_CLASS && this.channel !== 0) {
          throw commandInvalid(`${frame.method._tag} on channel ${this.channel}; connection methods go on channel 0`)
        }
        if (!info.content) return { channel: this.channel, method: frame.method }
        this.method = frame.method
        return undefined
      }
      case "HeaderFrame":
        return this.onHeader(frame)
      case "BodyFrame":
        return this.onBody(frame)
      case "HeartbeatFrame":
        throw frameError(`heartbeat on channel ${this.channel}`)
    }
  }

  /** Forgets a partly received command, as when the channel closes. */
  reset(): void {
    this.method = undefined
    this.header = undefined
    // Writing an array's length is a call into the engine; a body in one frame never used it.
    if (this.chunks.length !== 0) this.chunks.length = 0
    this.received = 0
    this.runEnd = -1
    this.body = undefined
  }

  /**
   * The place for the next body frame's `size` payload bytes in the message's body, for a frame
   * the decoder must gather across chunks: it then lands where it belongs and is not copied again.
   * Only for a body of at most `MAX_PREALLOCATED` bytes, whose frames so far fit what the header
   * announced; otherwise undefined.
   */
  bodyTarget(size: number): Uint8Array | undefined {
    const header = this.header
    if (header === undefined || this.received + size > header.bodySize || header.bodySize > MAX_PREALLOCATED) {
      return undefined
    }
    if (this.body === undefined) {
      const body = Buffer.allocUnsafe(header.bodySize)
      let at = 0
      for (const chunk of this.chunks) {
        body.set(chunk, at)
        at += chunk.length
      }
      this.chunks.length = 0
      this.runEnd = -1
      this.body = body
    }
    return this.body.subarray(this.received, this.received + size)
  }

  private onHeader(frame: HeaderFrame): Command | undefined {
    if (this.method === undefined || this.header !== undefined) {
      throw unexpectedFrame(`content header on channel ${this.channel} without a content method`)
    }
    // Only methods of the basic class carry content in 0-9-1.
    if (frame.classId !== BASIC_CLASS) {
      throw frameError(`content header of class ${frame.classId} after ${this.method._tag} (class ${BASIC_CLASS})`)
    }
    this.header = frame
    if (frame.bodySize === 0) return this.complete(EMPTY)
    return undefined
  }

  private onBody(frame: BodyFrame): Command | undefined {
    const header = this.header
    if (header === undefined) throw unexpectedFrame(`content body on channel ${this.channel} without a header`)
    const chunk = frame.payload
    const total = this.received + chunk.length
    if (total > header.bodySize) {
      throw frameError(`content body of ${total} bytes exceeds the ${header.bodySize} its header announced`)
    }
    if (total === header.bodySize && this.received === 0) return this.complete(chunk)
    const body = this.body
    if (body !== undefined) {
      // Gathered in place by the decoder, or a whole frame to copy to its place.
      if (chunk.buffer !== body.buffer || chunk.byteOffset !== body.byteOffset + this.received) {
        body.set(chunk, this.received)
      }
      this.received = total
      return total === header.bodySize ? this.complete(body) : undefined
    }
    if (chunk.length > 0 && !(this.joinInPlace && this.extendRun(chunk))) {
      // Memory follows the bytes that arrived, never the size the header announced.
      this.chunks.push(chunk)
      this.runEnd = this.chunks.length === 1 ? chunk.byteOffset + chunk.length : -1
    }
    this.received = total
    if (total === header.bodySize) {
      return this.complete(this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, total))
    }
    return undefined
  }

  /**
   * Joins a body frame that follows the previous one in the same buffer, 8 bytes of frame-end and
   * frame header later, by moving it back over those 8 bytes: the body then stays one view of the
   * decoder's buffer, and only the later frame's bytes move, not the whole body. Those 8 bytes were
   * already decoded, and nothing else lives between the two payloads.
   */
  private extendRun(chunk: Uint8Array): boolean {
    const run = this.chunks.length === 1 ? this.chunks[0]! : undefined
    if (run === undefined || run.buffer !== chunk.buffer || chunk.byteOffset !== this.runEnd + FRAME_OVERHEAD) {
      return false
    }
    const memory = new Uint8Array(run.buffer)
    const runEnd = run.byteOffset + run.length
    memory.copyWithin(runEnd, chunk.byteOffset, chunk.byteOffset + chunk.length)
    this.chunks[0] = new Uint8Array(run.buffer, run.byteOffset, run.length + chunk.length)
    this.runEnd = chunk.byteOffset + chunk.length
    return true
  }

  private complete(body: Uint8Array): Command {
    const command: Command = {
      channel: this.channel,
      method: this.method!,
      properties: this.header!.properties,
      body
    }
    this.reset()
    return command
  }
}
