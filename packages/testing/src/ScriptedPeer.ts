/**
 * A fake AMQP server on loopback that a test scripts step by step, for sequences a real broker
 * does not produce on demand: malformed or oversize frames, silence after tune, a close in the
 * middle of the handshake, heartbeats that stop.
 *
 * Each accepted connection is a `PeerConnection`: expect the protocol header or a frame (by method
 * tag or predicate), reply with frames or raw bytes, stay silent, close with FIN or RST at any
 * point, and wait for the client's end. Ready-made steps (`start`, `secure`, `tune`, `open`,
 * `handshake`) do the usual opening so a test writes only the part it cares about. Everything
 * received is recorded in order. Frames are read and written with @effect-amqp/protocol.
 *
 * It is no broker: it answers nothing by itself, not even heartbeats.
 *
 * @since 0.1.0
 */
import {
  encodeFrame,
  encodeMethod,
  type FieldTable,
  type Frame,
  FrameDecoder,
  HEARTBEAT_FRAME,
  type Method,
  type MethodOf,
  Methods,
  type MethodTag
} from "@effect-amqp/protocol"
import { Context, Data, Effect, Layer, Queue } from "effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import { makeNotifier } from "./internal/notifier.ts"

/**
 * @since 0.1.0
 * @category errors
 */
