/**
 * A growable big-endian byte writer: the one place that knows how AMQP primitive types are laid
 * out when encoding. It writes into one `Buffer`, growing it when full, so a whole message (method,
 * content header and small bodies) ends up in one allocation.
 *
 * It can also work as a slab: `cut()` hands out the bytes written since the last cut as a view and
 * moves on, so many small messages share one allocation. Growing keeps every offset where it was,
 * because table and frame sizes are patched in place by absolute offset.
 */
import { AmqpEncodeError } from "../ProtocolError.ts"

const TWO_32 = 4294967296
const TWO_64 = 1n << 64n

// Checked rather than wrapped: a prefetch count of 70000 must not go out as 4464.
const outOfRange = (value: number, bits: number) =>
  new AmqpEncodeError({ message: `${value} is not an unsigned ${bits}-bit integer` })

/**
 * Stores a 32-bit value big-endian with plain byte stores: the caller has checked the value and
 * made room, so `Buffer.writeUInt32BE`'s own checks would only repeat that work.
 */
export const putUint32 = (buf: Uint8Array, at: number, value: number): void => {
  buf[at] = value >>> 24
  buf[at + 1] = value >>> 16
  buf[at + 2] = value >>> 8
  buf[at + 3] = value
}

const shortstrTooLong = (value: string, bytes: number) =>
  new AmqpEncodeError({ message: `short string of ${bytes} bytes exceeds 255: ${value.slice(0, 40)}...` })

export class BufferWriter {
  buf: Buffer
  pos = 0
  /** Where the bytes not yet handed out by `cut()` begin. */
  start = 0

  constructor(initialSize = 1024) {
    this.buf = Buffer.allocUnsafe(initialSize)
  }

  reset(): void {
    this.pos = 0
    this.start = 0
  }

  // The check alone, small enough for V8 to inline into every write; growing is the rare case.
  ensure(bytes: number): void {
    if (this.pos + bytes > this.buf.length) this.grow(this.pos + bytes)
  }

  private grow(needed: number): void {
    let size = this.buf.length * 2
    while (size < needed) size *= 2
    const next = Buffer.allocUnsafe(size)
    this.buf.copy(next, this.start, this.start, this.pos)
    this.buf = next
  }

  /**
   * Starts a new slab when fewer than `reserve` bytes are left, so that what was handed out before
   * is never written over.
   */
  reserve(reserve: number, slabSize: number): void {
    if (this.buf.length - this.pos >= reserve) return
    this.buf = Buffer.allocUnsafe(Math.max(slabSize, reserve))
    this.pos = 0
    this.start = 0
  }

  /** Hands out the bytes written since the last cut, as a view. */
  cut(): Buffer {
    const out = this.buf.subarray(this.start, this.pos)
    this.start = this.pos
    return out
  }

  /** The bytes written so far, as a view (not a copy) of the internal buffer. */
  view(): Buffer {
    return this.buf.subarray(0, this.pos)
  }

  /** A copy of the bytes written so far, safe to keep after the writer is reused. */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.pos)
    this.buf.copy(out, 0, 0, this.pos)
    return out
  }

  octet(value: number): void {
    if ((value & 0xff) !== value) throw outOfRange(value, 8)
    this.ensure(1)
    this.buf[this.pos++] = value
  }

  short(value: number): void {
    if ((value & 0xffff) !== value) throw outOfRange(value, 16)
    this.ensure(2)
    const buf = this.buf
    buf[this.pos++] = value >>> 8
    buf[this.pos++] = value
  }

  long(value: number): void {
    if (value >>> 0 !== value) throw outOfRange(value, 32)
    this.ensure(4)
    putUint32(this.buf, this.pos, value)
    this.pos += 4
  }

  /** An unsigned 64-bit integer given as a JavaScript number (delivery tags, body sizes). */
  longlong(value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new AmqpEncodeError({ message: `${value} is not an unsigned 64-bit integer` })
    }
    this.ensure(8)
    putUint32(this.buf, this.pos, Math.floor(value / TWO_32))
    putUint32(this.buf, this.pos + 4, value % TWO_32)
    this.pos += 8
  }

  /** An unsigned 64-bit integer given as a whole number or a bigint (a timestamp from elsewhere). */
  longlongExact(value: number | bigint): void {
    if (typeof value === "number") return this.longlong(value)
    if (typeof value !== "bigint" || value < 0n || value >= TWO_64) {
      throw new AmqpEncodeError({ message: `${value} is not an unsigned 64-bit integer` })
    }
    this.ensure(8)
    this.buf.writeBigUInt64BE(value, this.pos)
    this.pos += 8
  }

  shortstr(value: string): void {
    const length = value.length
    // Each UTF-16 unit takes at least a byte: a longer string never fits, and must not grow the buffer.
    if (length > 255) throw shortstrTooLong(value, Buffer.byteLength(value))
    this.ensure(1 + length * 3)
    const buf = this.buf
    const start = this.pos + 1
    if (length < 48) {
      let i = 0
      for (; i < length; i++) {
        const code = value.charCodeAt(i)
        if (code > 127) break
        buf[start + i] = code
      }
      if (i === length) {
        buf[this.pos] = length
        this.pos = start + length
        return
      }
    }
    const written = buf.write(value, start, "utf8")
    if (written > 255) throw shortstrTooLong(value, written)
    buf[this.pos] = written
    this.pos = start + written
  }

  longstr(value: string | Uint8Array): void {
    if (typeof value === "string") {
      this.ensure(4 + value.length * 3)
      const written = this.buf.write(value, this.pos + 4, "utf8")
      this.buf.writeUInt32BE(written, this.pos)
      this.pos += 4 + written
    } else {
      this.long(value.length)
      this.bytes(value)
    }
  }

  bytes(value: Uint8Array): void {
    this.ensure(value.length)
    this.buf.set(value, this.pos)
    this.pos += value.length
  }
}
