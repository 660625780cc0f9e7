/**
 * The state machine under `AmqpConnection`: routes inbound frames, runs the handshake, keeps the
 * heartbeat, and owns every way the connection can end.
 *
 * Inbound bytes are decoded and routed synchronously in the socket's `data` callback: channel 0
 * methods to the connection, other frames through a per-channel `CommandAssembler` to the channel's
 * sink. The connection ends exactly once (`fail`); from then on every waiter sees the same typed
 * error. A dead peer (heartbeat timeout, reset, I/O error) is destroyed at once; an application
 * close is polite: `connection.close`, `close-ok`, FIN, wait, destroy, each step bounded.
 */
import {
  type Command,
  CommandAssembler,
  encodeMethod,
  type FieldTable,
  type Frame,
  FRAME_MIN_SIZE,
  FrameDecoder,
  HEARTBEAT_FRAME,
  MessageEncoder,
  type Method,
  methodName,
  Methods,
  PROTOCOL_HEADER,
  setAckDeliveryTag,
  Typed
} from "@effect-amqp/protocol"
import { AmqpEncodeError, AmqpFrameError } from "@effect-amqp/protocol"
import type * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import {
  AmqpConnectionError,
  ClosedByApplication,
  type ConnectionErrorReason,
  HandshakeFailed,
  type HandshakeStep,
  HeartbeatTimeout,
  ProtocolViolation,
  ServerClosed,
  Timeout,
  TlsFailure
} from "../AmqpError.ts"
import type { ConnectionOptions } from "../ConnectionConfig.ts"
import { tracked } from "./liveFibers.ts"
import { clientProperties, saslResponse, startOk, tableOrEmpty } from "./startOk.ts"
import { socketFailure, type Transport } from "./transport.ts"

/** What a channel gets from its connection. */
export interface ChannelSink {
  readonly onCommand: (command: Command) => void
  readonly onConnectionClosed: (error: AmqpConnectionError) => void
}

interface OpenChannel {
  readonly sink: ChannelSink
  readonly assembler: CommandAssembler
}

/**
 * @since 0.1.0
 * @category models
 */
export type ConnectionEvent =
  | { readonly _tag: "Blocked"; readonly reason: string }
  | { readonly _tag: "Unblocked" }
  | { readonly _tag: "Closed"; readonly error: AmqpConnectionError }

export interface Tuned {
  readonly channelMax: number
  readonly frameMax: number
  readonly heartbeat: number
}

const negotiate = (client: number, server: number): number =>
  client === 0 || server === 0 ? Math.max(client, server) : Math.min(client, server)

export class ConnectionCore {
  readonly options: ConnectionOptions
  readonly transport: Transport
  readonly name: string | undefined
  readonly decoder: FrameDecoder
  readonly encoder: MessageEncoder
  readonly ended = Deferred.makeUnsafe<AmqpConnectionError>()
  readonly events: PubSub.PubSub<ConnectionEvent>
  state: "handshake" | "open" | "closing" | "closed" = "handshake"
  failure: AmqpConnectionError | undefined
  /** True once `tune-ok` went out: from then on a polite `connection.close` is possible. */
  tuneSent = false
  tuned: Tuned = { channelMax: 0, frameMax: 0, heartbeat: 0 }
  serverProperties: FieldTable = {}
  blockedReason: string | undefined
  /**
   * Queues this connection knows to be streams: declared as such, or consumed with
   * `x-stream-offset`. A stream answers `basic.get` by closing the connection, so that is refused.
   */
  readonly streamQueues = new Set<string>()
  private unblocked = Deferred.makeUnsafe<void>()
  /** Completes when the broker blocks the connection, or it ends; a fresh one after each unblock. */
  private blocked = Deferred.makeUnsafe<void>()
  maxEventLoopLag = 0
  private readonly inbox: Queue.Queue<Method, Cause.Done>
  private closeOk = Deferred.makeUnsafe<void>()
  /** Callers of update-secret waiting for their `update-secret-ok`, in the order they asked. */
  private readonly updateSecretOk: Array<Deferred.Deferred<void>> = []
  /** Each open channel's sink and the assembler of its commands: one lookup per frame. */
  private readonly channels = new Map<number, OpenChannel>()
  private heartbeatFiber: Fiber.Fiber<unknown, unknown> | undefined
  private secret: Redacted.Redacted<string>
  private nextChannel = 1
  /** The size of the start-ok frame sent, to explain a server that drops it. */
  private startOkSize = 0
  /** The handshake's last reply came: what the server says after it is not about the login. */
  private openOkReceived = false
  /**
   * Set when a `close-ok` did not come within closeTimeout, until it comes: the peer is taken for
   * hung, and the closes after it send their close without waiting, so that shutting down many
   * channels takes one closeTimeout rather than one each.
   */
  peerUnresponsive = false

