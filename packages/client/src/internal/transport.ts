/**
 * The socket under a connection: opens TCP or TLS with a deadline, classifies every failure into
 * a typed reason, writes with backpressure, and ends politely (FIN, then wait for the peer) or at
 * once (destroy). It never lets a socket `error` event go unhandled.
 *
 * The first write of a tick goes out at once; the writes after it in the same tick are gathered
 * and leave together on the next tick, adjacent ones merged, so a burst of small publishes costs
 * two socket writes and a lone request waits for nothing.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import type * as Tls from "node:tls"
import {
  AmqpConnectionError,
  ConnectFailed,
  type ConnectionErrorReason,
  Timeout,
  TlsFailure,
  type TlsFailureKind,
  TransportClosed
} from "../AmqpError.ts"
import type { ConnectionOptions } from "../ConnectionConfig.ts"

/** How the socket ended, as seen from our side. */
export interface TransportEnd {
  /** The peer sent FIN before the socket closed. */
  readonly peerEnded: boolean
  readonly error: (Error & { code?: string }) | undefined
}

export interface Transport {
  readonly socket: Net.Socket
  /** Resolves when the socket has closed, for any reason. */
  readonly closed: Deferred.Deferred<TransportEnd>
  /** The first error the socket reported, if any (a TLS alert after the handshake included). */
  readonly lastError: () => (Error & { code?: string }) | undefined
  /** Milliseconds timestamp of the last bytes received and sent. */
  lastReceived: number
  lastSent: number
  /** Writes in order now; never blocks. */
  readonly write: (data: Uint8Array) => void
  readonly writev: (data: ReadonlyArray<Uint8Array>) => void
  /** `write` for the bytes of `buffer` from `start` to `end`, making no view of them unless it must. */
  readonly writeRange: (buffer: Uint8Array, start: number, end: number) => void
  /**
   * Writes in order on the next tick, with whatever else is written until then: for frames whose
   * latency hardly matters (acknowledgements), which then share one system call.
   */
  readonly writeLater: (data: Uint8Array) => void
  /**
   * Changes whenever bytes are queued or handed to the socket: while it reads the same, the last
   * bytes queued are still the last, and still unsent.
   */
  readonly sequence: () => number
  /** False once the socket is closed or closing: a write then sends nothing, and nothing says so. */
  readonly isOpen: () => boolean
  /** True when more than the write limit is queued in the socket. */
  readonly congested: () => boolean
  /**
   * Calls `listener` once, when the socket next drains below its limit or closes; returns what
   * takes it back. Waiting on it costs no fiber, unlike a race.
   */
  readonly whenDrained: (listener: () => void) => () => void
  /**
   * Sends what is queued, then FIN, without waiting; with `destroyAfter`, destroys the socket if
   * the peer has not closed its side by then.
   */
  readonly endNow: (destroyAfter?: number) => void
  /** FIN (TLS close_notify first), wait for the peer to close within `timeout`, then destroy. */
  readonly end: (timeout: number) => Effect.Effect<void>
  readonly destroy: () => void
  /** Drops the socket with an RST where the socket allows it (plain TCP), for a peer taken for dead. */
  readonly abort: () => void
}

/**
 * Bytes queued in the socket above which writers wait for `drain`. At 1 MiB a publisher of 64 KiB
 * messages waited every 16 messages, and published about a fifth slower, at a quarter more CPU
 * per message, than at 4 MiB (medians of five runs against RabbitMQ); 8 MiB gained nothing more.
 */
const WRITE_LIMIT = 4 * 1024 * 1024

const fail = (reason: ConnectionErrorReason, name: string | undefined) =>
  new AmqpConnectionError({ reason, connectionName: name })

/** OpenSSL's codes for a certificate chain the client does not trust. */
const untrustedCodes = new RegExp(
  [
    "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    "SELF_SIGNED_CERT",
    "UNABLE_TO_GET_ISSUER_CERT",
    "CERT_UNTRUSTED",
    "CERT_SIGNATURE_FAILURE",
    "CERT_CHAIN_TOO_LONG",
    "INVALID_CA"
  ].join("|")
)