export class ScriptedPeerError extends Data.TaggedError("ScriptedPeerError")<{
  readonly reason: "Listen" | "Timeout" | "Unexpected" | "Closed" | "Write"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * What the peer received, in order.
 *
 * @since 0.1.0
 * @category models
 */
export type Received =
  | { readonly _tag: "Header"; readonly bytes: Uint8Array }
  | { readonly _tag: "Frame"; readonly frame: Frame }
  | { readonly _tag: "DecodeError"; readonly error: unknown }
  | { readonly _tag: "End"; readonly how: ClientEnd }

/**
 * How the client's side ended: FIN ('end'), RST (ECONNRESET), another error, or closed by us.
 *
 * @since 0.1.0
 * @category models
 */
export type ClientEnd = "fin" | "reset" | "error" | "closedByPeer"

/**
 * @since 0.1.0
 * @category models
 */
export interface ExpectOptions {
  /** Default 5 s. */
  readonly timeoutMillis?: number
  /** Skip heartbeat frames while waiting (they stay in `received`). Default true. */
  readonly skipHeartbeats?: boolean
}

/**
 * @since 0.1.0
 * @category models
 */
export interface TuneOptions {
  readonly channelMax?: number
  readonly frameMax?: number
  readonly heartbeat?: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface HandshakeOptions {
  readonly serverProperties?: FieldTable
  readonly mechanisms?: string
  /** Send connection.secure with this challenge after start-ok and expect secure-ok. */
  readonly secureChallenge?: string
  readonly tune?: TuneOptions
}

/**
 * @since 0.1.0
 * @category models
 */
export interface HandshakeResult {
  readonly header: Uint8Array
  readonly startOk: MethodOf<"connection.start-ok">
  readonly secureOk: MethodOf<"connection.secure-ok"> | undefined
  readonly tuneOk: MethodOf<"connection.tune-ok">
  readonly open: MethodOf<"connection.open">
}

/**
 * One accepted client connection.
 *
 * @since 0.1.0
 * @category models
 */
export interface PeerConnection {
  readonly index: number
  readonly clientPort: number
  /** Everything received so far, in order. */
  readonly received: Effect.Effect<ReadonlyArray<Received>>
  /** The 8 bytes the client opened with (whatever they are). */
  readonly expectHeader: (options?: ExpectOptions) => Effect.Effect<Uint8Array, ScriptedPeerError>
  /** The next frame, whatever it is. */
  readonly nextFrame: (options?: ExpectOptions) => Effect.Effect<Frame, ScriptedPeerError>
  /** The next frame must satisfy `predicate`; fails with `Unexpected` otherwise. */
  readonly expectFrame: (
    predicate: (frame: Frame) => boolean,
    label: string,
    options?: ExpectOptions
  ) => Effect.Effect<Frame, ScriptedPeerError>
  /** The next frame must be method `tag` (on `channel`, when given). */
  readonly expect: <T extends MethodTag>(
    tag: T,
    options?: ExpectOptions & { readonly channel?: number }
  ) => Effect.Effect<MethodOf<T>, ScriptedPeerError>
  readonly send: (...frames: ReadonlyArray<Frame>) => Effect.Effect<void, ScriptedPeerError>
  readonly sendMethod: (channel: number, method: Method) => Effect.Effect<void, ScriptedPeerError>
  readonly sendRaw: (bytes: Uint8Array) => Effect.Effect<void, ScriptedPeerError>
  readonly sendHeartbeat: Effect.Effect<void, ScriptedPeerError>
  /** Send nothing for a while (the client's view of a silent server). */
  readonly silence: (millis: number) => Effect.Effect<void>
  /** `fin`: end our side (FIN); `reset`: RST. */
  readonly close: (mode: "fin" | "reset") => Effect.Effect<void>
  /** Wait until the client's side ends, and say how. */
  readonly awaitEnd: (options?: { readonly timeoutMillis?: number }) => Effect.Effect<ClientEnd, ScriptedPeerError>
  /**
   * Wait until the socket is closed both ways (the client's end and ours, or a reset), and say how
   * the client's side ended. After it, everything the client sent is in `received`.
   */
  readonly awaitClose: (options?: { readonly timeoutMillis?: number }) => Effect.Effect<ClientEnd, ScriptedPeerError>
  /** Expect the header, send connection.start, expect start-ok. */
  readonly start: (
    options?: Pick<HandshakeOptions, "serverProperties" | "mechanisms">
  ) => Effect.Effect<
    { readonly header: Uint8Array; readonly startOk: MethodOf<"connection.start-ok"> },
    ScriptedPeerError
  >
  /** Send connection.secure, expect secure-ok. */
  readonly secure: (challenge: string) => Effect.Effect<MethodOf<"connection.secure-ok">, ScriptedPeerError>
  /** Send connection.tune, expect tune-ok; frames after it are decoded with the frame_max it accepted. */
  readonly tune: (options?: TuneOptions) => Effect.Effect<MethodOf<"connection.tune-ok">, ScriptedPeerError>
  /** Expect connection.open, send open-ok. */
  readonly open: Effect.Effect<MethodOf<"connection.open">, ScriptedPeerError>
  /** start, (secure), tune, open. */
  readonly handshake: (options?: HandshakeOptions) => Effect.Effect<HandshakeResult, ScriptedPeerError>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ScriptedPeer {
  readonly host: string
  readonly port: number
  /** The next client connection (waits for it). */
  readonly accept: (options?: { readonly timeoutMillis?: number }) => Effect.Effect<PeerConnection, ScriptedPeerError>
  /** Connections accepted so far. */
  readonly accepted: Effect.Effect<number>
}

/**
 * @since 0.1.0
 * @category services
 */
export const ScriptedPeer: Context.Service<ScriptedPeer, ScriptedPeer> = Context.Service<ScriptedPeer>(
  "@effect-amqp/testing/ScriptedPeer"
)

/**
 * The server properties sent by `start` unless the test gives its own.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultServerProperties: FieldTable = {
  product: "effect-amqp scripted peer",
  capabilities: {
    publisher_confirms: true,
    exchange_exchange_bindings: true,
    "basic.nack": true,
    consumer_cancel_notify: true,
    "connection.blocked": true,
    authentication_failure_close: true,
    per_consumer_qos: true
  }
}

const describeFrame = (frame: Frame): string =>
  frame._tag === "MethodFrame"
    ? `${frame.method._tag} on channel ${frame.channel}`
    : `${frame._tag} on channel ${frame.channel}`

const makeConnection = (socket: Net.Socket, index: number): PeerConnection => {
  const notifier = makeNotifier()
  const received: Array<Received> = []
  const decoder = new FrameDecoder({ frameMax: 0 })
  let headerBytes: Buffer = Buffer.alloc(0)
  let headerDone = false
  let decodeFailed = false
  let end: ClientEnd | undefined
  let closed = false
  let cursor = 0

  socket.setNoDelay(true)
  socket.on("data", (chunk: Buffer) => {
    let rest = chunk
    if (!headerDone) {
      const need = 8 - headerBytes.length
      headerBytes = Buffer.concat([headerBytes, rest.subarray(0, need)])
      rest = rest.subarray(need)
      if (headerBytes.length === 8) {
        headerDone = true
        received.push({ _tag: "Header", bytes: headerBytes })
      }
    }
    if (headerDone && rest.length > 0 && !decodeFailed) {
      try {
        for (const frame of decoder.push(rest)) received.push({ _tag: "Frame", frame })
      } catch (error) {
        decodeFailed = true
        received.push({ _tag: "DecodeError", error })
      }
    }
    notifier.notify()
  })
  const ended = (how: ClientEnd) => {
    if (end !== undefined) return
    end = how
    received.push({ _tag: "End", how })
    notifier.notify()
  }
  socket.on("end", () => ended("fin"))
  socket.on("error", (error: NodeJS.ErrnoException) => ended(error.code === "ECONNRESET" ? "reset" : "error"))
  socket.on("close", () => {
    closed = true
    ended("closedByPeer")
    notifier.notify()
  })

  const timeoutError = (label: string) => () =>
    new ScriptedPeerError({
      reason: "Timeout",
      message: `timed out waiting for ${label}; received: ${received.map(describeReceived).join(", ")}`
    })

  /** The next recorded event after the cursor that is not skipped. */
  const nextEvent = (label: string, options: ExpectOptions = {}) =>
    notifier.until(
      () => {
        while (cursor < received.length) {
          const event = received[cursor]!
          cursor++
          if (
            (options.skipHeartbeats ?? true) && event._tag === "Frame" && event.frame._tag === "HeartbeatFrame"
          ) continue
          return event
        }
        return undefined
      },
      options.timeoutMillis ?? 5_000,
      timeoutError(label)
    )