  /**
   * True when the broker may not read what is sent now: a hung peer, or one that blocks this
   * connection (RabbitMQ stops reading a blocked publisher's socket until its alarm clears). A
   * close then waits for no `close-ok`, which could only come once it reads again, and for confirms
   * only while those already on their way keep coming.
   */
  get unread(): boolean {
    return this.peerUnresponsive || this.blockedReason !== undefined
  }

  /**
   * Waits up to `closeTimeout` for the broker's answer to a close: "answered", "unread" when the
   * broker does not read us (it blocks the connection, from before the wait or during it, or the
   * peer was taken for hung), or "timedOut".
   */
  awaitCloseAnswer(answer: Deferred.Deferred<void>): Effect.Effect<"answered" | "unread" | "timedOut"> {
    return Effect.suspend(() => {
      if (this.unread) return Effect.succeed("unread" as const)
      return Effect.raceFirst(
        Effect.as(Deferred.await(answer), "answered" as const),
        Effect.as(Deferred.await(this.blocked), "unread" as const)
      ).pipe(
        Effect.timeoutOption(this.options.closeTimeout),
        Effect.map((outcome) => outcome._tag === "Some" ? outcome.value : "timedOut" as const)
      )
    })
  }

  constructor(
    options: ConnectionOptions,
    transport: Transport,
    events: PubSub.PubSub<ConnectionEvent>,
    inbox: Queue.Queue<Method, Cause.Done>
  ) {
    this.inbox = inbox
    this.options = options
    this.transport = transport
    this.name = options.connectionName
    this.events = events
    this.secret = options.password
    this.encoder = new MessageEncoder({ frameMax: 131072 })
    this.decoder = new FrameDecoder({
      frameMax: 131072,
      typedHeaders: options.typedHeaders,
      bodyTarget: (channel, size) => this.channels.get(channel)?.assembler.bodyTarget(size)
    })
    transport.socket.on("data", (chunk: Buffer) => this.onData(chunk))
    transport.socket.on("close", () => this.onSocketClosed())
    // The peer's FIN without a connection.close: the socket closes once what is queued has been
    // written, which a peer that also stopped reading holds off for ever.
    transport.socket.on("end", () => {
      if (transport.socket.writableLength > 0) this.onSocketClosed()
    })
  }

  /** Waits until the connection has ended and returns why. */
  readonly closedSignal: Effect.Effect<AmqpConnectionError> = Effect.suspend(() => Deferred.await(this.ended))

  /** Completes when the broker unblocks the connection, or the connection ends. */
  readonly unblockedSignal: Effect.Effect<void> = Effect.suspend(() =>
    Effect.raceFirst(Deferred.await(this.unblocked), Effect.asVoid(Deferred.await(this.ended)))
  )

  /** Records what a successful (not passive) declare of `queue` with `args` says of its type. */
  knowQueueType(queue: string, args: FieldTable | undefined): void {
    const type = args?.["x-queue-type"]
    if ((type instanceof Typed ? type.value : type) === "stream") this.streamQueues.add(queue)
    else this.streamQueues.delete(queue)
  }

