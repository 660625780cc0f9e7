/**
 * Codec micro-benchmark: whole `basic.publish` messages (method, content header with typical
 * properties, body frames) encoded and decoded per second by `@effect-amqp/protocol`, beside
 * amqplib's own frame and method codec in the same process. No sockets, no broker.
 *
 * What each side does per message:
 * - encode: ours, `MessageEncoder.message`; amqplib, `defs.encodeMethod` + `defs.encodeProperties`
 *   + `frame.makeBodyFrame` per body frame, joined into one buffer below 2048 bytes as its
 *   connection does before writing.
 * - decode: one buffer holding the whole message, to method, properties and body, the buffer fresh
 *   for every message as a socket read is. Each side may keep or reuse the buffer as its client does
 *   with a socket chunk. Ours, `FrameDecoder.pushEach` + `CommandAssembler` with `joinInPlace` (the
 *   client's wiring); amqplib, `frame.parseFrame` + `frame.decodeFrame` per frame and the body frames
 *   collected (joined when more than one) as its channel does. The fresh copies are made before the
 *   timed part, a small batch at a time so that they are in cache as a socket read just made is.
 * - decode-readonly: the same bytes decoded again and again from one buffer that neither side may
 *   change. A body over two frames then costs both sides one copy of the whole body.
 * - decode-64KiB: the same bytes cut into the 64 KiB reads a socket delivers (the same for smaller
 *   messages), so that a large message's frames span reads.
 * - encode+decode: each side's encoder output fed, buffer by buffer, to its own decoder.
 *
 * Each side decodes the same message again and again, as a stream of same-shaped messages would
 * arrive; ours then finds the header table's keys in its key cache.
 *
 * The two implementations alternate, 7 rounds of about 300 ms each per case; medians are printed.
 * Run with `pnpm bench:codec`. This is not a test: it asserts only that both sides decode the
 * message they were given.
 */
import { CommandAssembler, type Frame, FrameDecoder, MessageEncoder, Methods } from "@effect-amqp/protocol"
import * as Crypto from "node:crypto"
import { createRequire } from "node:module"
import * as Path from "node:path"
import { parseArgs } from "node:util"

// `--sizes 16,1024 --ops decode --rounds 15 --ms 100` narrows a run while profiling.
const { values: args } = parseArgs({
  options: {
    sizes: { type: "string", default: "16,1024,131072" },
    ops: { type: "string", default: "encode,decode,decode-readonly,decode-64KiB,encode+decode" },
    rounds: { type: "string", default: "7" },
    ms: { type: "string", default: "300" }
  }
})

const FRAME_MAX = 131072
const ROUNDS = Number(args.rounds)
const ROUND_MS = Number(args.ms)
const SIZES = args.sizes.split(",").map(Number)
const OPS = args.ops.split(",") as ReadonlyArray<Op>

// -------------------------------------------------------------------------------------------------
// amqplib's internal codec, loaded by file path
// -------------------------------------------------------------------------------------------------

interface AmqplibDefs {
  readonly BasicPublish: number
  readonly BasicProperties: number
  encodeMethod(id: number, channel: number, fields: object): Buffer
  encodeProperties(id: number, channel: number, size: number, fields: object): Buffer
}

interface ParsedFrame {
  readonly type: number
  readonly channel: number
  readonly rest: Buffer
}

interface DecodedFrame {
  readonly id?: number
  readonly channel: number
  readonly fields?: Record<string, unknown>
  readonly size?: number
  readonly content?: Buffer
}

interface AmqplibFrame {
  parseFrame(bin: Buffer, max: number): ParsedFrame | false
  decodeFrame(frame: ParsedFrame): DecodedFrame
  makeBodyFrame(channel: number, payload: Buffer): Buffer
}

// The package exports only its public API, so its codec modules are required by file path.
const require = createRequire(import.meta.url)
const amqplibLib = Path.join(Path.dirname(require.resolve("amqplib")), "lib")
const defs = require(Path.join(amqplibLib, "defs.js")) as AmqplibDefs
const amqpFrame = require(Path.join(amqplibLib, "frame.js")) as AmqplibFrame

