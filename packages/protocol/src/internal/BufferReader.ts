/**
 * A bounds-checked big-endian byte reader over one frame payload. Every read checks the payload's
 * end first, so truncated input becomes a typed 501 FRAME_ERROR instead of a `RangeError`.
 */
import { isUtf8 } from "node:buffer"
import { frameError, syntaxError } from "../ProtocolError.ts"

const TWO_32 = 4294967296

/**
 * Short strings repeat from message to message: table keys (`x-death`, `x-retries`), consumer
 * tags, exchanges and routing keys of deliveries. Remembering the string for their bytes saves
 * decoding it (and, for keys, the engine's interning it as a property name) again. The cache maps
 * a hash of the bytes to one entry per slot; a colliding string replaces it.
 */
const KEY_CACHE_SLOTS = 1024
const KEY_CACHE_MAX_LENGTH = 64
const cachedKeyBytes: Array<Uint8Array | undefined> = Array.from({ length: KEY_CACHE_SLOTS }, () => undefined)
const cachedKeys: Array<string> = Array.from({ length: KEY_CACHE_SLOTS }, () => "")

/**
 * A big-endian unsigned 32-bit integer at `at`, which the caller has bounds-checked. Plain index
 * reads: `Buffer#readUInt32BE` checks the bounds again and costs a call the engine does not inline.
 */
export const uint32 = (buf: Uint8Array, at: number): number =>
  buf[at]! * 0x1000000 + ((buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!)

export class BufferReader {
  buf: Buffer
  pos: number
  end: number

  constructor(buf: Buffer, pos: number, end: number) {
    this.buf = buf
    this.pos = pos
    this.end = end
  }

  /** Points the reader at `buf[pos, end)`: a decoder reads every frame with one reader. */
  reset(buf: Buffer, pos: number, end: number): this {
    this.buf = buf
    this.pos = pos
    this.end = end
    return this
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
    const value = uint32(this.buf, this.pos)
    this.pos += 4
    return value
  }

  /** A fixed-size value (a signed integer, a float) read by `read`: bounds-checked, then skipped. */
  fixed<A>(size: number, read: (buf: Buffer, at: number) => A): A {
    this.need(size)
    const value = read(this.buf, this.pos)
    this.pos += size
    return value
  }

  /** An unsigned 64-bit integer as a number; values past 2^53 are refused as a syntax error. */
  longlong(): number {
    this.need(8)
    const high = uint32(this.buf, this.pos)
    const low = uint32(this.buf, this.pos + 4)
    this.pos += 8
    if (high >= 0x200000) throw syntaxError("64-bit value exceeds 2^53")
    return high * TWO_32 + low
  }

  /** An unsigned 64-bit integer: a number up to 2^53 - 1, a bigint past it. */
  longlongExact(): number | bigint {
    this.need(8)
    const high = uint32(this.buf, this.pos)
    const low = uint32(this.buf, this.pos + 4)
    this.pos += 8
    if (high < 0x200000) return high * TWO_32 + low
    return (BigInt(high) << 32n) | BigInt(low)
  }

  /** A short string, from the cache when the same bytes were seen recently. */
  shortstr(): string {
    const length = this.octet()
    this.need(length)
    const buf = this.buf
    const start = this.pos
    const end = start + length
    this.pos = end
    if (length === 0) return ""
    if (length > KEY_CACHE_MAX_LENGTH) return buf.toString("utf8", start, end)
    // The slot comes from the length and five sampled bytes (both ends, the middle): a constant
    // cost, where hashing every byte cost as much as the comparison below. Strings that differ
    // only elsewhere share a slot and take turns in it; the comparison keeps every answer right.
    let hash = Math.imul(length ^ buf[start]!, 0x01000193)
    hash = Math.imul(hash ^ buf[end - 1]!, 0x01000193)
    hash = Math.imul(hash ^ buf[start + (length >> 1)]!, 0x01000193)
    hash = Math.imul(hash ^ buf[start + (length >> 2)]!, 0x01000193)
    hash = Math.imul(hash ^ buf[end - 1 - (length >> 2)]!, 0x01000193)
    const slot = (hash ^ (hash >>> 15)) & (KEY_CACHE_SLOTS - 1)
    const cached = cachedKeyBytes[slot]
    if (cached !== undefined && cached.length === length) {
      let i = 0
      while (i < length && cached[i] === buf[start + i]) i++
      if (i === length) return cachedKeys[slot]!
    }
    const key = buf.toString("utf8", start, end)
    cachedKeyBytes[slot] = Uint8Array.prototype.slice.call(buf, start, end)
    cachedKeys[slot] = key
    return key
  }

  longstr(): string {
    const length = this.long()
    return this.utf8(length)
  }

  /** A long string as text when it is UTF-8, else as a copy of its bytes, which text would lose. */
  longstrExact(): string | Uint8Array {
    const length = this.long()
    this.need(length)
    const start = this.pos
    this.pos += length
    const view = this.buf.subarray(start, start + length)
    return isUtf8(view) ? view.toString("utf8") : Uint8Array.prototype.slice.call(view)
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
