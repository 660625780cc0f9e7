/**
 * A scoped TCP proxy on loopback whose faults change at run time.
 *
 * Every accepted client gets its own upstream connection to `target`. Faults apply per direction
 * (`clientToServer`, `serverToClient`): added latency, a bandwidth limit, re-chunking into n-byte
 * writes, stop reading (the sender's kernel buffers fill), blackhole (read and drop, keep the
 * sockets open), pause and resume (hold data in memory), close after n bytes; and per connection:
 * half-close (FIN one way), reset (RST both sides), drop all, refuse new connections. The proxy
 * records what it saw: bytes each way per connection and in total, accepted connections, and how
 * each peer ended (FIN, RST, still open). `awaitUntil` waits for a condition on those stats.
 *
 * It does not parse AMQP, does not listen anywhere but the loopback address it is given, and logs
 * nothing.
 *
 * @since 0.1.0
 */
import { Context, Data, Effect, Layer } from "effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import { makeNotifier } from "./internal/notifier.ts"

/**
 * @since 0.1.0
 * @category models
 */
export type Direction = "clientToServer" | "serverToClient"

/**
 * @since 0.1.0
 * @category models
 */
export type DirectionSelector = Direction | "both"

/**
 * How a connection (or both sides of one) is closed: `fin` ends the socket cleanly, `reset`
 * sends an RST with `socket.resetAndDestroy()`.
 *
 * @since 0.1.0
 * @category models
 */
export type CloseMode = "fin" | "reset"

/**
 * What the proxy received from one peer: nothing yet (`open`), a FIN (`fin`, the 'end' event),
 * an RST (`reset`, error ECONNRESET) or another socket error (`error`).
 *
 * @since 0.1.0
 * @category models
 */
export type PeerEnd = "open" | "fin" | "reset" | "error"

/**
 * @since 0.1.0
 * @category models
 */