// -------------------------------------------------------------------------------------------------
// the message
// -------------------------------------------------------------------------------------------------

const properties = {
  contentType: "application/json",
  deliveryMode: 2,
  messageId: "msg-000123-7f3a",
  timestamp: 1700000000,
  headers: { "x-retries": 3, "x-source": "orders-service", "x-urgent": true, "x-ratio": 0.75 }
}

const publishFields = {
  ticket: 0,
  exchange: "orders",
  routingKey: "orders.created",
  mandatory: false,
  immediate: false
}
const publish = Methods.basicPublish({ exchange: "orders", routingKey: "orders.created" })

const makeBody = (size: number): Buffer => {
  const body = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i++) body[i] = (i * 31) & 0xff
  return body
}

// -------------------------------------------------------------------------------------------------
// the two implementations, as the same three operations
// -------------------------------------------------------------------------------------------------

interface Codec {
  /** Encodes the message; returns the buffers to write, in order. */
  readonly encode: () => ReadonlyArray<Uint8Array>
  /** Decodes buffers that hold whole messages; returns the body bytes it assembled. */
  readonly decode: (buffers: ReadonlyArray<Uint8Array>) => number
  /** The body of the last message decoded. */
  readonly lastBody: () => Uint8Array | undefined
}

/** `owned`: the buffers given to `decode` are the decoder's to reuse, as the client's socket chunks are. */
const ours = (body: Buffer, owned: boolean): Codec => {
  const encoder = new MessageEncoder({ frameMax: FRAME_MAX })
  // Wired as the client wires them: a body frame gathered across buffers lands in its place in
  // the message's body.
  const assembler = new CommandAssembler(1, { joinInPlace: owned })
  let last: Uint8Array | undefined
  const decoder = new FrameDecoder({ frameMax: FRAME_MAX, bodyTarget: (_, size) => assembler.bodyTarget(size) })
  return {
    encode: () => {
      const out = encoder.message(1, publish, properties, body)
      return Array.isArray(out) ? out : [out as Buffer]
    },
    decode: (buffers) => {
      let bytes = 0
      const onFrame = (frame: Frame) => {
        const command = assembler.push(frame)
        if (command?.body !== undefined && command.properties?.headers !== undefined) {
          bytes += command.body.length
          last = command.body
        }
      }
      for (const buffer of buffers) decoder.pushEach(buffer, onFrame)
      return bytes
    },
    lastBody: () => last
  }
}

/** Below this many bytes amqplib's connection copies a message into one buffer before writing. */
const AMQPLIB_SINGLE_CHUNK = 2048

const amqplib = (body: Buffer): Codec => {
  const maxBody = FRAME_MAX - 8
  let rest: Buffer = Buffer.alloc(0)
  let expecting: "method" | "header" | "body" = "method"
  let remaining = 0
  let chunks: Array<Buffer> = []
  let props: Record<string, unknown> | undefined
  let last: Uint8Array | undefined
  // The channel's state machine for content: method, then header, then body frames.
  const accept = (frame: DecodedFrame): number => {
    if (expecting === "method") {
      if (frame.id !== defs.BasicPublish || frame.fields === undefined) throw new Error("expected basic.publish")
      expecting = "header"
      return 0
    }
    if (expecting === "header") {
      props = frame.fields
      remaining = frame.size ?? 0
      expecting = "body"
      if (remaining > 0) return 0
      expecting = "method"
      return 0
    }
    const content = frame.content
    if (content === undefined) throw new Error("expected a body frame")
    remaining -= content.length
    chunks.push(content)
    if (remaining > 0) return 0
    const whole = chunks.length === 1 ? content : Buffer.concat(chunks)
    chunks = []
    last = whole
    expecting = "method"
    return props?.["headers"] !== undefined ? whole.length : 0
  }
  return {
    encode: () => {
      const method = defs.encodeMethod(defs.BasicPublish, 1, publishFields)
      const header = defs.encodeProperties(defs.BasicProperties, 1, body.length, properties)
      const head = method.length + header.length
      const total = head + (body.length > 0 ? body.length + 8 : 0)
      if (total < AMQPLIB_SINGLE_CHUNK) {
        const all = Buffer.allocUnsafe(total)
        method.copy(all, 0)
        header.copy(all, method.length)
        if (body.length > 0) amqpFrame.makeBodyFrame(1, body).copy(all, head)
        return [all]
      }
      const out: Array<Buffer> = head < AMQPLIB_SINGLE_CHUNK
        ? [Buffer.concat([method, header], head)]
        : [method, header]
      for (let offset = 0; offset < body.length; offset += maxBody) {
        out.push(amqpFrame.makeBodyFrame(1, body.subarray(offset, Math.min(offset + maxBody, body.length))))
      }
      return out
    },
    // As its connection reads: what is left of the last chunk is joined with the next.
    decode: (buffers) => {
      let bytes = 0
      for (const buffer of buffers) {
        rest = rest.length === 0 ? buffer as Buffer : Buffer.concat([rest, buffer])
        let parsed = amqpFrame.parseFrame(rest, FRAME_MAX)
        while (parsed !== false) {
          rest = parsed.rest
          bytes += accept(amqpFrame.decodeFrame(parsed))
          parsed = amqpFrame.parseFrame(rest, FRAME_MAX)
        }
      }
      return bytes
    },
    lastBody: () => last
  }
}

