/**
 * A bounds-checked big-endian byte reader over one frame payload. Every read checks the payload's
 * end first, so truncated input becomes a typed 501 FRAME_ERROR instead of a `RangeError`.
 */
import { frameError, syntaxError } from "../ProtocolError.ts"

const TWO_32 = 4294967296

export class BufferReader {
  readonly buf: Buffer
  pos: number
  readonly end: number

  constructor(buf: Buffer, pos: number, end: number) {
    this.buf = buf
    this.pos = pos
    this.end = end
  }

  need(bytes: number): void {
    if (this.pos + bytes > this.end) {
      throw frameError(`payload truncated: needed ${bytes} more bytes at offset ${this.pos}`)
    }
  }

  remaining(): number {
    return this.end - this.pos
  }

  octet(): number {
    this.need(1)
    return this.buf[this.pos++]!
  }

  short(): number {
    this.need(2)
    const value = (this.buf[this.pos]! << 8) | this.buf[this.pos + 1]!
    this.pos += 2
    return value
  }

  long(): number {
    this.need(4)
    const value = this.buf.readUInt32BE(this.pos)
    this.pos += 4
    return value
  }

  /** An unsigned 64-bit integer as a number; values past 2^53 are refused as a syntax error. */
  longlong(): number {
    this.need(8)
    const high = this.buf.readUInt32BE(this.pos)
    const low = this.buf.readUInt32BE(this.pos + 4)
    this.pos += 8
    if (high >= 0x200000) throw syntaxError("64-bit value exceeds 2^53")
    return high * TWO_32 + low
  }

  shortstr(): string {
    const length = this.octet()
    return this.utf8(length)
  }

  longstr(): string {
    const length = this.long()
    return this.utf8(length)
  }

  longstrBytes(): Uint8Array {
    const length = this.long()
    return this.bytes(length)
  }

  utf8(length: number): string {
    this.need(length)
    const start = this.pos
    this.pos += length
    return this.buf.toString("utf8", start, start + length)
  }

  bytes(length: number): Uint8Array {
    this.need(length)
    const out = this.buf.subarray(this.pos, this.pos + length)
    this.pos += length
    return out
  }
}