export interface SideStats {
  /** What this peer sent to end its side. */
  readonly peerEnd: PeerEnd
  /** The socket error code, when `peerEnd` is `reset` or `error`. */
  readonly errorCode: string | undefined
  /** The proxy sent a FIN to this peer. */
  readonly sentFin: boolean
  /** The proxy reset this peer. */
  readonly sentReset: boolean
  /** The socket is fully closed. */
  readonly closed: boolean
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ByDirection {
  readonly clientToServer: number
  readonly serverToClient: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ConnectionStats {
  /** 0-based, in accept order. */
  readonly index: number
  /** The client's source port, as seen by the proxy. */
  readonly clientPort: number
  /** Bytes read from the sender. */
  readonly received: ByDirection
  /** Bytes written to the receiver. */
  readonly forwarded: ByDirection
  /** The client side (the peer that connected to the proxy). */
  readonly client: SideStats
  /** The upstream side (the proxy's connection to `target`). */
  readonly server: SideStats
  /** Both sockets are fully closed. */
  readonly closed: boolean
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ProxyStats {
  /** TCP connections accepted and proxied (refused ones are not counted here). */
  readonly accepted: number
  /** Connections accepted and reset at once while refusing. */
  readonly refused: number
  /** Bytes forwarded over all connections. */
  readonly forwarded: ByDirection
  readonly connections: ReadonlyArray<ConnectionStats>
}

/**
 * @since 0.1.0
 * @category errors
 */
export class FaultProxyError extends Data.TaggedError("FaultProxyError")<{
  readonly reason: "Listen" | "AwaitTimeout"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly target: { readonly host: string; readonly port: number }
  /** Loopback only; defaults to 127.0.0.1. */
  readonly listenHost?: "127.0.0.1" | "::1"
  /** Port to listen on; 0 (the default) picks a free one. */
  readonly listenPort?: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface FaultProxy {
  readonly host: string
  readonly port: number
  /** Every chunk waits this long before it is forwarded. */
  readonly setLatency: (millis: number, direction?: DirectionSelector) => Effect.Effect<void>
  /** Forward at most this many bytes per second; `undefined` lifts the limit. */
  readonly setBandwidth: (bytesPerSecond: number | undefined, direction?: DirectionSelector) => Effect.Effect<void>
  /** Split forwarded data into writes of at most `size` bytes, each in its own event-loop turn. */
  readonly setChunkSize: (size: number | undefined, direction?: DirectionSelector) => Effect.Effect<void>
  /** Stop reading from the sender (`socket.pause()`), so its kernel buffers fill. */
  readonly stopReading: (direction?: DirectionSelector) => Effect.Effect<void>
  readonly resumeReading: (direction?: DirectionSelector) => Effect.Effect<void>
  /** Read and drop everything, send nothing, keep both sockets open (FINs are swallowed too). */
  readonly setBlackhole: (on: boolean, direction?: DirectionSelector) => Effect.Effect<void>
  /** Keep reading but hold the data (and FINs) in memory until `resume`. */
  readonly pause: (direction?: DirectionSelector) => Effect.Effect<void>
  readonly resume: (direction?: DirectionSelector) => Effect.Effect<void>
  /**
   * After `bytes` more bytes were forwarded in `direction` on a connection (counted from now for
   * open connections, from the start for new ones), close that connection both ways.
   */
  readonly closeAfter: (
    bytes: number | undefined,
    direction: Direction,
    mode?: CloseMode
  ) => Effect.Effect<void>
  /**
   * Send a FIN one way only, after the data already queued that way. `clientToServer` ends the
   * upstream socket (the server sees the client's FIN); `serverToClient` ends the client socket.
   */
  readonly halfClose: (direction: Direction, connection?: number) => Effect.Effect<void>
  /** RST both sides of one or every open connection. */
  readonly reset: (connection?: number) => Effect.Effect<void>
  /** Close every open connection (RST by default) and keep accepting new ones. */
  readonly dropAll: (mode?: CloseMode) => Effect.Effect<void>
  /** `reset`: accept and reset at once; `unlisten`: close the listening socket. */
  readonly refuseNew: (mode: "reset" | "unlisten") => Effect.Effect<void>
  /** Undo `refuseNew` (listens again on the same port when it had stopped listening). */
  readonly acceptNew: Effect.Effect<void, FaultProxyError>
  /** Lift every fault set with the setters above and resume held or unread data. */
  readonly clearFaults: Effect.Effect<void>
  readonly stats: Effect.Effect<ProxyStats>
  /** Wait until `predicate` holds for the stats (re-checked on every event); fails after `timeout`. */
  readonly awaitUntil: (
    predicate: (stats: ProxyStats) => boolean,
    options?: { readonly timeout?: number; readonly label?: string }
  ) => Effect.Effect<ProxyStats, FaultProxyError>
  readonly awaitConnections: (count: number) => Effect.Effect<ProxyStats, FaultProxyError>
  readonly awaitClosed: (connection: number) => Effect.Effect<ConnectionStats, FaultProxyError>
}

/**
 * @since 0.1.0
 * @category services
 */
export const FaultProxy: Context.Service<FaultProxy, FaultProxy> = Context.Service<FaultProxy>(
  "@effect-amqp/testing/FaultProxy"
)

interface DirectionFaults {
  latency: number
  bytesPerSecond: number | undefined
  chunkSize: number | undefined
  stopReading: boolean
  blackhole: boolean
  paused: boolean
  closeAfter: { readonly bytes: number; readonly mode: CloseMode } | undefined
}

type Item = { readonly kind: "data"; data: Buffer; readonly due: number } | {
  readonly kind: "fin"
  readonly due: number
}

interface Side {
  readonly socket: Net.Socket
  /** Connected: data written now goes out now. */
  ready: boolean
  peerEnd: PeerEnd
  errorCode: string | undefined
  sentFin: boolean
  sentReset: boolean
  closed: boolean
}

interface Pipe {
  readonly direction: Direction
  readonly from: Side
  readonly to: Side
  readonly queue: Array<Item>
  queuedBytes: number
  received: number
  forwarded: number
  nextFree: number
  budget: number | undefined
  timer: ReturnType<typeof setTimeout> | undefined
  waiting: boolean
  heldReading: boolean
}

interface Connection {
  readonly index: number
  readonly clientPort: number
  readonly client: Side
  readonly server: Side
  readonly pipes: { readonly clientToServer: Pipe; readonly serverToClient: Pipe }
  closing: boolean
}

const highWaterMark = 1024 * 1024

const directionsOf = (selector: DirectionSelector): ReadonlyArray<Direction> =>
  selector === "both" ? ["clientToServer", "serverToClient"] : [selector]

const noFaults = (): DirectionFaults => ({
  latency: 0,
  bytesPerSecond: undefined,
  chunkSize: undefined,
  stopReading: false,
  blackhole: false,
  paused: false,
  closeAfter: undefined
})

const makeSide = (socket: Net.Socket, ready: boolean): Side => ({
  socket,
  ready,
  peerEnd: "open",
  errorCode: undefined,
  sentFin: false,
  sentReset: false,
  closed: false
})

const sideStats = (side: Side): SideStats => ({
  peerEnd: side.peerEnd,
  errorCode: side.errorCode,
  sentFin: side.sentFin,
  sentReset: side.sentReset,
  closed: side.closed
})

const resetSide = (side: Side) => {
  if (side.closed || side.socket.destroyed) return
  side.sentReset = true
  side.socket.resetAndDestroy()
}

/**
 * Start a proxy in the current scope. Closing the scope closes the listener and every socket.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (options: Options) => Effect.Effect<FaultProxy, FaultProxyError, Scope.Scope> = Effect.fn(
  "FaultProxy.make"
)(function*(options: Options) {
  const listenHost = options.listenHost ?? "127.0.0.1"
  const faults: Record<Direction, DirectionFaults> = { clientToServer: noFaults(), serverToClient: noFaults() }
  const connections: Array<Connection> = []
  const notifier = makeNotifier()
  const totals = { clientToServer: 0, serverToClient: 0 }
  let refusing: "no" | "reset" | "unlisten" = "no"
  let refused = 0

  const notify = notifier.notify

  const snapshot = (): ProxyStats => ({
    accepted: connections.length,
    refused,
    forwarded: { ...totals },
    connections: connections.map((c) => ({
      index: c.index,
      clientPort: c.clientPort,
      received: { clientToServer: c.pipes.clientToServer.received, serverToClient: c.pipes.serverToClient.received },
      forwarded: { clientToServer: c.pipes.clientToServer.forwarded, serverToClient: c.pipes.serverToClient.forwarded },
      client: sideStats(c.client),
      server: sideStats(c.server),
      closed: c.client.closed && c.server.closed
    }))
  })

  const closeConnection = (conn: Connection, mode: CloseMode) => {
    if (conn.closing) return
    conn.closing = true
    for (const pipe of [conn.pipes.clientToServer, conn.pipes.serverToClient]) {
      if (pipe.timer !== undefined) clearTimeout(pipe.timer)
      pipe.queue.length = 0
      pipe.queuedBytes = 0
    }
    for (const side of [conn.client, conn.server]) {
      if (mode === "reset") resetSide(side)
      else if (!side.socket.destroyed && !side.sentFin) {
        side.sentFin = true
        side.socket.end()
      }
    }
    notify()
  }

  const updateReading = (conn: Connection, pipe: Pipe) => {
    const shouldRead = !faults[pipe.direction].stopReading && pipe.queuedBytes < highWaterMark && !conn.closing
    if (shouldRead && pipe.heldReading) {
      pipe.heldReading = false
      pipe.from.socket.resume()
    } else if (!shouldRead && !pipe.heldReading) {
      pipe.heldReading = true
      pipe.from.socket.pause()
    }
  }

  const pump = (conn: Connection, pipe: Pipe): void => {
    if (pipe.timer !== undefined || pipe.waiting || conn.closing) return
    while (pipe.queue.length > 0) {
      const f = faults[pipe.direction]
      const head = pipe.queue[0]!
      if (f.paused || !pipe.to.ready || pipe.to.socket.destroyed) return
      const now = Date.now()
      const at = f.bytesPerSecond === undefined ? head.due : Math.max(head.due, pipe.nextFree)
      if (at > now) {
        pipe.timer = setTimeout(() => {
          pipe.timer = undefined
          pump(conn, pipe)
        }, at - now)
        return
      }
      if (head.kind === "fin") {
        pipe.queue.shift()
        if (!pipe.to.sentFin) {
          pipe.to.sentFin = true
          pipe.to.socket.end()
        }
        notify()
        continue
      }
      let size = head.data.length
      if (f.chunkSize !== undefined) size = Math.min(size, f.chunkSize)
      if (f.bytesPerSecond !== undefined) size = Math.min(size, Math.max(1, Math.floor(f.bytesPerSecond / 50)))
      if (pipe.budget !== undefined) size = Math.min(size, pipe.budget)
      if (size > 0) {
        const piece = head.data.subarray(0, size)
        if (size === head.data.length) pipe.queue.shift()
        else head.data = head.data.subarray(size)
        pipe.queuedBytes -= size
        pipe.forwarded += size
        totals[pipe.direction] += size
        if (f.bytesPerSecond !== undefined) {
          pipe.nextFree = Math.max(now, pipe.nextFree) + (size * 1000) / f.bytesPerSecond
        }
        const flushed = pipe.to.socket.write(piece)
        if (pipe.budget !== undefined) pipe.budget -= size
        if (pipe.budget !== 0) updateReading(conn, pipe)
        notify()
        if (!flushed) {
          pipe.waiting = true
          pipe.to.socket.once("drain", () => {
            pipe.waiting = false
            pump(conn, pipe)
          })
          return
        }
      }
      if (pipe.budget === 0) {
        closeConnection(conn, f.closeAfter?.mode ?? "fin")
        return
      }
      if (f.chunkSize !== undefined) {
        // Two turns: the receiver's poll phase runs between two pieces, so they are read apart.
        pipe.waiting = true
        setImmediate(() =>
          setImmediate(() => {
            pipe.waiting = false
            pump(conn, pipe)
          })
        )
        return
      }
    }
  }

  const enqueue = (conn: Connection, pipe: Pipe, item: Item) => {
    pipe.queue.push(item)
    if (item.kind === "data") pipe.queuedBytes += item.data.length
    updateReading(conn, pipe)
    pump(conn, pipe)
  }

  const makePipe = (direction: Direction, from: Side, to: Side): Pipe => ({
    direction,
    from,
    to,
    queue: [],
    queuedBytes: 0,
    received: 0,
    forwarded: 0,
    nextFree: 0,
    budget: faults[direction].closeAfter?.bytes,
    timer: undefined,
    waiting: false,
    heldReading: false
  })

  const wire = (conn: Connection, pipe: Pipe) => {
    const socket = pipe.from.socket
    socket.on("data", (chunk: Buffer) => {
      pipe.received += chunk.length
      const f = faults[pipe.direction]
      if (!f.blackhole && !conn.closing && !pipe.to.sentFin) {
        enqueue(conn, pipe, { kind: "data", data: chunk, due: Date.now() + f.latency })
      }
      notify()
    })
    socket.on("end", () => {
      pipe.from.peerEnd = "fin"
      if (!faults[pipe.direction].blackhole && !conn.closing) {
        enqueue(conn, pipe, { kind: "fin", due: Date.now() + faults[pipe.direction].latency })
      }
      notify()
    })
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (pipe.from.peerEnd === "open") {
        pipe.from.peerEnd = error.code === "ECONNRESET" ? "reset" : "error"
        pipe.from.errorCode = error.code
      }
      // Pass the failure on: an RST becomes an RST on the other side, anything else a close.
      if (pipe.from.peerEnd === "reset") resetSide(pipe.to)
      else pipe.to.socket.destroy()
      conn.closing = true
      notify()
    })
    socket.on("close", () => {
      pipe.from.closed = true
      if (pipe.timer !== undefined) clearTimeout(pipe.timer)
      notify()
    })
  }

  const onClient = (client: Net.Socket) => {
    if (refusing === "reset") {
      refused++
      client.on("error", () => {})
      client.resetAndDestroy()
      notify()
      return
    }
    const upstream = Net.connect({ host: options.target.host, port: options.target.port, allowHalfOpen: true })
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    const clientSide = makeSide(client, true)
    const serverSide = makeSide(upstream, false)
    const conn: Connection = {
      index: connections.length,
      clientPort: client.remotePort ?? 0,
      client: clientSide,
      server: serverSide,
      pipes: {
        clientToServer: makePipe("clientToServer", clientSide, serverSide),
        serverToClient: makePipe("serverToClient", serverSide, clientSide)
      },
      closing: false
    }
    connections.push(conn)
    wire(conn, conn.pipes.clientToServer)
    wire(conn, conn.pipes.serverToClient)
    updateReading(conn, conn.pipes.clientToServer)
    updateReading(conn, conn.pipes.serverToClient)
    upstream.once("connect", () => {
      serverSide.ready = true
      pump(conn, conn.pipes.clientToServer)
    })
    notify()
  }

  const server = Net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, onClient)

  const listen = (port: number) =>
    Effect.callback<number, FaultProxyError>((resume) => {
      const onError = (cause: Error) =>
        resume(
          Effect.fail(new FaultProxyError({ reason: "Listen", message: `cannot listen: ${cause.message}`, cause }))
        )
      server.once("error", onError)
      server.listen({ host: listenHost, port, exclusive: true }, () => {
        server.off("error", onError)
        resume(Effect.succeed((server.address() as Net.AddressInfo).port))
      })
    })

  const port = yield* Effect.acquireRelease(listen(options.listenPort ?? 0), () =>
    Effect.callback<void>((resume) => {
      for (const conn of connections) {
        conn.closing = true
        for (const pipe of [conn.pipes.clientToServer, conn.pipes.serverToClient]) {
          if (pipe.timer !== undefined) clearTimeout(pipe.timer)
        }
        conn.client.socket.destroy()
        conn.server.socket.destroy()
      }
      notifier.clear()
      if (!server.listening) return resume(Effect.void)
      server.close(() => resume(Effect.void))
    }))

  const live = () => connections.filter((c) => !c.closing && !(c.client.closed && c.server.closed))

  const eachPipe = (direction: DirectionSelector, f: (conn: Connection, pipe: Pipe) => void) => {
    for (const conn of live()) for (const d of directionsOf(direction)) f(conn, conn.pipes[d])
  }

  const setFault = (direction: DirectionSelector, update: (f: DirectionFaults) => void) =>
    Effect.sync(() => {
      for (const d of directionsOf(direction)) update(faults[d])
      eachPipe(direction, (conn, pipe) => {
        updateReading(conn, pipe)
        pump(conn, pipe)
      })
    })

  const awaitUntil = (
    predicate: (stats: ProxyStats) => boolean,
    awaitOptions?: { readonly timeout?: number; readonly label?: string }
  ): Effect.Effect<ProxyStats, FaultProxyError> =>
    notifier.until(
      () => {
        const stats = snapshot()
        return predicate(stats) ? stats : undefined
      },
      awaitOptions?.timeout ?? 10_000,
      () =>
        new FaultProxyError({
          reason: "AwaitTimeout",
          message: `timed out waiting for ${awaitOptions?.label ?? "condition"}; stats: ${JSON.stringify(snapshot())}`
        })
    )

  return FaultProxy.of({
    host: listenHost,
    port,
    setLatency: (millis, direction = "both") => setFault(direction, (f) => (f.latency = millis)),
    setBandwidth: (bytesPerSecond, direction = "both") =>
      setFault(direction, (f) => (f.bytesPerSecond = bytesPerSecond)),
    setChunkSize: (size, direction = "both") => setFault(direction, (f) => (f.chunkSize = size)),
    stopReading: (direction = "both") => setFault(direction, (f) => (f.stopReading = true)),
    resumeReading: (direction = "both") => setFault(direction, (f) => (f.stopReading = false)),
    setBlackhole: (on, direction = "both") => setFault(direction, (f) => (f.blackhole = on)),
    pause: (direction = "both") => setFault(direction, (f) => (f.paused = true)),
    resume: (direction = "both") => setFault(direction, (f) => (f.paused = false)),
    closeAfter: (bytes, direction, mode = "fin") =>
      Effect.sync(() => {
        faults[direction].closeAfter = bytes === undefined ? undefined : { bytes, mode }
        for (const conn of live()) {
          conn.pipes[direction].budget = bytes
          if (bytes === 0) closeConnection(conn, mode)
        }
      }),
    halfClose: (direction, connection) =>
      Effect.sync(() => {
        for (const conn of live()) {
          if (connection !== undefined && conn.index !== connection) continue
          enqueue(conn, conn.pipes[direction], { kind: "fin", due: Date.now() })
        }
      }),
    reset: (connection) =>
      Effect.sync(() => {
        for (const conn of live()) {
          if (connection === undefined || conn.index === connection) closeConnection(conn, "reset")
        }
      }),
    dropAll: (mode = "reset") =>
      Effect.sync(() => {
        for (const conn of live()) closeConnection(conn, mode)
      }),
    refuseNew: (mode) =>
      Effect.sync(() => {
        refusing = mode
        if (mode === "unlisten" && server.listening) server.close()
      }),
    acceptNew: Effect.suspend(() => {
      const wasUnlistened = refusing === "unlisten"
      refusing = "no"
      return wasUnlistened && !server.listening ? Effect.asVoid(listen(port)) : Effect.void
    }),
    clearFaults: setFault("both", (f) => Object.assign(f, noFaults())),
    stats: Effect.sync(snapshot),
    awaitUntil,
    awaitConnections: (count) => awaitUntil((s) => s.accepted >= count, { label: `${count} accepted connection(s)` }),
    awaitClosed: (connection) =>
      awaitUntil((s) => s.connections[connection]?.closed === true, { label: `connection ${connection} closed` }).pipe(
        Effect.map((s) => s.connections[connection]!)
      )
  })
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<FaultProxy, FaultProxyError> =>
  Layer.effect(FaultProxy, make(options))