/** Classifies a TLS failure by OpenSSL's or Node's error code. */
export const tlsKind = (error: Error & { code?: string }, sentCertificate: boolean): TlsFailureKind | undefined => {
  const code = error.code ?? ""
  const text = `${code} ${error.message}`
  if (/ALTNAME|Hostname\/IP does not match/i.test(text)) return "HostnameMismatch"
  if (/CERT_HAS_EXPIRED|CERT_NOT_YET_VALID/.test(code)) return "CertificateExpired"
  if (untrustedCodes.test(code)) return "UntrustedCertificate"
  // The server's alerts about the client's certificate name the same faults.
  if (/ALERT_CERTIFICATE_EXPIRED/i.test(code)) return "CertificateExpired"
  if (/ALERT_UNKNOWN_CA/i.test(code)) return "UntrustedCertificate"
  if (/CERTIFICATE_REQUIRED/i.test(text)) return "ClientCertificateRequired"
  if (/ALERT_HANDSHAKE_FAILURE|ALERT_BAD_CERTIFICATE/i.test(text) && !sentCertificate) {
    return "ClientCertificateRequired"
  }
  if (/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|UNKNOWN_PROTOCOL|record layer failure/i.test(text)) return "NotTls"
  if (/SSL|TLS/i.test(code)) return "HandshakeFailed"
  return undefined
}

/** Alerts by which a TLS 1.3 peer refuses a certificate after the client saw the handshake end. */
const certificateAlert = /ALERT_(?:\w*CERTIFICATE\w*|UNKNOWN_CA|HANDSHAKE_FAILURE|ACCESS_DENIED)/i

/**
 * The reason a socket-level error ends a connection. Once the TLS session is `established`, a
 * record error, or the peer's alert about one (bad_record_mac), is that session's failure, not a
 * port that does not speak TLS or a failed setup; an alert about a certificate still names what
 * the peer refused (TLS 1.3 servers check a client's certificate after the client has seen the
 * handshake finish).
 */
export const socketFailure = (
  error: (Error & { code?: string }) | undefined,
  peerEnded: boolean,
  tls: "setup" | "established" | undefined,
  sentCertificate: boolean
): ConnectionErrorReason => {
  if (error !== undefined && tls !== undefined) {
    let kind = tlsKind(error, sentCertificate)
    const recordError = kind === "NotTls" || (kind === "HandshakeFailed" && !certificateAlert.test(error.code ?? ""))
    if (tls === "established" && recordError) kind = "SessionFailed"
    if (kind !== undefined) return new TlsFailure({ kind, message: error.message, code: error.code })
  }
  if (error === undefined) {
    return new TransportClosed({
      how: peerEnded ? "end" : "reset",
      code: undefined,
      message: peerEnded ? "the server closed the socket" : "the socket closed"
    })
  }
  const how = error.code === "ECONNRESET" || error.code === "EPIPE" ? "reset" : "error"
  return new TransportClosed({ how, code: error.code, message: error.message })
}

/**
 * Opens the socket; the scope destroys it if nothing else closed it first.
 */
export const open = (
  options: ConnectionOptions
): Effect.Effect<Transport, AmqpConnectionError, Scope.Scope> =>
  Effect.acquireRelease(
    options.tls === undefined ? connect(options, undefined) : Effect.flatMap(loadTls, (tls) => connect(options, tls)),
    (transport) => Effect.sync(() => transport.destroy()),
    // A connect given up while the socket (or TLS) is still opening destroys it at once, rather
    // than after the whole connectionTimeout.
    { interruptible: true }
  )

/** `node:tls` loads with the first TLS connection: it adds about 4 MiB to a process that makes none. */
const loadTls = Effect.promise(() => import("node:tls"))

