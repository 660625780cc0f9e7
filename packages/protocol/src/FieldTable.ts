/**
 * AMQP field tables and arrays with every value type RabbitMQ uses: t b B s u I i l f d D S A T F
 * V x. Decoded 64-bit integers are numbers (`bigint` beyond 2^53, or always when typed), decimals
 * are `Decimal`, void is `null`, byte arrays are
 * `Uint8Array`, timestamps are `Date` (or, beyond a `Date`'s range, `Typed("T", seconds)` with the
 * seconds a `bigint`), long strings are text (or, when not UTF-8, `Typed("S", bytes)`), nested
 * tables are prototype-free objects so that a key such as `__proto__` is plain data. Encoding
 * infers the type RabbitMQ accepts for each JavaScript value; `Typed` forces a specific one.
 *
 * This module does not know about frames or methods.
 *
 * @since 0.1.0
 */
import { BufferReader } from "./internal/BufferReader.ts"
import { BufferWriter } from "./internal/BufferWriter.ts"
import { AmqpEncodeError, syntaxError } from "./ProtocolError.ts"

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER)
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

/**
 * A signed 64-bit integer as a number while it is one exactly (within 2^53), else as a bigint:
 * RabbitMQ writes counts as `l` (an `x-death` entry's `count`), which then add up and serialise
 * like any number. `typed: true` gives every `l` as a bigint, with its type.
 */
const readInt64 = (buf: Buffer, at: number): number | bigint => {
  const value = buf.readBigInt64BE(at)
  return value >= MIN_SAFE && value <= MAX_SAFE ? Number(value) : value
}

const readBigInt64 = (buf: Buffer, at: number): bigint => buf.readBigInt64BE(at)
/**
 * The one-letter type codes of field values.
 *
 * @since 0.1.0
 * @category models
 */
export type FieldType =
  | "t"
  | "b"
  | "B"
  | "s"
  | "u"
  | "I"
  | "i"
  | "l"
  | "f"
  | "d"
  | "D"
  | "S"
  | "A"
  | "T"
  | "F"
  | "V"
  | "x"

/**
 * A fixed-point decimal: `value / 10^scale`.
 *
 * @since 0.1.0
 * @category models
 */
export class Decimal {
  readonly scale: number
  readonly value: number

  constructor(scale: number, value: number) {
    this.scale = scale
    this.value = value
  }
}

/**
 * A value with an explicit AMQP type, for encoding a type that inference would not pick and for
 * decoding with types kept (`decodeTableTyped`).
 *
 * @since 0.1.0
 * @category models
 */
export class Typed {
  readonly type: FieldType
  readonly value: FieldValue

