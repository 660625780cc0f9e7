/**
 * What went over one TCP connection between an AMQP client and a server, in the order a man in the
 * middle saw it: bytes each way, decoded into AMQP frames as they arrive, and how each side ended
 * (FIN, RST, error) and when its socket closed. The tap (Tap.ts) fills one `Recording`
 * per connection; tests read `steps` or wait on them with `until`.
 *
 * It records only plain TCP (a TLS stream cannot be decoded) and keeps everything in memory.
 */
import { type Frame, FrameDecoder } from "@effect-amqp/protocol"
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"

/** `client` is the side that connected; `server` the side that accepted (or the broker behind it). */
export type Side = "client" | "server"

/**
 * One thing a side did: "protocol-header", a method name such as "connection.close", "content-header",
 * "content-body", "heartbeat", "FIN", "RST", "error", or "closed" (its socket is fully closed).
 */
export interface Step {
  readonly from: Side
  readonly what: string
  readonly frame: Frame | undefined
  readonly at: number
}

const PROTOCOL_HEADER_SIZE = 8

/** Re-checks waiting conditions whenever `notify` says something changed. */
export class Watch {
  private readonly watchers = new Set<() => void>()

  notify(): void {
    for (const watcher of this.watchers) watcher()
  }

  /** Waits until `check` returns a value; `context` explains a timeout. */
  until<A>(
    check: () => A | undefined,
    label: string,
    timeout = 10_000,
    context: () => string = () => ""
  ): Effect.Effect<A, Error> {
    return Effect.callback<A, Error>((resume) => {
      const run = () => {
        const value = check()
        if (value !== undefined) {
          this.watchers.delete(run)
          resume(Effect.succeed(value))
        }
      }
      this.watchers.add(run)
      run()
      return Effect.sync(() => this.watchers.delete(run))
    }).pipe(
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () => Effect.suspend(() => Effect.fail(new Error(`timed out waiting for ${label}${context()}`)))
      })
    )
  }
}

export class Recording {
  readonly steps: Array<Step> = []
  /** Bytes that did not decode, per side, with the decoder's message. */
  readonly undecodable: Array<string> = []
  readonly bytes: Record<Side, number> = { client: 0, server: 0 }
  private readonly decoders: Record<Side, FrameDecoder> = {
    client: new FrameDecoder({ frameMax: 0 }),
    server: new FrameDecoder({ frameMax: 0 })
  }
  private headerLeft = PROTOCOL_HEADER_SIZE
  private readonly watch = new Watch()

  /** Bytes from `from`; the client's first eight are the protocol header. */
  data(from: Side, chunk: Buffer): void {
    this.bytes[from] += chunk.length
    let rest = chunk
    if (from === "client" && this.headerLeft > 0) {
      const take = Math.min(this.headerLeft, rest.length)
      this.headerLeft -= take
      rest = rest.subarray(take)
      if (this.headerLeft === 0) this.push(from, "protocol-header", undefined)
    }
    if (rest.length > 0) {
      try {
        for (const frame of this.decoders[from].push(rest)) this.push(from, describe(frame), frame)
      } catch (error) {
        this.undecodable.push(`${from}: ${error instanceof Error ? error.message : String(error)}`)
      }
    }
    this.notify()
  }

  /** `from` ended its side: "FIN", "RST" or "error". */
  ended(from: Side, how: "FIN" | "RST" | "error"): void {
    this.push(from, how, undefined)
    this.notify()
  }

  closed(side: Side): void {
    this.push(side, "closed", undefined)
    this.notify()
  }

  /** What `side` did, in order, e.g. ["protocol-header", "connection.start-ok", ..., "FIN", "closed"]. */
  of(side: Side): Array<string> {
    return this.steps.filter((s) => s.from === side).map((s) => s.what)
  }

  /** The first step of `side` named `what`, if any. */
  find(side: Side, what: string): Step | undefined {
    return this.steps.find((s) => s.from === side && s.what === what)
  }

  /** Waits until `check` returns a value, re-checked whenever something is recorded. */
  until<A>(check: (recording: Recording) => A | undefined, label: string, timeout = 10_000): Effect.Effect<A, Error> {
    return this.watch.until(() => check(this), label, timeout, () => `; recorded: ${JSON.stringify(this.summary())}`)
  }

  /** The steps as "client connection.open" lines, for failure messages. */
  summary(): Array<string> {
    return this.steps.map((s) => `${s.from} ${s.what}`)
  }

  private push(from: Side, what: string, frame: Frame | undefined): void {
    this.steps.push({ from, what, frame, at: Date.now() })
  }

  private notify(): void {
    this.watch.notify()
  }
}

const describe = (frame: Frame): string => {
  switch (frame._tag) {
    case "MethodFrame":
      return frame.method._tag
    case "HeaderFrame":
      return "content-header"
    case "BodyFrame":
      return "content-body"
    case "HeartbeatFrame":
      return "heartbeat"
  }
}

/** How a socket `error` event reads in a recording. */
export const endOf = (error: NodeJS.ErrnoException): "RST" | "error" => error.code === "ECONNRESET" ? "RST" : "error"

/**
 * A half-open-capable TCP server on 127.0.0.1 and a free port for this scope; closing the scope
 * destroys the sockets `handler` was given, then closes the server. Returns the port.
 */
export const listen = (handler: (socket: Net.Socket) => void): Effect.Effect<number, Error, Scope.Scope> => {
  const sockets = new Set<Net.Socket>()
  const server = Net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
    handler(socket)
  })
  return Effect.acquireRelease(
    Effect.callback<number, Error>((resume) => {
      server.once("error", (error) => resume(Effect.fail(error)))
      server.listen(
        { host: "127.0.0.1", port: 0 },
        () => resume(Effect.succeed((server.address() as Net.AddressInfo).port))
      )
    }),
    () =>
      Effect.callback<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  )
}
