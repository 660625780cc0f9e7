/**
 * The 14 content-header properties of the basic class and their flag word. A property is present
 * on the wire exactly when its flag bit is set; absent properties are absent keys here.
 *
 * @since 0.1.0
 */
import { type FieldTable, readTable, writeTable } from "./FieldTable.ts"
import type { BufferReader } from "./internal/BufferReader.ts"
import type { BufferWriter } from "./internal/BufferWriter.ts"
import { syntaxError } from "./ProtocolError.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface BasicProperties {
  readonly contentType?: string
  readonly contentEncoding?: string
  readonly headers?: FieldTable
  /** 1 = transient, 2 = persistent. */
  readonly deliveryMode?: number
  readonly priority?: number
  readonly correlationId?: string
  readonly replyTo?: string
  readonly expiration?: string
  readonly messageId?: string
  /**
   * Seconds since the Unix epoch, a whole number. A timestamp past 2^53 - 1 (another client may
   * send nanoseconds) is decoded as a bigint, so that no bits are lost.
   */
  readonly timestamp?: number | bigint
  readonly type?: string
  readonly userId?: string
  readonly appId?: string
  readonly clusterId?: string
}

const CONTENT_TYPE = 0x8000
const CONTENT_ENCODING = 0x4000
const HEADERS = 0x2000
const DELIVERY_MODE = 0x1000
const PRIORITY = 0x0800
const CORRELATION_ID = 0x0400
const REPLY_TO = 0x0200
const EXPIRATION = 0x0100
const MESSAGE_ID = 0x0080
const TIMESTAMP = 0x0040
const TYPE = 0x0020
const USER_ID = 0x0010
const APP_ID = 0x0008
const CLUSTER_ID = 0x0004
const UNDEFINED_FLAG = 0x0002
const CONTINUATION = 0x0001

/** @internal */
export const writeProperties = (w: BufferWriter, p: BasicProperties): void => {
  const flagsAt = w.pos
  w.short(0)
  let flags = 0
  if (p.contentType !== undefined) {
    flags |= CONTENT_TYPE
    w.shortstr(p.contentType)
  }
  if (p.contentEncoding !== undefined) {
    flags |= CONTENT_ENCODING
    w.shortstr(p.contentEncoding)
  }
  if (p.headers !== undefined) {
    flags |= HEADERS
    writeTable(w, p.headers)
  }
  if (p.deliveryMode !== undefined) {
    flags |= DELIVERY_MODE
    w.octet(p.deliveryMode)
  }
  if (p.priority !== undefined) {
    flags |= PRIORITY
    w.octet(p.priority)
  }
  if (p.correlationId !== undefined) {
    flags |= CORRELATION_ID
    w.shortstr(p.correlationId)
  }
  if (p.replyTo !== undefined) {
    flags |= REPLY_TO
    w.shortstr(p.replyTo)
  }
  if (p.expiration !== undefined) {
    flags |= EXPIRATION
    w.shortstr(p.expiration)
  }
  if (p.messageId !== undefined) {
    flags |= MESSAGE_ID
    w.shortstr(p.messageId)
  }
  if (p.timestamp !== undefined) {
    flags |= TIMESTAMP
    w.longlongExact(p.timestamp)
  }
  if (p.type !== undefined) {
    flags |= TYPE
    w.shortstr(p.type)
  }
  if (p.userId !== undefined) {
    flags |= USER_ID
    w.shortstr(p.userId)
  }
  if (p.appId !== undefined) {
    flags |= APP_ID
    w.shortstr(p.appId)
  }
  if (p.clusterId !== undefined) {
    flags |= CLUSTER_ID
    w.shortstr(p.clusterId)
  }
  w.buf[flagsAt] = flags >>> 8
  w.buf[flagsAt + 1] = flags & 0xff
}

/** @internal */
export const readProperties = (r: BufferReader, typedHeaders = false): BasicProperties => {
  const flags = r.short()
  if ((flags & UNDEFINED_FLAG) !== 0) throw syntaxError("content header sets an undefined property flag")
  if ((flags & CONTINUATION) !== 0) {
    let more = r.short()
    while (more !== 0) {
      if ((more & ~CONTINUATION) !== 0) throw syntaxError("content header sets an undefined property flag")
      more = r.short()
    }
  }
  if (flags === 0 || flags === CONTINUATION) return {}
  const p: {
    -readonly [K in keyof BasicProperties]: BasicProperties[K]
  } = {}
  if (flags & CONTENT_TYPE) p.contentType = r.shortstr()
  if (flags & CONTENT_ENCODING) p.contentEncoding = r.shortstr()
  if (flags & HEADERS) p.headers = readTable(r, typedHeaders)
  if (flags & DELIVERY_MODE) p.deliveryMode = r.octet()
  if (flags & PRIORITY) p.priority = r.octet()
  if (flags & CORRELATION_ID) p.correlationId = r.shortstr()
  if (flags & REPLY_TO) p.replyTo = r.shortstr()
  if (flags & EXPIRATION) p.expiration = r.shortstr()
  if (flags & MESSAGE_ID) p.messageId = r.shortstr()
  if (flags & TIMESTAMP) p.timestamp = r.longlongExact()
  if (flags & TYPE) p.type = r.shortstr()
  if (flags & USER_ID) p.userId = r.shortstr()
  if (flags & APP_ID) p.appId = r.shortstr()
  if (flags & CLUSTER_ID) p.clusterId = r.shortstr()
  return p
}