const connect = (options: ConnectionOptions, tlsModule: typeof Tls | undefined) =>
  Effect.callback<Transport, AmqpConnectionError>((resume) => {
    const name = options.connectionName
    const tls = options.tls
    const sentCertificate = tls?.cert !== undefined || tls?.pfx !== undefined
    let socket: Net.Socket
    const base = {
      host: options.host,
      port: options.port,
      noDelay: true,
      keepAlive: true,
      keepAliveInitialDelay: 10_000
    }
    if (tls !== undefined && tlsModule !== undefined) {
      const servername = tls.servername ?? (Net.isIP(options.host) === 0 ? options.host : undefined)
      const tlsOptions: Tls.ConnectionOptions = {
        ...base,
        ...(tls.ca !== undefined ? { ca: tls.ca as Tls.ConnectionOptions["ca"] } : {}),
        ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
        ...(tls.key !== undefined ? { key: tls.key } : {}),
        ...(tls.pfx !== undefined ? { pfx: tls.pfx } : {}),
        ...(tls.passphrase !== undefined ? { passphrase: tls.passphrase } : {}),
        ...(servername !== undefined ? { servername } : {}),
        ...(tls.minVersion !== undefined ? { minVersion: tls.minVersion } : {}),
        rejectUnauthorized: tls.rejectUnauthorized ?? true
      }
      socket = tlsModule.connect(tlsOptions)
      // node:tls (22.x) drops `noDelay` and `keepAlive`: without them acknowledgements and closes
      // waited on Nagle for the broker's delayed ACK, 40 ms. They are set once TCP is up.
      socket.once("connect", () => {
        socket.setNoDelay(true)
        socket.setKeepAlive(true, base.keepAliveInitialDelay)
      })
    } else {
      socket = Net.connect(base)
    }
    const readyEvent = tls !== undefined ? "secureConnect" : "connect"
    let settled = false
    let peerEnded = false
    const closed = Deferred.makeUnsafe<TransportEnd>()
    let lastError: (Error & { code?: string }) | undefined

    const timer = setTimeout(() => {
      if (settled) return
      settled = true
      const step = tls !== undefined && socket.connecting === false ? "tls" : "connect"
      socket.destroy()
      resume(Effect.fail(fail(new Timeout({ step, afterMillis: options.connectionTimeout }), name)))
    }, options.connectionTimeout)

    socket.on("error", (error: Error & { code?: string }) => {
      lastError ??= error
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      const reason = tls !== undefined && tlsKind(error, sentCertificate) !== undefined
        ? socketFailure(error, false, "setup", sentCertificate)
        : new ConnectFailed({
          host: options.host,
          port: options.port,
          code: error.code ?? "UNKNOWN",
          message: error.message
        })
      resume(Effect.fail(fail(reason, name)))
    })
    socket.on("end", () => {
      peerEnded = true
    })
    socket.on("close", () => {
      clearTimeout(timer)
      Deferred.doneUnsafe(closed, Exit.succeed({ peerEnded, error: lastError }))
      if (!settled) {
        settled = true
        const reason = socketFailure(lastError, peerEnded, tls !== undefined ? "setup" : undefined, sentCertificate)
        resume(Effect.fail(fail(reason, name)))
      }
    })
    socket.once(readyEvent, () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resume(Effect.succeed(makeTransport(socket, closed, () => lastError)))
    })

    return Effect.sync(() => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
    })
  })