  constructor(type: FieldType, value: FieldValue) {
    this.type = type
    this.value = value
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export type FieldValue =
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Date
  | Decimal
  | Typed
  | null
  | ReadonlyArray<FieldValue>
  | FieldTable

/**
 * @since 0.1.0
 * @category models
 */
export interface FieldTable {
  readonly [key: string]: FieldValue | undefined
}

/** The seconds a `Date` can hold either side of 1970 (8.64e15 milliseconds). */
const DATE_RANGE_SECONDS = 8_640_000_000_000n

/**
 * How deeply tables and arrays may nest, in both directions.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxDepth = 64

// ---------------------------------------------------------------------------------------------
// encoding
// ---------------------------------------------------------------------------------------------

const INT32_MIN = -2147483648
const INT32_MAX = 2147483647
const TWO_63 = 2 ** 63
const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n

const encodeError = (message: string) => new AmqpEncodeError({ message })

const isPlainTable = (value: object): value is FieldTable => {
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

/** @internal */
export const writeTable = (w: BufferWriter, table: FieldTable | undefined, depth = 0): void => {
  if (depth > maxDepth) throw encodeError(`field table nested deeper than ${maxDepth}`)
  const sizeAt = w.pos
  w.long(0)
  if (table !== undefined) {
    for (const key in table) {
      const value = table[key]
      if (value === undefined) continue
      w.shortstr(key)
      writeValue(w, value, depth + 1)
    }
  }
  w.buf.writeUInt32BE(w.pos - sizeAt - 4, sizeAt)
}

const writeArray = (w: BufferWriter, values: ReadonlyArray<FieldValue>, depth: number): void => {
  if (depth > maxDepth) throw encodeError(`field array nested deeper than ${maxDepth}`)
  const sizeAt = w.pos
  w.long(0)
  for (const value of values) writeValue(w, value, depth + 1)
  w.buf.writeUInt32BE(w.pos - sizeAt - 4, sizeAt)
}

const writeValue = (w: BufferWriter, value: FieldValue, depth: number): void => {
  switch (typeof value) {
    case "string":
      w.octet(0x53) // S
      return w.longstr(value)
    case "boolean":
      w.octet(0x74) // t
      return w.octet(value ? 1 : 0)
    case "number":
      if (Number.isInteger(value)) {
        if (value >= INT32_MIN && value <= INT32_MAX) return writeTyped(w, "I", value, depth)
        // Past 2^53 a number is still an exact integer; RabbitMQ refuses a double where it wants one.
        if (value >= -TWO_63 && value < TWO_63) return writeTyped(w, "l", BigInt(value), depth)
      }
      return writeTyped(w, "d", value, depth)
    case "bigint":
      return writeTyped(w, "l", value, depth)
    case "object":
      if (value === null) return w.octet(0x56) // V
      if (value instanceof Typed) return writeTyped(w, value.type, value.value, depth)
      if (value instanceof Uint8Array) return writeTyped(w, "x", value, depth)
      if (value instanceof Date) return writeTyped(w, "T", value, depth)
      if (value instanceof Decimal) return writeTyped(w, "D", value, depth)
      if (Array.isArray(value)) {
        w.octet(0x41) // A
        return writeArray(w, value as ReadonlyArray<FieldValue>, depth)
      }
      if (isPlainTable(value)) {
        w.octet(0x46) // F
        return writeTable(w, value as FieldTable, depth)
      }
      throw encodeError(`a ${value.constructor?.name ?? "object"} has no AMQP field type`)
    default:
      throw encodeError(`a ${typeof value} has no AMQP field type`)
  }
}

const expectInteger = (type: FieldType, value: FieldValue, min: number, max: number): number => {
  const n = typeof value === "bigint" ? Number(value) : value
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    throw encodeError(`${String(value)} does not fit field type '${type}'`)
  }
  return n
}

const writeTyped = (w: BufferWriter, type: FieldType, value: FieldValue, depth: number): void => {
  w.octet(type.charCodeAt(0))
  switch (type) {
    case "t":
      if (typeof value !== "boolean") throw encodeError(`field type 't' needs a boolean`)
      return w.octet(value ? 1 : 0)
    case "b":
      w.ensure(1)
      w.buf.writeInt8(expectInteger(type, value, -128, 127), w.pos)
      w.pos += 1
      return
    case "B":
      return w.octet(expectInteger(type, value, 0, 255))
    case "s":
      w.ensure(2)
      w.buf.writeInt16BE(expectInteger(type, value, -32768, 32767), w.pos)
      w.pos += 2
      return
    case "u":
      return w.short(expectInteger(type, value, 0, 65535))
    case "I":
      w.ensure(4)
      w.buf.writeInt32BE(expectInteger(type, value, INT32_MIN, INT32_MAX), w.pos)
      w.pos += 4
      return
    case "i":
      return w.long(expectInteger(type, value, 0, 4294967295))
    case "l": {
      const big = typeof value === "bigint" ? value : typeof value === "number" && Number.isInteger(value)
        ? BigInt(value)
        : undefined
      if (big === undefined || big < INT64_MIN || big > INT64_MAX) {
        throw encodeError(`${String(value)} does not fit field type 'l'`)
      }
      w.ensure(8)
      w.buf.writeBigInt64BE(big, w.pos)
      w.pos += 8
      return
    }
    case "f":
    case "d": {
      if (typeof value !== "number") throw encodeError(`field type '${type}' needs a number`)
      w.ensure(8)
      if (type === "f") {
        w.buf.writeFloatBE(value, w.pos)
        w.pos += 4
      } else {
        w.buf.writeDoubleBE(value, w.pos)
        w.pos += 8
      }
      return
    }
    case "D": {
      if (!(value instanceof Decimal)) throw encodeError(`field type 'D' needs a Decimal`)
      w.octet(expectInteger(type, value.scale, 0, 255))
      w.ensure(4)
      w.buf.writeInt32BE(expectInteger(type, value.value, INT32_MIN, INT32_MAX), w.pos)
      w.pos += 4
      return
    }
    case "S":
      if (typeof value === "string" || value instanceof Uint8Array) return w.longstr(value)
      throw encodeError(`field type 'S' needs a string or bytes`)
    case "x":
      if (value instanceof Uint8Array) return w.longstr(value)
      throw encodeError(`field type 'x' needs a Uint8Array`)
    case "T": {
      const seconds = value instanceof Date ? Math.floor(value.getTime() / 1000) : value
      const whole = typeof seconds === "number"
        ? Number.isSafeInteger(seconds)
        : typeof seconds === "bigint" && BigInt.asIntN(64, seconds) === seconds
      if (!whole) throw encodeError(`field type 'T' needs a Date or whole seconds (64 bits)`)
      w.ensure(8)
      w.buf.writeBigInt64BE(BigInt(seconds as number | bigint), w.pos)
      w.pos += 8
      return
    }
    case "A":
      if (!Array.isArray(value)) throw encodeError(`field type 'A' needs an array`)
      return writeArray(w, value as ReadonlyArray<FieldValue>, depth)
    case "F":
      if (value === null || typeof value !== "object" || !isPlainTable(value)) {
        throw encodeError(`field type 'F' needs a table`)
      }
      return writeTable(w, value as FieldTable, depth)
    case "V":
      return
    default:
      throw encodeError(`unknown field type '${String(type satisfies never)}'`)
  }
}

// ---------------------------------------------------------------------------------------------
// decoding
// ---------------------------------------------------------------------------------------------

/** @internal */
export const readTable = (r: BufferReader, typed = false, depth = 0): FieldTable => {
  if (depth > maxDepth) throw syntaxError(`field table nested deeper than ${maxDepth}`)
  const size = r.long()
  r.need(size)
  const end = r.pos + size
  const table: Record<string, FieldValue> = Object.create(null)
  while (r.pos < end) {
    const key = r.shortstr()
    table[key] = readValue(r, end, typed, depth + 1)
  }
  if (r.pos !== end) throw syntaxError("field table overruns its declared size")
  return table
}

const readArray = (r: BufferReader, typed: boolean, depth: number): Array<FieldValue> => {
  if (depth > maxDepth) throw syntaxError(`field array nested deeper than ${maxDepth}`)
  const size = r.long()
  r.need(size)
  const end = r.pos + size
  const values: Array<FieldValue> = []
  while (r.pos < end) values.push(readValue(r, end, typed, depth + 1))
  if (r.pos !== end) throw syntaxError("field array overruns its declared size")
  return values
}

const readValue = (r: BufferReader, end: number, typed: boolean, depth: number): FieldValue => {
  if (r.pos >= end) throw syntaxError("field value missing its type")
  const code = r.octet()
  const type = String.fromCharCode(code) as FieldType
  const value = readRaw(r, type, typed, depth)
  if (r.pos > end) throw syntaxError("field value overruns its table")
  return typed ? new Typed(type, value) : value
}

const readRaw = (r: BufferReader, type: FieldType, typed: boolean, depth: number): FieldValue => {
  switch (type) {
    case "t":
      return r.octet() !== 0
    case "b":
      return r.fixed(1, (buf, at) => buf.readInt8(at))
    case "B":
      return r.octet()
    case "s":
      return r.fixed(2, (buf, at) => buf.readInt16BE(at))
    case "u":
      return r.short()
    case "I":
      return r.fixed(4, (buf, at) => buf.readInt32BE(at))
    case "i":
      return r.long()
    case "l":
      return r.fixed(8, typed ? readBigInt64 : readInt64)
    case "f":
      return r.fixed(4, (buf, at) => buf.readFloatBE(at))
    case "d":
      return r.fixed(8, (buf, at) => buf.readDoubleBE(at))
    case "D": {
      const scale = r.octet()
      return new Decimal(scale, r.fixed(4, (buf, at) => buf.readInt32BE(at)))
    }
    case "S": {
      const value = r.longstrExact()
      // Bytes that are not UTF-8 (some clients put binary data here) stay bytes, still an `S`.
      return typeof value === "string" || typed ? value : new Typed("S", value)
    }
    case "x":
      return Uint8Array.prototype.slice.call(r.longstrBytes())
    case "T": {
      const seconds = r.fixed(8, (buf, at) => buf.readBigInt64BE(at))
      if (seconds >= -DATE_RANGE_SECONDS && seconds <= DATE_RANGE_SECONDS) return new Date(Number(seconds) * 1000)
      // Beyond what a Date holds (nanoseconds from another client, say): kept exact, as `T`.
      return typed ? seconds : new Typed("T", seconds)
    }
    case "A":
      return readArray(r, typed, depth)
    case "F":
      return readTable(r, typed, depth)
    case "V":
      return null
    default:
      throw syntaxError(`unknown field type 0x${(type as string).charCodeAt(0).toString(16)}`)
  }
}

// ---------------------------------------------------------------------------------------------
// standalone helpers
// ---------------------------------------------------------------------------------------------

/**
 * Encodes a table with its 4-byte size prefix.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeTable = (table: FieldTable): Uint8Array => {
  const w = new BufferWriter(256)
  writeTable(w, table)
  return w.take()
}

/**
 * Decodes a table with its 4-byte size prefix; trailing bytes are a syntax error.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeTable = (bytes: Uint8Array, options?: { readonly typed?: boolean }): FieldTable => {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const r = new BufferReader(buf, 0, buf.length)
  const table = readTable(r, options?.typed === true)
  if (r.pos !== buf.length) throw syntaxError("bytes after the field table")
  return table
}
