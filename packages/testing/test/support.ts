/**
 * Test helpers: a recording TCP server (echo or sink) and a recording client on 127.0.0.1, and a
 * way to wait for a condition on what they saw without sleeping.
 */
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"

/** Re-checks waiting conditions whenever something it watches changes. */
export class Watch {
  readonly listeners = new Set<() => void>()

  notify(): void {
    for (const listener of this.listeners) listener()
  }

  until<A>(check: () => A | undefined, label: string, timeout = 5_000): Effect.Effect<A, Error> {
    return Effect.callback<A>((resume) => {
      const run = () => {
        const value = check()
        if (value !== undefined) {
          this.listeners.delete(run)
          resume(Effect.succeed(value))
        }
      }
      this.listeners.add(run)
      run()
      return Effect.sync(() => this.listeners.delete(run))
    }).pipe(
      Effect.timeoutOrElse({
        duration: timeout,
        orElse: () => Effect.fail(new Error(`timed out waiting for ${label}`))
      })
    )
  }
}

/** What one end of a TCP connection observed. */
export interface Observed {
  readonly socket: Net.Socket
  readonly chunks: Array<Buffer>
  bytes: number
  dataEvents: number
  /** 'end' event: the peer sent FIN. */
  gotFin: boolean
  /** Error code, e.g. ECONNRESET when the peer sent RST. */
  errorCode: string | undefined
  closed: boolean
}

const observe = (socket: Net.Socket, watch: Watch): Observed => {
  const observed: Observed = {
    socket,
    chunks: [],
    bytes: 0,
    dataEvents: 0,
    gotFin: false,
    errorCode: undefined,
    closed: false
  }
  socket.on("data", (chunk: Buffer) => {
    observed.chunks.push(chunk)
    observed.bytes += chunk.length
    observed.dataEvents++
    watch.notify()
  })
  socket.on("end", () => {
    observed.gotFin = true
    watch.notify()
  })
  socket.on("error", (error: NodeJS.ErrnoException) => {
    observed.errorCode = error.code
    watch.notify()
  })
  socket.on("close", () => {
    observed.closed = true
    watch.notify()
  })
  return observed
}

export const received = (o: Observed): Buffer => Buffer.concat(o.chunks)

export interface TestServer {
  readonly port: number
  readonly connections: Array<Observed>
  readonly watch: Watch
}

/**
 * A server on 127.0.0.1 that records each connection. `echo` writes back what it reads; `sink`
 * only reads. With `halfOpen`, a FIN from the peer does not end our side.
 */
export const server = (
  mode: "echo" | "sink",
  options: { readonly halfOpen?: boolean } = {}
): Effect.Effect<TestServer, Error, Scope.Scope> => {
  const watch = new Watch()
  const connections: Array<Observed> = []
  const sockets = new Set<Net.Socket>()
  const srv = Net.createServer({ allowHalfOpen: options.halfOpen ?? false }, (socket) => {
    sockets.add(socket)
    const observed = observe(socket, watch)
    if (mode === "echo") socket.on("data", (chunk: Buffer) => socket.write(chunk))
    connections.push(observed)
    watch.notify()
  })
  return Effect.acquireRelease(
    Effect.callback<TestServer, Error>((resume) => {
      srv.once("error", (error) => resume(Effect.fail(error)))
      srv.listen(
        { host: "127.0.0.1", port: 0 },
        () => resume(Effect.succeed({ port: (srv.address() as Net.AddressInfo).port, connections, watch }))
      )
    }),
    () =>
      Effect.callback<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        srv.close(() => resume(Effect.void))
      })
  )
}

export interface TestClient extends Observed {
  readonly watch: Watch
}

/** A client connected to 127.0.0.1:port, destroyed when the scope closes. */
export const connect = (
  port: number,
  options: { readonly halfOpen?: boolean } = {}
): Effect.Effect<TestClient, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<TestClient, Error>((resume) => {
      const watch = new Watch()
      const socket = Net.connect({ host: "127.0.0.1", port, allowHalfOpen: options.halfOpen ?? false })
      const observed = observe(socket, watch)
      const onError = (error: Error) => resume(Effect.fail(error))
      socket.once("error", onError)
      socket.once("connect", () => {
        socket.off("error", onError)
        resume(Effect.succeed(Object.assign(observed, { watch })))
      })
    }),
    (client) => Effect.sync(() => client.socket.destroy())
  )

/** Connect and wait until the socket closes; gives the error code seen, if any, and whether it connected. */
export const attempt = (
  port: number
): Effect.Effect<{ readonly connected: boolean; readonly errorCode: string | undefined }> =>
  Effect.callback((resume) => {
    const socket = Net.connect({ host: "127.0.0.1", port })
    let connected = false
    let errorCode: string | undefined
    socket.on("connect", () => (connected = true))
    socket.on("error", (error: NodeJS.ErrnoException) => (errorCode = error.code))
    socket.on("close", () => resume(Effect.succeed({ connected, errorCode })))
    return Effect.sync(() => socket.destroy())
  })

/** A payload whose byte i is i mod 251, so order and loss show up in comparisons. */
export const payload = (size: number): Buffer => {
  const bytes = Buffer.alloc(size)
  for (let i = 0; i < size; i++) bytes[i] = i % 251
  return bytes
}