const makeTransport = (
  socket: Net.Socket,
  closed: Deferred.Deferred<TransportEnd>,
  lastError: () => (Error & { code?: string }) | undefined
): Transport => {
  // Writes of one tick gather here and leave together on the next tick. Writes that continue one
  // another in the same memory (consecutive messages from the encoder's slab) merge into one: the
  // last write stays open as the tail, from `tailStart` to `tailEnd` in `tailMemory`, and becomes
  // one view when it ends (`tailView`, the write itself, while it is just one).
  let pending: Array<Uint8Array> = []
  let pendingBytes = 0
  let tailMemory: ArrayBufferLike | undefined
  let tailStart = 0
  let tailEnd = 0
  let tailView: Uint8Array | undefined
  const closeTail = () => {
    if (tailMemory === undefined) return
    pending.push(tailView ?? new Uint8Array(tailMemory, tailStart, tailEnd - tailStart))
    tailMemory = undefined
    tailView = undefined
  }
  const dropPending = () => {
    pending = []
    pendingBytes = 0
    tailMemory = undefined
    tailView = undefined
  }
  let sequence = 0
  let scheduled = false
  let drainListeners = new Set<() => void>()

  const isOpen = () => !socket.destroyed && socket.writable
  const wake = () => {
    if (drainListeners.size === 0) return
    const listeners = drainListeners
    drainListeners = new Set()
    for (const listener of listeners) listener()
  }
  const flush = () => {
    scheduled = false
    bursting = gathered > 1
    gathered = 0
    sequence++
    closeTail()
    const chunks = pending
    pending = []
    pendingBytes = 0
    if (!isOpen()) return
    if (chunks.length === 1) {
      socket.write(chunks[0]!)
    } else {
      socket.cork()
      for (const chunk of chunks) socket.write(chunk)
      socket.uncork()
    }
    if (!socket.writableNeedDrain) wake()
  }
  // `view` is the bytes themselves when the caller has them as one, else undefined.
  const enqueue = (memory: ArrayBufferLike, from: number, to: number, view: Uint8Array | undefined) => {
    sequence++
    if (memory === tailMemory && from === tailEnd) {
      tailEnd = to
      tailView = undefined
    } else {
      closeTail()
      tailMemory = memory
      tailStart = from
      tailEnd = to
      tailView = view
    }
    pendingBytes += to - from
  }
  const enqueueView = (data: Uint8Array) =>
    enqueue(data.buffer, data.byteOffset, data.byteOffset + data.byteLength, data)
  // The heartbeat reads `lastSent` to the half interval, so once a tick is precise enough.
  const schedule = () => {
    if (scheduled) return
    scheduled = true
    transport.lastSent = Date.now()
    process.nextTick(flush)
  }
  // The first write of a tick leaves at once, for latency; the ones after it in the same tick
  // gather behind it and leave together on the next tick, for throughput. While writes come in
  // bursts (more than one gathered for the last flush), the first waits for the rest too: a
  // confirm window refilled by each read of acks then costs one system call per read, not two.
  let quiet = true
  let bursting = false
  let gathered = 0
  const endTick = () => {
    quiet = true
  }
  const mayWriteNow = () => !bursting && quiet && !scheduled
  const writeNow = (data: Uint8Array | ReadonlyArray<Uint8Array>): boolean => {
    if (!mayWriteNow()) return false
    quiet = false
    sequence++
    process.nextTick(endTick)
    transport.lastSent = Date.now()
    if (data instanceof Uint8Array) {
      socket.write(data)
    } else {
      socket.cork()
      for (const chunk of data) socket.write(chunk)
      socket.uncork()
    }
    return true
  }
  // Set by endNow(destroyAfter): a peer that never closes its side does not hold the socket open.
  let lingerTimer: ReturnType<typeof setTimeout> | undefined
  socket.on("drain", wake)
  socket.on("close", () => {
    if (lingerTimer !== undefined) clearTimeout(lingerTimer)
    wake()
  })

  const transport: Transport = {
    socket,
    closed,
    lastError,
    lastReceived: Date.now(),
    lastSent: Date.now(),
    write: (data) => {
      if (!isOpen() || writeNow(data)) return
      gathered++
      enqueueView(data)
      schedule()
    },
    writev: (data) => {
      if (!isOpen() || writeNow(data)) return
      gathered++
      for (const chunk of data) enqueueView(chunk)
      schedule()
    },
    writeRange: (buffer, start, end) => {
      if (!isOpen()) return
      if (mayWriteNow()) {
        writeNow(buffer.subarray(start, end))
        return
      }
      gathered++
      enqueue(buffer.buffer, buffer.byteOffset + start, buffer.byteOffset + end, undefined)
      schedule()
    },
    writeLater: (data) => {
      if (!isOpen()) return
      gathered++
      enqueueView(data)
      schedule()
    },
    sequence: () => sequence,
    isOpen,
    congested: () => socket.writableLength + pendingBytes >= WRITE_LIMIT && isOpen(),
    whenDrained: (listener) => {
      const listeners = drainListeners
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    endNow: (destroyAfter) => {
      if (socket.destroyed) return
      if (scheduled) flush()
      socket.end()
      if (destroyAfter !== undefined && lingerTimer === undefined) {
        lingerTimer = setTimeout(() => socket.destroy(), destroyAfter)
      }
    },
    end: (timeout) =>
      Effect.gen(function*() {
        if (!socket.destroyed) {
          transport.endNow()
          yield* Deferred.await(closed).pipe(Effect.timeoutOption(timeout))
        }
        socket.destroy()
      }),
    destroy: () => {
      sequence++
      dropPending()
      socket.destroy()
    },
    abort: () => {
      dropPending()
      if (socket.destroyed) return
      try {
        socket.resetAndDestroy()
      } catch {
        socket.destroy()
      }
    }
  }
  return transport
}