// -------------------------------------------------------------------------------------------------
// measuring
// -------------------------------------------------------------------------------------------------

let blackhole = 0

/** Operations per second of `op`, run for about `ms` milliseconds. */
const rate = (op: () => number, ms: number): number => {
  let count = 0
  let sink = 0
  let batch = 1
  const start = performance.now()
  let now = start
  while (now - start < ms) {
    for (let i = 0; i < batch; i++) sink += op()
    count += batch
    now = performance.now()
    if (now - start < ms / 20) batch *= 2
  }
  blackhole += sink
  return count / ((now - start) / 1000)
}

/** How many fresh copies of the message are made, untimed, before each timed batch of decodes. */
const freshBatch = (wireBytes: number): number => Math.max(8, Math.min(1024, Math.floor((1 << 16) / wireBytes)))

/**
 * Messages per second of `codec.decode`, each message given in a fresh copy of `wire` that the
 * decoder may change; only the decoding is timed, for about `ms` milliseconds.
 */
const freshRate = (codec: Codec, wire: Uint8Array, ms: number): number => {
  const copies = Array.from({ length: freshBatch(wire.length) }, () => Buffer.allocUnsafe(wire.length))
  const one: Array<Uint8Array> = [wire]
  let count = 0
  let sink = 0
  let timed = 0
  while (timed < ms) {
    for (const copy of copies) copy.set(wire)
    const start = performance.now()
    for (const copy of copies) {
      one[0] = copy
      sink += codec.decode(one)
    }
    timed += performance.now() - start
    count += copies.length
  }
  blackhole += sink
  return count / (timed / 1000)
}