  const nextFrame = (options?: ExpectOptions) =>
    Effect.flatMap(
      nextEvent("a frame", options),
      (event) =>
        event._tag === "Frame" ? Effect.succeed(event.frame) : Effect.fail(
          new ScriptedPeerError({
            reason: event._tag === "End" ? "Closed" : "Unexpected",
            message: `expected a frame, got ${describeReceived(event)}`
          })
        )
    )

  const expectFrame = (predicate: (frame: Frame) => boolean, label: string, options?: ExpectOptions) =>
    Effect.flatMap(nextFrame(options), (frame) =>
      predicate(frame) ? Effect.succeed(frame) : Effect.fail(
        new ScriptedPeerError({ reason: "Unexpected", message: `expected ${label}, got ${describeFrame(frame)}` })
      ))

  const expect = <T extends MethodTag>(tag: T, options: ExpectOptions & { readonly channel?: number } = {}) =>
    expectFrame(
      (f) => f._tag === "MethodFrame" && f.method._tag === tag && (options.channel ?? f.channel) === f.channel,
      options.channel === undefined ? tag : `${tag} on channel ${options.channel}`,
      options
    ).pipe(Effect.map((f) => (f as Extract<Frame, { _tag: "MethodFrame" }>).method as MethodOf<T>))

  const sendRaw = (bytes: Uint8Array) =>
    Effect.callback<void, ScriptedPeerError>((resume) => {
      if (socket.destroyed || socket.writableEnded) {
        return resume(Effect.fail(new ScriptedPeerError({ reason: "Write", message: "the connection is closed" })))
      }
      socket.write(bytes, (error) =>
        resume(
          error
            ? Effect.fail(new ScriptedPeerError({ reason: "Write", message: error.message, cause: error }))
            : Effect.void
        ))
    })

  const expectHeader = (options?: ExpectOptions) =>
    Effect.flatMap(
      nextEvent("the protocol header", options),
      (event) =>
        event._tag === "Header" ? Effect.succeed(event.bytes) : Effect.fail(
          new ScriptedPeerError({
            reason: "Unexpected",
            message: `expected the header, got ${describeReceived(event)}`
          })
        )
    )

  const start = (options: Pick<HandshakeOptions, "serverProperties" | "mechanisms"> = {}) =>
    Effect.gen(function*() {
      const opening = yield* expectHeader()
      yield* sendRaw(encodeMethod(
        0,
        Methods.connectionStart({
          serverProperties: options.serverProperties ?? defaultServerProperties,
          mechanisms: options.mechanisms ?? "PLAIN AMQPLAIN"
        })
      ))
      const startOk = yield* expect("connection.start-ok", { channel: 0 })
      return { header: opening, startOk }
    })

  const secure = (challenge: string) =>
    Effect.andThen(
      sendRaw(encodeMethod(0, { _tag: "connection.secure", challenge })),
      expect("connection.secure-ok", { channel: 0 })
    )

