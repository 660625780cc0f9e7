/**
 * A tiny AMQP 0-9-1 client written from node:net bytes, independent of @effect-amqp/protocol, so
 * tests can check brokers and the scripted peer against hand-made frames. Just enough for the
 * handshake, channel.open, queue.declare and connection.close.
 */
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import * as Tls from "node:tls"
import { Watch } from "./support.ts"

export const protocolHeader = Buffer.from([0x41, 0x4d, 0x51, 0x50, 0, 0, 9, 1])

export const shortstr = (s: string): Buffer => {
  const bytes = Buffer.from(s, "utf8")
  return Buffer.concat([Buffer.from([bytes.length]), bytes])
}

export const longstr = (s: string | Buffer): Buffer => {
  const bytes = typeof s === "string" ? Buffer.from(s, "utf8") : s
  const size = Buffer.alloc(4)
  size.writeUInt32BE(bytes.length)
  return Buffer.concat([size, bytes])
}

export const u16 = (n: number): Buffer => {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(n)
  return b
}

export const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n)
  return b
}

/** A field table of long-string values. */
export const table = (entries: Record<string, string>): Buffer => {
  const body = Buffer.concat(
    Object.entries(entries).map(([key, value]) => Buffer.concat([shortstr(key), Buffer.from("S"), longstr(value)]))
  )
  return Buffer.concat([u32(body.length), body])
}

export const frame = (type: number, channel: number, payload: Buffer): Buffer =>
  Buffer.concat([Buffer.from([type]), u16(channel), u32(payload.length), payload, Buffer.from([0xce])])

export const method = (channel: number, classId: number, methodId: number, args: Buffer): Buffer =>
  frame(1, channel, Buffer.concat([u16(classId), u16(methodId), args]))

export interface RawFrame {
  readonly type: number
  readonly channel: number
  readonly payload: Buffer
  /** For method frames. */
  readonly classId: number
  readonly methodId: number
}

/** Reads a short string at `offset`; returns it and the next offset. */
export const readShortstr = (b: Buffer, offset: number): [string, number] => {
  const size = b[offset]!
  return [b.toString("utf8", offset + 1, offset + 1 + size), offset + 1 + size]
}

export const readLongstr = (b: Buffer, offset: number): [Buffer, number] => {
  const size = b.readUInt32BE(offset)
  return [b.subarray(offset + 4, offset + 4 + size), offset + 4 + size]
}

export interface RawClient {
  readonly socket: Net.Socket
  readonly frames: Array<RawFrame>
  /** Bytes received that are not a whole frame yet. */
  readonly pending: () => Buffer
  readonly closed: () => boolean
  readonly send: (bytes: Buffer) => void
  /** Wait for the next frame not yet taken. */
  readonly next: (label: string) => Effect.Effect<RawFrame, Error>
}

/** Connect (TLS when `tls` is given) and parse incoming frames. Destroyed with the scope. */
export const rawClient = (
  port: number,
  tls?: Tls.ConnectionOptions
): Effect.Effect<RawClient, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<RawClient, Error>((resume) => {
      const watch = new Watch()
      const frames: Array<RawFrame> = []
      let buffer = Buffer.alloc(0)
      let taken = 0
      let isClosed = false
      const socket = tls === undefined
        ? Net.connect({ host: "127.0.0.1", port })
        : Tls.connect({ host: "127.0.0.1", port, ...tls })
      socket.on("data", (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk])
        while (buffer.length >= 7) {
          const size = buffer.readUInt32BE(3)
          if (buffer.length < 8 + size) break
          const payload = buffer.subarray(7, 7 + size)
          frames.push({
            type: buffer[0]!,
            channel: buffer.readUInt16BE(1),
            payload,
            classId: buffer[0] === 1 ? payload.readUInt16BE(0) : 0,
            methodId: buffer[0] === 1 ? payload.readUInt16BE(2) : 0
          })
          buffer = buffer.subarray(8 + size)
        }
        watch.notify()
      })
      socket.on("error", () => {})
      socket.on("close", () => {
        isClosed = true
        watch.notify()
      })
      const client: RawClient = {
        socket,
        frames,
        pending: () => buffer,
        closed: () => isClosed,
        send: (bytes) => void socket.write(bytes),
        next: (label) =>
          watch.until(() => (frames.length > taken ? frames[taken++] : isClosed ? null : undefined), label).pipe(
            Effect.flatMap((f) => f === null ? Effect.fail(new Error(`closed before ${label}`)) : Effect.succeed(f))
          )
      }
      socket.once(tls === undefined ? "connect" : "secureConnect", () => resume(Effect.succeed(client)))
      socket.once("error", (error) => resume(Effect.fail(error)))
    }),
    (client) => Effect.sync(() => client.socket.destroy())
  )