const median = (values: ReadonlyArray<number>): number => {
  const sorted = values.toSorted((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

type Op = "encode" | "decode" | "decode-readonly" | "decode-64KiB" | "encode+decode"

/** Each operation as a measurement: messages per second over about `ms` milliseconds. */
const operations = (
  codec: Codec,
  readonlyCodec: Codec,
  wire: ReadonlyArray<Uint8Array>,
  chunked: ReadonlyArray<Uint8Array>
): Record<Op, (ms: number) => number> => ({
  encode: (ms) => rate(() => codec.encode().length, ms),
  decode: (ms) => freshRate(codec, wire[0]!, ms),
  "decode-readonly": (ms) => rate(() => readonlyCodec.decode(wire), ms),
  "decode-64KiB": (ms) => rate(() => codec.decode(chunked), ms),
  "encode+decode": (ms) => rate(() => codec.decode(codec.encode()), ms)
})

/** The message cut into the 64 KiB reads a socket typically delivers. */
const socketReads = (whole: Buffer): Array<Uint8Array> => {
  const reads: Array<Uint8Array> = []
  for (let at = 0; at < whole.length; at += 65536) reads.push(whole.subarray(at, at + 65536))
  return reads
}

interface Row {
  readonly size: number
  readonly op: Op
  readonly ours: number
  readonly amqplib: number
}

const checksum = (bytes: Uint8Array): string => Crypto.createHash("sha256").update(bytes).digest("hex")

/** The body `codec` assembles from `buffers`, or undefined when it completed no message. */
const decodedBody = (codec: Codec, buffers: ReadonlyArray<Uint8Array>): Uint8Array | undefined =>
  codec.decode(buffers) > 0 ? codec.lastBody() : undefined

const benchSize = (size: number): Array<Row> => {
  const body = makeBody(size)
  const codecs = { ours: ours(body, true), amqplib: amqplib(body) }
  const oursReadonly = ours(body, false)
  // One buffer holding the whole message, the same bytes for both decoders.
  const wire = [Buffer.concat(codecs.ours.encode())]
  const expected = checksum(body)
  for (const [name, codec] of Object.entries(codecs)) {
    const check = (what: string, decoded: Uint8Array | undefined) => {
      if (decoded === undefined || checksum(decoded) !== expected) throw new Error(`${name} did not ${what}`)
    }
    check(`decode the ${size}-byte message`, decodedBody(codec, [Buffer.from(wire[0]!)]))
    check(`round-trip the ${size}-byte message`, decodedBody(codec, codec.encode()))
    check("decode 64 KiB reads", decodedBody(codec, socketReads(Buffer.from(wire[0]!))))
  }
  const readonlyCopy = Buffer.from(wire[0]!)
  if (checksum(decodedBody(oursReadonly, wire) ?? new Uint8Array()) !== expected || !readonlyCopy.equals(wire[0]!)) {
    throw new Error("ours did not decode the read-only buffer, or changed it")
  }
  const chunked = socketReads(wire[0]!)
  const ops = {
    ours: operations(codecs.ours, oursReadonly, wire, chunked),
    amqplib: operations(codecs.amqplib, codecs.amqplib, wire, chunked)
  }
  const rows: Array<Row> = []
  for (const op of OPS) {
    ops.ours[op](ROUND_MS)
    ops.amqplib[op](ROUND_MS)
    const samples = { ours: [] as Array<number>, amqplib: [] as Array<number> }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (["ours", "amqplib"] as const) : (["amqplib", "ours"] as const)
      for (const name of order) samples[name].push(ops[name][op](ROUND_MS))
    }
    rows.push({ size, op, ours: median(samples.ours), amqplib: median(samples.amqplib) })
  }
  return rows
}

// -------------------------------------------------------------------------------------------------
// report
// -------------------------------------------------------------------------------------------------

const sizeLabel = (size: number): string => (size >= 1024 ? `${size / 1024} KiB` : `${size} B`)

const perSecond = (n: number): string =>
  n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : n.toFixed(0)

const print = (rows: ReadonlyArray<Row>): void => {
  const header = ["body", "operation", "ours msg/s", "amqplib msg/s", "ours / amqplib"]
  const lines = rows.map((r) => [
    sizeLabel(r.size),
    r.op,
    perSecond(r.ours),
    perSecond(r.amqplib),
    `${(r.ours / r.amqplib).toFixed(2)}x`
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)))
  const format = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  console.log(format(header))
  console.log(widths.map((w) => "-".repeat(w)).join("  "))
  for (const line of lines) console.log(format(line))
}

console.log(
  `codec benchmark: node ${process.version}, frame_max ${FRAME_MAX}, ${ROUNDS} rounds of ${ROUND_MS} ms, medians\n`
)
const rows = SIZES.flatMap(benchSize)
print(rows)
const below = rows.filter((r) => r.ours / r.amqplib < 1.5)
console.log(
  below.length === 0
    ? "\nours is at least 1.5x amqplib in every case"
    : `\nbelow 1.5x: ${below.map((r) => `${sizeLabel(r.size)} ${r.op}`).join(", ")}`
)
if (blackhole === -1) console.log(blackhole)