  isClosed(): boolean {
    return this.state === "closed"
  }

  error(reason: ConnectionErrorReason): AmqpConnectionError {
    return new AmqpConnectionError({ reason, connectionName: this.name })
  }

  // -------------------------------------------------------------------------------------------
  // inbound
  // -------------------------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    this.transport.lastReceived = Date.now()
    if (this.isClosed()) return
    if (this.state === "handshake" && !this.tuneSent && this.notAmqp(chunk)) return
    this.reading = true
    try {
      this.decoder.pushEach(chunk, this.route)
    } catch (error) {
      this.violation(error)
    } finally {
      this.reading = false
      if (this.probing) {
        this.probing = false
        if (this.pausers.size > 0) this.transport.socket.pause()
      }
      this.runAfterRead()
    }
  }

  /** A read let through while reading is paused; reading pauses again after it. */
  private probing = false

  private readOnce(): void {
    this.probing = true
    this.transport.socket.resume()
  }

  /** True while a chunk is being decoded and routed. */
  private reading = false
  private afterRead: Array<() => void> = []

  /**
   * Runs `f` once the chunk being decoded has been routed whole, or in a microtask when no chunk
   * is: a consumer woken for a delivery then takes every delivery of that read at once, and its
   * handler never runs inside the decoder.
   */
  whenReadEnds(f: () => void): void {
    if (this.reading) this.afterRead.push(f)
    else queueMicrotask(f)
  }

  private runAfterRead(): void {
    if (this.afterRead.length === 0) return
    const callbacks = this.afterRead
    this.afterRead = []
    for (const f of callbacks) f()
  }

  /** Routes one decoded frame, as soon as it is decoded. */
  private readonly route = (frame: Frame): void => {
    if (this.isClosed()) return
    if (frame.channel !== 0) return this.onChannelFrame(frame)
    if (frame._tag === "MethodFrame") return this.onChannel0(frame.method)
    if (frame._tag !== "HeartbeatFrame") {
      this.violation(new AmqpFrameError({ replyCode: 505, message: "content on channel 0" }))
    }
  }

  /** Recognises a server that answers with a protocol header or with TLS records before any frame. */
  private notAmqp(chunk: Buffer): boolean {
    if (this.decoder.hasPartialFrame) return false
    if (chunk.length >= 4 && chunk.toString("latin1", 0, 4) === "AMQP") {
      const offered = chunk.length >= 8 ? `${chunk[5]}-${chunk[6]}-${chunk[7]}` : "another version"
      this.fail(
        new HandshakeFailed({
          step: "protocol-header",
          message: `the server does not speak AMQP 0-9-1; it offered AMQP ${offered}`,
          possiblyAuthenticationFailure: false
        }),
        "destroy"
      )
      return true
    }
    if (chunk.length >= 2 && (chunk[0] === 0x15 || chunk[0] === 0x16) && chunk[1] === 0x03) {
      this.fail(
        new TlsFailure({
          kind: "ServerRequiresTls",
          message: "the server answered with TLS: use amqps:// for this port",
          code: undefined
        }),
        "destroy"
      )
      return true
    }
    return false
  }

  /** The channel the last frame went to, while it is open. */
  private lastRouted: OpenChannel | undefined

  private onChannelFrame(frame: Frame): void {
    // A message is three frames of one channel in a row: the last channel's entry is kept.
    let open = this.lastRouted
    if (open === undefined || open.assembler.channel !== frame.channel) {
      open = this.channels.get(frame.channel)
      this.lastRouted = open
    }
    if (open === undefined) {
      // An id stays taken until the broker is done with it (its close-ok came), so nothing may
      // arrive on a free one: RabbitMQ answers the same mistake of a client's with 504.
      this.violation(new AmqpFrameError({ replyCode: 504, message: `a frame on channel ${frame.channel}, not open` }))
      return
    }
    let command: Command | undefined
    try {
      command = open.assembler.push(frame)
    } catch (error) {
      this.violation(error)
      return
    }
    if (command !== undefined) open.sink.onCommand(command)
  }

  private onChannel0(method: Method): void {
    switch (method._tag) {
      case "connection.close": {
        this.writeMethod(0, Methods.connectionCloseOk())
        const reason = new ServerClosed({
          replyCode: method.replyCode,
          replyText: method.replyText,
          classId: method.classId,
          methodId: method.methodId,
          method: methodName(method.classId, method.methodId),
          // Not `state`: an open-ok read in the same chunk is still on its way to the handshake.
          duringHandshake: !this.openOkReceived
        })
        this.fail(reason, "end")
        return
      }
      case "connection.close-ok":
        // Only an answer to our connection.close: a stray one would let shutdown skip the real one.
        if (this.state !== "closing") {
          this.violation(new AmqpFrameError({ replyCode: 505, message: "connection.close-ok to no close" }))
          return
        }
        Deferred.doneUnsafe(this.closeOk, Exit.void)
        return
      case "connection.blocked":
        this.blockedReason = method.reason
        if (Deferred.isDoneUnsafe(this.unblocked)) this.unblocked = Deferred.makeUnsafe<void>()
        Deferred.doneUnsafe(this.blocked, Exit.void)
        PubSub.publishUnsafe(this.events, { _tag: "Blocked", reason: method.reason })
        return
      case "connection.unblocked":
        this.blockedReason = undefined
        Deferred.doneUnsafe(this.unblocked, Exit.void)
        if (Deferred.isDoneUnsafe(this.blocked)) this.blocked = Deferred.makeUnsafe<void>()
        PubSub.publishUnsafe(this.events, { _tag: "Unblocked" })
        return
      case "connection.update-secret-ok": {
        const waiter = this.updateSecretOk.shift()
        if (waiter !== undefined) Deferred.doneUnsafe(waiter, Exit.void)
        return
      }
      default:
        if (this.state === "handshake") {
          // The handshake reads nothing after open-ok: a method behind it in the same read would
          // lie unread in the inbox, where the same method a read later is refused.
          if (this.openOkReceived) {
            this.violation(new AmqpFrameError({ replyCode: 505, message: `${method._tag} after open-ok` }))
            return
          }
          if (method._tag === "connection.open-ok") this.openOkReceived = true
          Queue.offerUnsafe(this.inbox, method)
        } else if (this.state === "closing") {
          // After our connection.close, everything but close and close-ok is to be discarded.
        } else {
          this.violation(new AmqpFrameError({ replyCode: 505, message: `unexpected ${method._tag} on channel 0` }))
        }
    }
  }

  /**
   * Ends the connection for the peer's breach of the protocol: `connection.close` with the error's
   * reply code (501 for anything else thrown while decoding), then FIN; before tune, destroy.
   */
  violation(error: unknown): void {
    const replyCode = error instanceof AmqpFrameError ? error.replyCode : 501
    const message = error instanceof Error ? error.message : String(error)
    if (this.tuneSent) {
      this.writeMethod(
        0,
        Methods.connectionClose({ replyCode, replyText: message.slice(0, 250), classId: 0, methodId: 0 })
      )
    }
    // Before tune there is no connection.close to send, and a peer that breaks the handshake (a
    // web server answering the protocol header, say) may never close its side: waiting for it
    // would only hold the error back by closeTimeout.
    this.fail(new ProtocolViolation({ replyCode, message }), this.tuneSent ? "end" : "destroy")
  }

  private onSocketClosed(): void {
    if (this.isClosed()) return
    const socket = this.transport.socket as { readonly readableEnded?: boolean }
    const error = this.transport.lastError()
    const sentCertificate = this.options.tls?.cert !== undefined || this.options.tls?.pfx !== undefined
    const tls = this.options.tls !== undefined ? "established" : undefined
    const reason = socketFailure(error, socket.readableEnded === true, tls, sentCertificate)
    this.fail(reason, "destroy")
  }

  // -------------------------------------------------------------------------------------------
  // ending
  // -------------------------------------------------------------------------------------------

  /**
   * Ends the connection once, with `reason`. `destroy` drops the socket at once with an RST (dead
   * peer);
   * `end` sends FIN and leaves the rest to the scope's finalizer.
   */
  fail(reason: ConnectionErrorReason, mode: "destroy" | "end"): void {
    if (this.isClosed()) return
    this.state = "closed"
    const error = this.error(reason)
    this.failure = error
    // The socket first: completing a Deferred can run a waiting fiber (even the scope's shutdown)
    // before this call returns, and that must find the socket already dealt with.
    if (mode === "destroy") this.transport.abort()
    else this.transport.endNow(this.options.closeTimeout)
    // Then the channels, before anything a publisher may wait on: one held by connection.blocked,
    // woken by `unblocked`, must find its channel closed and report its message as never sent.
    this.blockedReason = undefined
    for (const open of this.channels.values()) open.sink.onConnectionClosed(error)
    this.channels.clear()
    this.lastRouted = undefined
    Deferred.doneUnsafe(this.ended, Exit.succeed(error))
    Deferred.doneUnsafe(this.closeOk, Exit.void)
    Deferred.doneUnsafe(this.unblocked, Exit.void)
    Deferred.doneUnsafe(this.blocked, Exit.void)
    for (const waiter of this.updateSecretOk.splice(0)) Deferred.doneUnsafe(waiter, Exit.void)
    Queue.endUnsafe(this.inbox)
    PubSub.publishUnsafe(this.events, { _tag: "Closed", error })
  }

  /**
   * The ordered shutdown, run when the connection's scope closes: `connection.close` and its
   * `close-ok` (bounded), FIN, stop the heartbeat, wait for the peer (bounded), destroy.
   */
  readonly shutdown: Effect.Effect<void> = Effect.suspend(() => {
    const timeout = this.options.closeTimeout
    const polite = this.state !== "closed" && this.tuneSent
    const closing = polite
      ? Effect.gen({ self: this }, function*() {
        this.state = "closing"
        this.writeMethod(0, Methods.connectionClose({ replyCode: 200, replyText: "Goodbye", classId: 0, methodId: 0 }))
        yield* this.awaitCloseAnswer(this.closeOk)
      })
      : Effect.void
    return closing.pipe(
      Effect.andThen(Effect.sync(() => this.fail(new ClosedByApplication({}), "end"))),
      Effect.andThen(Effect.suspend(() => this.heartbeatFiber ? Fiber.interrupt(this.heartbeatFiber) : Effect.void)),
      Effect.andThen(this.transport.end(timeout)),
      Effect.uninterruptible
    )
  })

  // -------------------------------------------------------------------------------------------
  // outbound
  // -------------------------------------------------------------------------------------------

  writeMethod(channel: number, method: Method): void {
    this.transport.write(this.encoder.method(channel, method))
  }

  /** Writes a method on the next tick, in one system call with the writes until then. */
  writeMethodLater(channel: number, method: Method): void {
    this.transport.writeLater(this.encoder.method(channel, method))
  }

  /** The last `basic.ack` queued, while nothing has been queued after it. */
  private lastAck: { readonly channel: number; readonly frame: Buffer; readonly sequence: number } | undefined

  /**
   * Acknowledges every delivery up to `deliveryTag` on `channel`, which the caller has settled
   * all of (`multiple`), on the next tick. While the last frame queued is such an acknowledgement
   * of the same channel, its tag is raised instead: a handler that acks each delivery of a read in
   * turn sends the broker one frame for them all.
   */
  writeAckThrough(channel: number, deliveryTag: number): void {
    const last = this.lastAck
    if (last !== undefined && last.channel === channel && last.sequence === this.transport.sequence()) {
      setAckDeliveryTag(last.frame, deliveryTag)
      return
    }
    const frame = this.encoder.method(channel, Methods.basicAck({ deliveryTag, multiple: true }))
    this.transport.writeLater(frame)
    this.lastAck = { channel, frame, sequence: this.transport.sequence() }
  }

  /**
   * The frame of a method whose fields come from the application, or the typed error for a value
   * it cannot carry, before anything is written or waited for.
   */
  encodeMethod(channel: number, method: Method): Buffer | AmqpEncodeError {
    try {
      return this.encoder.method(channel, method)
    } catch (error) {
      return asEncodeError(error)
    }
  }

  /** The error to fail an operation with when the connection is no longer usable. */
  closedError(): AmqpConnectionError {
    return this.failure ?? this.error(new ClosedByApplication({}))
  }

  // -------------------------------------------------------------------------------------------
  // channels
  // -------------------------------------------------------------------------------------------

  /** Reserves the lowest free channel id (cycling), or undefined when all are in use. */
  allocateChannel(sink: ChannelSink): number | undefined {
    const max = this.tuned.channelMax === 0 ? 65535 : this.tuned.channelMax
    if (this.channels.size >= max) return undefined
    for (let i = 0; i < max; i++) {
      const id = ((this.nextChannel - 1 + i) % max) + 1
      if (!this.channels.has(id)) {
        this.nextChannel = (id % max) + 1
        this.channels.set(id, { sink, assembler: new CommandAssembler(id, { joinInPlace: true }) })
        return id
      }
    }
    return undefined
  }

  /** Frees `id` if `sink` still holds it (a later channel may have been given the id since). */
  releaseChannel(id: number, sink: ChannelSink): void {
    if (this.channels.get(id)?.sink !== sink) return
    this.channels.delete(id)
    this.lastRouted = undefined
  }

  private readonly pausers = new Set<unknown>()

  /** Stops reading from the socket until every `pauser` has resumed (consumer backpressure). */
  pauseReading(pauser: unknown): void {
    this.pausers.add(pauser)
    this.transport.socket.pause()
  }

  resumeReading(pauser: unknown): void {
    if (!this.pausers.delete(pauser) || this.pausers.size > 0) return
    this.transport.lastReceived = Date.now()
    this.transport.socket.resume()
  }

  get openChannels(): number {
    return this.channels.size
  }

  // -------------------------------------------------------------------------------------------
  // handshake
  // -------------------------------------------------------------------------------------------

  private step: HandshakeStep = "protocol-header"

  /** Waits for the next channel 0 method of the handshake, failing with the step's reason. */
  private next(deadline: number): Effect.Effect<Method, AmqpConnectionError> {
    return Effect.suspend(() => {
      const timedOut = Effect.suspend(() => {
        // A peer that says nothing in time is as good as dead: no polite close on it.
        const timeout = new Timeout({ step: this.step, afterMillis: this.options.handshakeTimeout })
        this.fail(timeout, "destroy")
        return Effect.fail(this.error(timeout))
      })
      const left = deadline - Date.now()
      if (left <= 0) return timedOut
      return Queue.take(this.inbox).pipe(
        Effect.catch(() => Effect.fail(this.handshakeFailure())),
        Effect.timeoutOrElse({ duration: left, orElse: () => timedOut })
      )
    })
  }

  /** The failure of the handshake: the connection's own reason, or one that names the step. */
  private handshakeFailure(): AmqpConnectionError {
    const failure = this.closedError()
    const reason = failure.reason
    if (reason._tag !== "TransportClosed") return failure
    // A server that closes the socket right after start-ok may be refusing the login, unless both
    // sides said a refused login is reported with connection.close (RabbitMQ does so then): the
    // network or the node going down is what is left.
    const afterStartOk = this.step === "secure" || this.step === "tune"
    const both = [this.serverProperties, clientProperties(this.options)]
    const closesOnAuthFailure = both.every((properties) =>
      tableOrEmpty(properties["capabilities"])["authentication_failure_close"] === true
    )
    // A start-ok over 4096 bytes (a large token for a password, say) is more than a server need
    // take before tune: one that drops the connection for it will do so every time.
    const tooLarge = afterStartOk && this.startOkSize > FRAME_MIN_SIZE
    return this.error(
      new HandshakeFailed({
        step: this.step,
        message: `the server ${reason.how === "end" ? "closed the connection" : "reset the connection"} ` +
          `while the client waited for ${this.step}` +
          (tooLarge
            ? `; connection.start-ok was ${this.startOkSize} bytes, and a server need take only ${FRAME_MIN_SIZE} ` +
              "before tune (RabbitMQ: initial_frame_max)"
            : ""),
        possiblyAuthenticationFailure: afterStartOk && (!closesOnAuthFailure || tooLarge)
      })
    )
  }

  private expect<T extends Method["_tag"]>(
    method: Method,
    tag: T
  ): Effect.Effect<Extract<Method, { _tag: T }>, AmqpConnectionError> {
    if (method._tag === tag) return Effect.succeed(method as Extract<Method, { _tag: T }>)
    const error = this.error(
      new ProtocolViolation({ replyCode: 505, message: `expected ${tag} during the handshake, got ${method._tag}` })
    )
    return Effect.sync(() => this.fail(error.reason, "end")).pipe(Effect.andThen(Effect.fail(error)))
  }

  /** The AMQP handshake, bounded as a whole by `handshakeTimeout`. */
  readonly handshake: Effect.Effect<void, AmqpConnectionError, Scope.Scope> = Effect.gen({ self: this }, function*() {
    const deadline = Date.now() + this.options.handshakeTimeout
    this.step = "start"
    this.transport.write(PROTOCOL_HEADER)
    const start = yield* this.expect(yield* this.next(deadline), "connection.start")
    this.serverProperties = start.serverProperties
    const mechanisms = String(start.mechanisms).split(" ")
    const mechanism = this.options.authMechanism
    if (!mechanisms.includes(mechanism)) {
      const error = this.error(
        new HandshakeFailed({
          step: "start",
          message: `the server does not offer ${mechanism}; it offers ${mechanisms.join(", ")}`,
          possiblyAuthenticationFailure: false
        })
      )
      this.fail(error.reason, "end")
      return yield* Effect.fail(error)
    }
    const startOkFrame = encodeMethod(0, startOk(this.options, mechanism, this.secret))
    this.startOkSize = startOkFrame.length
    this.transport.write(startOkFrame)
    this.step = "tune"
    let reply = yield* this.next(deadline)
    while (reply._tag === "connection.secure") {
      this.step = "secure"
      this.writeMethod(
        0,
        Methods.connectionSecureOk({ response: saslResponse(mechanism, this.options.username, this.secret) })
      )
      reply = yield* this.next(deadline)
    }
    const tune = yield* this.expect(reply, "connection.tune")
    if (tune.frameMax !== 0 && tune.frameMax < 4096) {
      const error = this.error(
        new ProtocolViolation({ replyCode: 501, message: `server proposed frame_max ${tune.frameMax}, below 4096` })
      )
      this.fail(error.reason, "end")
      return yield* Effect.fail(error)
    }
    this.tuned = {
      channelMax: negotiate(this.options.channelMax, tune.channelMax),
      frameMax: negotiate(this.options.frameMax, tune.frameMax),
      heartbeat: negotiate(this.options.heartbeat, tune.heartbeat)
    }
    this.writeMethod(0, Methods.connectionTuneOk(this.tuned))
    this.tuneSent = true
    this.decoder.setFrameMax(this.tuned.frameMax)
    this.encoder.setFrameMax(this.tuned.frameMax)
    if (this.tuned.heartbeat > 0) {
      this.heartbeatFiber = yield* Effect.forkScoped(tracked("heartbeat", this.heartbeatLoop), {
        startImmediately: true
      })
    }
    this.step = "open"
    this.writeMethod(0, Methods.connectionOpen({ virtualHost: this.options.vhost }))
    yield* this.expect(yield* this.next(deadline), "connection.open-ok")
    // The server may have closed the connection in the same read as its open-ok.
    if (this.state !== "handshake") return yield* Effect.fail(this.closedError())
    this.state = "open"
  })

  // -------------------------------------------------------------------------------------------
  // heartbeat
  // -------------------------------------------------------------------------------------------

  /**
   * Sends a heartbeat when nothing was sent for half the interval; fails the connection when
   * nothing arrived for two intervals. A tick that wakes late (the event loop was busy) does not
   * judge silence: bytes may be waiting unread, so it waits one more tick and reports the lag.
   */
  private get heartbeatLoop(): Effect.Effect<void> {
    const interval = this.tuned.heartbeat * 1000
    const tick = Math.max(50, Math.floor(interval / 4))
    return Effect.gen({ self: this }, function*() {
      while (this.state !== "closed") {
        const planned = Date.now() + tick
        yield* Effect.sleep(tick)
        const now = Date.now()
        const lag = now - planned
        if (lag > this.maxEventLoopLag) this.maxEventLoopLag = lag
        if (this.isClosed()) return
        if (now - this.transport.lastSent >= interval / 2) this.transport.write(HEARTBEAT_FRAME)
        // While a consumer's backpressure pauses reading, the broker's frames (heartbeats too)
        // wait unread: one read goes through whenever half an interval passed without one, so a
        // peer that died is still noticed once what it sent before has been read.
        if (this.pausers.size > 0 && now - this.transport.lastReceived >= interval / 2) this.readOnce()
        const silent = now - this.transport.lastReceived
        if (silent >= 2 * interval && lag < tick) {
          this.fail(new HeartbeatTimeout({ heartbeatSeconds: this.tuned.heartbeat, silentMillis: silent }), "destroy")
          return
        }
      }
    })
  }

  // -------------------------------------------------------------------------------------------
  // update-secret
  // -------------------------------------------------------------------------------------------

  updateSecret(
    secret: Redacted.Redacted<string>,
    reason: string
  ): Effect.Effect<void, AmqpConnectionError | AmqpEncodeError> {
    return Effect.suspend((): Effect.Effect<void, AmqpConnectionError | AmqpEncodeError> => {
      if (this.state !== "open") return Effect.fail(this.closedError())
      const frame = this.encodeMethod(0, Methods.connectionUpdateSecret({ newSecret: Redacted.value(secret), reason }))
      if (frame instanceof AmqpEncodeError) return Effect.fail(frame)
      const waiter = Deferred.makeUnsafe<void>()
      this.updateSecretOk.push(waiter)
      this.transport.write(frame)
      return Deferred.await(waiter).pipe(
        Effect.andThen(Effect.suspend(() => {
          if (this.isClosed()) return Effect.fail(this.closedError())
          this.secret = secret
          return Effect.void
        }))
      )
    })
  }

  get currentSecret(): Redacted.Redacted<string> {
    return this.secret
  }
}

/** The encoder's typed error, caught; any other exception is a defect and goes on. */
export const asEncodeError = (error: unknown): AmqpEncodeError => {
  if (error instanceof AmqpEncodeError) return error
  throw error
}

/** Runs the handshake on a fresh transport; the scope gets the ordered shutdown. */
export const establish = (
  options: ConnectionOptions,
  transport: Transport,
  events: PubSub.PubSub<ConnectionEvent>
): Effect.Effect<ConnectionCore, AmqpConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    const inbox = yield* Queue.unbounded<Method, Cause.Done>()
    const core = new ConnectionCore(options, transport, events, inbox)
    yield* Effect.addFinalizer(() => core.shutdown)
    yield* core.handshake
    return core
  })