export interface Tune {
  readonly channelMax: number
  readonly frameMax: number
  readonly heartbeat: number
}

export interface Handshake {
  readonly mechanisms: string
  readonly serverProperties: Buffer
  readonly tune: Tune
}

/** Protocol header, start-ok (PLAIN or EXTERNAL), tune-ok echoing the server's tune, open "/". */
export const handshake = (
  client: RawClient,
  options: {
    readonly mechanism?: "PLAIN" | "EXTERNAL"
    readonly connectionName?: string
    readonly user?: string
    readonly password?: string
  } = {}
): Effect.Effect<Handshake, Error> =>
  Effect.gen(function*() {
    client.send(protocolHeader)
    const start = yield* client.next("connection.start")
    if (start.classId !== 10 || start.methodId !== 10) return yield* Effect.fail(new Error("expected start"))
    const [serverProperties, afterProps] = readLongstr(start.payload, 6)
    const [mechanisms] = readLongstr(start.payload, afterProps)
    const mechanism = options.mechanism ?? "PLAIN"
    const properties = options.connectionName === undefined ? {} : { connection_name: options.connectionName }
    client.send(method(
      0,
      10,
      11,
      Buffer.concat([
        table(properties),
        shortstr(mechanism),
        longstr(mechanism === "PLAIN" ? `\u0000${options.user ?? "guest"}\u0000${options.password ?? "guest"}` : ""),
        shortstr("en_US")
      ])
    ))
    const tuneFrame = yield* client.next("connection.tune")
    if (tuneFrame.classId !== 10 || tuneFrame.methodId !== 30) {
      return yield* Effect.fail(new Error(`expected tune, got ${tuneFrame.classId}.${tuneFrame.methodId}`))
    }
    const tune = {
      channelMax: tuneFrame.payload.readUInt16BE(4),
      frameMax: tuneFrame.payload.readUInt32BE(6),
      heartbeat: tuneFrame.payload.readUInt16BE(10)
    }
    client.send(method(0, 10, 31, Buffer.concat([u16(tune.channelMax), u32(tune.frameMax), u16(tune.heartbeat)])))
    client.send(method(0, 10, 40, Buffer.concat([shortstr("/"), shortstr(""), Buffer.from([0])])))
    const openOk = yield* client.next("connection.open-ok")
    if (openOk.classId !== 10 || openOk.methodId !== 41) return yield* Effect.fail(new Error("expected open-ok"))
    return { mechanisms: mechanisms.toString(), serverProperties, tune }
  })

/** channel.open on `channel`, then queue.declare (durable when asked); returns the queue name. */
export const declareQueue = (
  client: RawClient,
  channel: number,
  name: string,
  durable: boolean
): Effect.Effect<string, Error> =>
  Effect.gen(function*() {
    client.send(method(channel, 20, 10, shortstr("")))
    const openOk = yield* client.next("channel.open-ok")
    if (openOk.classId !== 20 || openOk.methodId !== 11) {
      return yield* Effect.fail(new Error("expected channel.open-ok"))
    }
    client.send(
      method(channel, 50, 10, Buffer.concat([u16(0), shortstr(name), Buffer.from([durable ? 2 : 0]), u32(0)]))
    )
    const declareOk = yield* client.next("queue.declare-ok")
    if (declareOk.classId !== 50 || declareOk.methodId !== 11) {
      return yield* Effect.fail(new Error("expected queue.declare-ok"))
    }
    return readShortstr(declareOk.payload, 4)[0]
  })
