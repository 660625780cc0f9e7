/**
 * One delivery as one line of JSON, for `effect-amqp consume --print`: where it came from, its
 * properties, its headers with their AMQP field types, and its body as text when it is valid UTF-8
 * (base64 otherwise, with `bodyEncoding` saying which).
 *
 * Header values become `{ "type": "<field type>", "value": ... }`. Values JSON cannot carry exactly
 * are written as strings: 64-bit integers (`l`), non-finite floats, byte arrays (`x`, base64) and
 * timestamps (`T`, ISO 8601, or the seconds when a Date cannot hold them), as is a `timestamp`
 * property past 2^53 - 1. A long string (`S`) that is not UTF-8 is base64, with `"encoding":
 * "base64"` beside it. Decimals (`D`) become `{ "scale", "value" }`, and arrays and tables hold
 * typed values in turn.
 *
 * @since 0.1.0
 */
import type { AmqpChannel } from "@effect-amqp/client"
import { Decimal, type FieldTable, type FieldType, type FieldValue, Typed } from "@effect-amqp/protocol"

/**
 * A JSON value.
 *
 * @since 0.1.0
 * @category models
 */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/**
 * The field type of a plain header value: the type the client decoded it as when the connection
 * does not keep types, which is the type it would encode the value with. It is not always the type
 * on the wire: without `typedHeaders` a `b`, `B`, `s`, `u` or `i` decodes to a number and reads
 * here as `I` (or `l`, `d`), and an `f` reads as `d`. A `Typed` value gives its own type.
 *
 * @since 0.1.0
 * @category field types
 */
export const fieldTypeOf = (value: FieldValue): FieldType => {
  switch (typeof value) {
    case "boolean":
      return "t"
    case "string":
      return "S"
    case "bigint":
      return "l"
    case "number":
      if (Number.isInteger(value) && value >= -2147483648 && value <= 2147483647) return "I"
      return Number.isSafeInteger(value) ? "l" : "d"
    default:
      if (value === null) return "V"
      if (value instanceof Typed) return value.type
      if (value instanceof Uint8Array) return "x"
      if (value instanceof Date) return "T"
      if (value instanceof Decimal) return "D"
      if (Array.isArray(value)) return "A"
      return "F"
  }
}

const base64 = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64")

const plainJson = (value: FieldValue): Json => {
  switch (typeof value) {
    case "boolean":
    case "string":
      return value
    case "bigint":
      return value.toString()
    case "number":
      return Number.isFinite(value) ? value : String(value)
    default:
      if (value === null) return null
      if (value instanceof Typed) return plainJson(value.value)
      if (value instanceof Uint8Array) return base64(value)
      if (value instanceof Date) return Number.isNaN(value.getTime()) ? "Invalid Date" : value.toISOString()
      if (value instanceof Decimal) return { scale: value.scale, value: value.value }
      if (Array.isArray(value)) return (value as ReadonlyArray<FieldValue>).map(typedJson)
      return tableJson(value as FieldTable)
  }
}

/**
 * A field value as `{ type, value }`, nested values included.
 *
 * @since 0.1.0
 * @category encoding
 */
export const typedJson = (value: FieldValue): Json => {
  if (value instanceof Typed) {
    // A long string that is not UTF-8 arrives as bytes: base64, and said so.
    if (value.type === "S" && value.value instanceof Uint8Array) {
      return { type: "S", value: base64(value.value), encoding: "base64" }
    }
    return { type: value.type, value: plainJson(value.value) }
  }
  return { type: fieldTypeOf(value), value: plainJson(value) }
}

/**
 * A field table with each value as `{ type, value }`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const tableJson = (table: FieldTable): { readonly [key: string]: Json } => {
  const out: Record<string, Json> = {}
  for (const key of Object.keys(table)) {
    const value = table[key]
    if (value !== undefined) out[key] = typedJson(value)
  }
  return out
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/**
 * The body as text when it is valid UTF-8, else as base64.
 *
 * @since 0.1.0
 * @category encoding
 */
export const bodyJson = (body: Uint8Array): { readonly body: string; readonly bodyEncoding: "utf8" | "base64" } => {
  try {
    return { body: utf8.decode(body), bodyEncoding: "utf8" }
  } catch {
    return { body: base64(body), bodyEncoding: "base64" }
  }
}

/**
 * The JSON object of one delivery.
 *
 * @since 0.1.0
 * @category encoding
 */
export const deliveryJson = (
  delivery: Pick<AmqpChannel.Delivery, "exchange" | "routingKey" | "redelivered" | "properties" | "body">
): { readonly [key: string]: Json } => {
  const { headers, timestamp, ...properties } = delivery.properties
  return {
    exchange: delivery.exchange,
    routingKey: delivery.routingKey,
    redelivered: delivery.redelivered,
    properties: {
      ...properties,
      // A timestamp past 2^53 - 1 arrives as a bigint, which JSON writes as a string.
      ...(timestamp !== undefined ? { timestamp: typeof timestamp === "bigint" ? String(timestamp) : timestamp } : {})
    },
    headers: headers === undefined ? {} : tableJson(headers),
    size: delivery.body.length,
    ...bodyJson(delivery.body)
  }
}