  const tune = (options: TuneOptions = {}) =>
    Effect.gen(function*() {
      yield* sendRaw(encodeMethod(0, {
        _tag: "connection.tune",
        channelMax: options.channelMax ?? 2047,
        frameMax: options.frameMax ?? 131072,
        heartbeat: options.heartbeat ?? 60
      }))
      const tuneOk = yield* expect("connection.tune-ok", { channel: 0 })
      decoder.setFrameMax(tuneOk.frameMax)
      return tuneOk
    })

  const open = Effect.gen(function*() {
    const method = yield* expect("connection.open", { channel: 0 })
    yield* sendRaw(encodeMethod(0, { _tag: "connection.open-ok", knownHosts: "" }))
    return method
  })

  return {
    index,
    clientPort: socket.remotePort ?? 0,
    received: Effect.sync(() => [...received]),
    expectHeader,
    nextFrame,
    expectFrame,
    expect,
    send: (...frames) => Effect.forEach(frames, (frame) => sendRaw(encodeFrame(frame)), { discard: true }),
    sendMethod: (channel, method) => sendRaw(encodeMethod(channel, method)),
    sendRaw,
    sendHeartbeat: sendRaw(HEARTBEAT_FRAME),
    silence: (millis) => Effect.sleep(millis),
    close: (mode) =>
      Effect.sync(() => {
        if (socket.destroyed) return
        if (mode === "reset") socket.resetAndDestroy()
        else socket.end()
      }),
    awaitEnd: (options = {}) =>
      notifier.until(() => end, options.timeoutMillis ?? 5_000, timeoutError("the client's end")),
    awaitClose: (options = {}) =>
      notifier.until(() => (closed ? end : undefined), options.timeoutMillis ?? 5_000, timeoutError("the close")),
    start,
    secure,
    tune,
    open,
    handshake: (options = {}) =>
      Effect.gen(function*() {
        const { header, startOk } = yield* start(options)
        const secureOk = options.secureChallenge === undefined ? undefined : yield* secure(options.secureChallenge)
        const tuneOk = yield* tune(options.tune)
        return { header, startOk, secureOk, tuneOk, open: yield* open }
      })
  }
}

const describeReceived = (event: Received): string => {
  switch (event._tag) {
    case "Header":
      return `header ${Buffer.from(event.bytes).toString("hex")}`
    case "Frame":
      return describeFrame(event.frame)
    case "DecodeError":
      return `undecodable bytes (${event.error instanceof Error ? event.error.message : String(event.error)})`
    case "End":
      return `end (${event.how})`
  }
}

/**
 * Listen on loopback (port 0 picks a free one) in the current scope; closing the scope closes
 * the listener and every connection.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (
  options?: { readonly host?: "127.0.0.1" | "::1"; readonly port?: number }
) => Effect.Effect<ScriptedPeer, ScriptedPeerError, Scope.Scope> = Effect.fn("ScriptedPeer.make")(function*(
  options: { readonly host?: "127.0.0.1" | "::1"; readonly port?: number } = {}
) {
  const host = options.host ?? "127.0.0.1"
  const incoming = yield* Queue.unbounded<PeerConnection>()
  const sockets = new Set<Net.Socket>()
  let accepted = 0
  const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
    Queue.offerUnsafe(incoming, makeConnection(socket, accepted++))
  })
  const port = yield* Effect.acquireRelease(
    Effect.callback<number, ScriptedPeerError>((resume) => {
      server.once(
        "error",
        (cause) => resume(Effect.fail(new ScriptedPeerError({ reason: "Listen", message: cause.message, cause })))
      )
      server.listen(
        { host, port: options.port ?? 0, exclusive: true },
        () => resume(Effect.succeed((server.address() as Net.AddressInfo).port))
      )
    }),
    () =>
      Effect.callback<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  )
  return ScriptedPeer.of({
    host,
    port,
    accept: (acceptOptions = {}) =>
      Queue.take(incoming).pipe(
        Effect.timeoutOrElse({
          duration: acceptOptions.timeoutMillis ?? 5_000,
          orElse: () =>
            Effect.fail(new ScriptedPeerError({ reason: "Timeout", message: "no client connected in time" }))
        })
      ),
    accepted: Effect.sync(() => accepted)
  })
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: { readonly host?: "127.0.0.1" | "::1"; readonly port?: number }
): Layer.Layer<ScriptedPeer, ScriptedPeerError> => Layer.effect(ScriptedPeer, make(options))
