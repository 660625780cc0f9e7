/**
 * Every way an AMQP operation can fail, as typed errors a caller can match on.
 *
 * `AmqpConnectionError` ends a connection; its `reason` says how: the transport (refused, reset,
 * timed out, TLS), the handshake (which step, bad credentials, a forbidden vhost), the broker
 * (`connection.close` with its reply code), a heartbeat timeout, or a protocol violation.
 * `AmqpChannelError` ends one channel (404, 406, 403, 405 ...) and leaves the connection up.
 * Publishing and consuming add their own outcomes (`AmqpPublishError`, `AmqpConsumerCancelled`).
 *
 * No error ever carries a password.
 *
 * @since 0.1.0
 */
import { StacklessTaggedError } from "@effect-amqp/protocol"
import * as Data from "effect/Data"

/**
 * A value given to an operation cannot be written as AMQP: a short string over 255 bytes, a number
 * outside its field's range or not whole, a header value with no field type, or a method or
 * content header that would not fit in one frame of the negotiated frame_max. Only that operation
 * fails; nothing was sent and the channel and connection stay as they were.
 *
 * @since 0.1.0
 * @category errors
 */
export { AmqpEncodeError } from "@effect-amqp/protocol"

/**
 * The TCP connection could not be opened.
 *
 * @since 0.1.0
 * @category reasons
 */
export class ConnectFailed extends Data.TaggedClass("ConnectFailed")<{
  readonly host: string
  readonly port: number
  /** The system error code: ECONNREFUSED, EHOSTUNREACH, ENOTFOUND ... */
  readonly code: string
  readonly message: string
}> {}

/**
 * A deadline passed: opening the socket, the TLS handshake or an AMQP handshake step.
 *
 * @since 0.1.0
 * @category reasons
 */
export class Timeout extends Data.TaggedClass("Timeout")<{
  readonly step: "connect" | "tls" | HandshakeStep
  readonly afterMillis: number
}> {}

/**
 * How a TLS session failed.
 *
 * @since 0.1.0
 * @category reasons
 */
export type TlsFailureKind =
  | "UntrustedCertificate"
  | "HostnameMismatch"
  | "CertificateExpired"
  | "ClientCertificateRequired"
  /** A TLS client reached a port that does not speak TLS. */
  | "NotTls"
  /** A plain client reached a port that speaks only TLS. */
  | "ServerRequiresTls"
  | "HandshakeFailed"
  /**
   * A session that was set up failed later: a record that did not parse or decrypt, as when bytes
   * are corrupted on the way. One link's loss, not a setup that a retry cannot fix.
   */
  | "SessionFailed"

/**
 * @since 0.1.0
 * @category reasons
 */
export class TlsFailure extends Data.TaggedClass("TlsFailure")<{
  readonly kind: TlsFailureKind
  readonly message: string
  /** OpenSSL's or Node's code, e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE, ERR_TLS_CERT_ALTNAME_INVALID. */
  readonly code: string | undefined
}> {}

/**
 * The steps of the AMQP handshake, in order.
 *
 * @since 0.1.0
 * @category reasons
 */
export type HandshakeStep = "protocol-header" | "start" | "secure" | "tune" | "open"

/**
 * The server closed the socket, or the handshake could not go on, during `step`.
 *
 * @since 0.1.0
 * @category reasons
 */
export class HandshakeFailed extends Data.TaggedClass("HandshakeFailed")<{
  readonly step: HandshakeStep
  readonly message: string
  /**
   * True when the server closed right after `start-ok` and a refused login is a likely cause: one
   * side did not offer `authentication_failure_close` (with both offering it, as this client and
   * RabbitMQ do, RabbitMQ refuses a login with `connection.close` 403 instead), or `start-ok` was
   * larger than a server need take before `tune`.
   */
  readonly possiblyAuthenticationFailure: boolean
}> {}

/**
 * The server said `connection.close` (or refused the credentials or vhost during the handshake).
 *
 * @since 0.1.0
 * @category reasons
 */
export class ServerClosed extends Data.TaggedClass("ServerClosed")<{
  readonly replyCode: number
  readonly replyText: string
  readonly classId: number
  readonly methodId: number
  /** The method the code refers to, e.g. `basic.publish`, when class and method ids name one. */
  readonly method: string | undefined
  /** True when it came before `open-ok`: the broker refused the login, the vhost or the connection. */
  readonly duringHandshake: boolean
}> {}

/**
 * Nothing arrived from the server for two heartbeat intervals.
 *
 * @since 0.1.0
 * @category reasons
 */
export class HeartbeatTimeout extends Data.TaggedClass("HeartbeatTimeout")<{
  readonly heartbeatSeconds: number
  readonly silentMillis: number
}> {}

/**
 * The socket ended without an AMQP close: a FIN, a reset or an I/O error.
 *
 * @since 0.1.0
 * @category reasons
 */
export class TransportClosed extends Data.TaggedClass("TransportClosed")<{
  readonly how: "end" | "reset" | "error"
  readonly code: string | undefined
  readonly message: string
}> {}

/**
 * The server sent bytes that break the protocol; the client closed with `replyCode`.
 *
 * @since 0.1.0
 * @category reasons
 */
export class ProtocolViolation extends Data.TaggedClass("ProtocolViolation")<{
  readonly replyCode: number
  readonly message: string
}> {}

/**
 * The application closed the connection (its scope ended or it was interrupted), or, when
 * `channel` is set, that channel: what was still waiting on it ends with this reason while the
 * connection stays open.
 *
 * @since 0.1.0
 * @category reasons
 */
export class ClosedByApplication extends Data.TaggedClass("ClosedByApplication")<{
  readonly channel?: number | undefined
}> {}

/**
 * @since 0.1.0
 * @category reasons
 */
export type ConnectionErrorReason =
  | ConnectFailed
  | Timeout
  | TlsFailure
  | HandshakeFailed
  | ServerClosed
  | HeartbeatTimeout
  | TransportClosed
  | ProtocolViolation
  | ClosedByApplication

const describe = (reason: ConnectionErrorReason): string => {
  switch (reason._tag) {
    case "ConnectFailed":
      // Node's message repeats the code and the address ("connect ECONNREFUSED 127.0.0.1:1").
      return `cannot connect to ${reason.host}:${reason.port}: ` +
        (reason.message.includes(reason.code) ? reason.code : `${reason.code} ${reason.message}`)
    case "Timeout":
      return `timed out after ${reason.afterMillis} ms during ${reason.step}`
    case "TlsFailure":
      return `TLS failure (${reason.kind}): ${reason.message}`
    case "HandshakeFailed":
      return `handshake failed at ${reason.step}: ${reason.message}` +
        (reason.possiblyAuthenticationFailure ? " (possibly an authentication failure)" : "")
    case "ServerClosed":
      return `server closed the connection: ${reason.replyCode} ${reason.replyText}` +
        (reason.method !== undefined ? ` (${reason.method})` : "")
    case "HeartbeatTimeout":
      return `heartbeat timeout: nothing received for ${reason.silentMillis} ms ` +
        `(heartbeat ${reason.heartbeatSeconds} s)`
    case "TransportClosed":
      return `connection lost (${reason.how}${reason.code !== undefined ? ` ${reason.code}` : ""}): ${reason.message}`
    case "ProtocolViolation":
      return `protocol violation (${reason.replyCode}): ${reason.message}`
    case "ClosedByApplication":
      return reason.channel === undefined
        ? "connection closed by the application"
        : `channel ${reason.channel} closed by the application`
  }
}

/** RabbitMQ's texts for the 530s that pass: "connection limit (1) is reached", "vhost v is down". */
const PASSING_NOT_ALLOWED = /limit \(\d+\) is reached|is down\b/i

/**
 * A connection ended or could not be established.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpConnectionError extends StacklessTaggedError("AmqpConnectionError")<{
  readonly reason: ConnectionErrorReason
  /** The connection's name, as given in the options. */
  readonly connectionName: string | undefined
}> {
  override get message(): string {
    return describe(this.reason)
  }

  /** The AMQP reply code, when the failure has one (403, 530, 320, 501 ...). */
  get replyCode(): number | undefined {
    switch (this.reason._tag) {
      case "ServerClosed":
      case "ProtocolViolation":
        return this.reason.replyCode
      default:
        return undefined
    }
  }

  /**
   * True for failures that a retry cannot fix: bad credentials, a forbidden or missing vhost (403,
   * 530, 402 during the handshake), bad TLS setup. RabbitMQ also refuses with 530 a connection over
   * a vhost's or user's connection limit, or to a vhost that is down: those pass, and are not
   * permanent. Nor is a 530 on an open connection (a consumer tag used twice, say): it came from
   * what the application did, and a new connection works.
   */
  get isPermanent(): boolean {
    const reason = this.reason
    if (reason._tag === "ServerClosed") {
      const code = reason.replyCode
      if (!reason.duringHandshake) return false
      if (code === 530) return !PASSING_NOT_ALLOWED.test(reason.replyText)
      return code === 403 || code === 402
    }
    if (reason._tag === "HandshakeFailed" && reason.possiblyAuthenticationFailure) return true
    if (reason._tag === "TlsFailure") return reason.kind !== "HandshakeFailed" && reason.kind !== "SessionFailed"
    return false
  }
}

/**
 * The broker closed a channel (`channel.close`, a soft error such as 404 or 406); the connection
 * stays up. A channel that ends with its connection fails with the `AmqpConnectionError` instead.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpChannelError extends StacklessTaggedError("AmqpChannelError")<{
  readonly channel: number
  readonly replyCode: number
  readonly replyText: string
  readonly classId: number
  readonly methodId: number
  /** The method the code refers to, e.g. `queue.declare`. */
  readonly method: string | undefined
}> {
  override get message(): string {
    return `channel ${this.channel} closed by the broker: ${this.replyCode} ${this.replyText}` +
      (this.method !== undefined ? ` (${this.method})` : "")
  }
}

/**
 * A channel or connection that is already closed was used. `cause` says why it closed.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpClosedError extends StacklessTaggedError("AmqpClosedError")<{
  readonly what: "connection" | "channel"
  readonly cause: AmqpConnectionError | AmqpChannelError | undefined
}> {
  override get message(): string {
    return `the ${this.what} is closed` + (this.cause !== undefined ? `: ${this.cause.message}` : "")
  }
}

/**
 * Options that cannot work: a malformed URL, a frame_max below the protocol minimum, too many
 * channels, a confirm window of no publish.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpConfigError extends StacklessTaggedError("AmqpConfigError")<{
  readonly message: string
}> {}

/**
 * The broker nacked a publish (`basic.nack`): for example a full queue with overflow
 * `reject-publish`.
 *
 * @since 0.1.0
 * @category reasons
 */
export class Nacked extends Data.TaggedClass("Nacked")<{
  readonly deliveryTag: number
}> {}

/**
 * A mandatory publish could not be routed to any queue (`basic.return`).
 *
 * @since 0.1.0
 * @category reasons
 */
export class Returned extends Data.TaggedClass("Returned")<{
  readonly replyCode: number
  readonly replyText: string
  readonly exchange: string
  readonly routingKey: string
}> {}

/**
 * The channel or connection ended before the broker confirmed the publish: it may or may not have
 * been routed.
 *
 * @since 0.1.0
 * @category reasons
 */
export class Unconfirmed extends Data.TaggedClass("Unconfirmed")<{
  readonly cause: AmqpChannelError | AmqpConnectionError
  /**
   * False when the message never left the client (it waited for the confirm window, the socket or
   * an unblock): sending it again cannot duplicate it.
   */
  readonly sent: boolean
}> {}

/**
 * The broker blocked the connection (`connection.blocked`) for longer than the publish deadline.
 *
 * @since 0.1.0
 * @category reasons
 */
export class BlockedTimeout extends Data.TaggedClass("BlockedTimeout")<{
  readonly reason: string
  readonly afterMillis: number
}> {}

/**
 * @since 0.1.0
 * @category reasons
 */
export type PublishFailure = Nacked | Returned | Unconfirmed | BlockedTimeout

/**
 * A publish did not end as confirmed.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpPublishError extends StacklessTaggedError("AmqpPublishError")<{
  readonly reason: PublishFailure
}> {
  override get message(): string {
    const reason = this.reason
    switch (reason._tag) {
      case "Nacked":
        return `the broker nacked publish ${reason.deliveryTag}`
      case "Returned":
        return `unroutable: ${reason.replyCode} ${reason.replyText} (exchange "${reason.exchange}", ` +
          `routing key "${reason.routingKey}")`
      case "Unconfirmed":
        return `${reason.sent ? "unconfirmed" : "not sent"}: ${reason.cause.message}`
      case "BlockedTimeout":
        return `the broker blocked publishing for more than ${reason.afterMillis} ms: ${reason.reason}`
    }
  }
}

/**
 * The broker cancelled a consumer (`basic.cancel`), for example because its queue was deleted.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpConsumerCancelled extends StacklessTaggedError("AmqpConsumerCancelled")<{
  readonly consumerTag: string
  readonly queue: string
}> {
  override get message(): string {
    return `the broker cancelled consumer ${this.consumerTag} of queue "${this.queue}"`
  }
}

/**
 * A delivery from an earlier channel incarnation was acknowledged after a reconnect. It was not
 * sent: its delivery tag means nothing to the new channel and would close it with 406.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpStaleDelivery extends StacklessTaggedError("AmqpStaleDelivery")<{
  readonly deliveryTag: number
  readonly operation: "ack" | "nack" | "reject"
}> {
  override get message(): string {
    return `${this.operation} of delivery ${this.deliveryTag} dropped: it belongs to a channel that no longer exists`
  }
}

/**
 * An acknowledgement for a delivery tag the channel does not hold unsettled: the delivery was
 * already acked, nacked or rejected (alone or by a `multiple` one after it), came from a no-ack
 * consumer or `get`, was requeued by `basic.recover`, or was never delivered (or the tag is not a
 * whole number). It was not sent: the broker would close the channel with 406 PRECONDITION_FAILED
 * "unknown delivery tag". Reason `stream`: a nack or reject of a delivery from a stream consumer
 * (one started with `x-stream-offset`), which RabbitMQ answers by closing the whole connection
 * (540 NOT_IMPLEMENTED); such a delivery is still to be acked.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpUnknownDeliveryTag extends StacklessTaggedError("AmqpUnknownDeliveryTag")<{
  readonly deliveryTag: number
  readonly operation: "ack" | "nack" | "reject"
  readonly reason: "settled" | "no-ack" | "never-delivered" | "stream"
}> {
  override get message(): string {
    const why = this.reason === "settled"
      ? "it was already settled"
      : this.reason === "no-ack"
      ? "it was delivered without acknowledgement (no-ack)"
      : this.reason === "stream"
      ? "a stream takes no nack or reject (RabbitMQ would close the connection), only an ack"
      : "the channel has not delivered it"
    return `${this.operation} of delivery ${this.deliveryTag} not sent: ${why}`
  }
}

/**
 * A consumer on the same channel already has this consumer tag, or is starting with it. The
 * `basic.consume` was not sent: RabbitMQ answers a tag used twice by closing the whole connection
 * with 530 NOT_ALLOWED.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpConsumerTagInUse extends StacklessTaggedError("AmqpConsumerTagInUse")<{
  readonly consumerTag: string
  readonly channel: number
}> {
  override get message(): string {
    return `consumer tag "${this.consumerTag}" is already in use on channel ${this.channel}`
  }
}

/**
 * An operation a stream queue answers by closing the whole connection, refused before it was sent:
 *
 * - `basic.recover` on a channel that runs a consumer of a stream (one started with
 *   `x-stream-offset`) or holds its unsettled deliveries (RabbitMQ answers 541 INTERNAL_ERROR).
 *   Settle those deliveries and end the stream consumer first, or recover on another channel.
 * - `basic.get` of a queue this connection knows as a stream: one it declared with
 *   `x-queue-type: stream` or consumes as one (540 NOT_IMPLEMENTED). A stream declared elsewhere
 *   is not known, and gets no such protection.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpStreamRefused extends StacklessTaggedError("AmqpStreamRefused")<{
  readonly channel: number
  readonly operation: "basic.recover" | "basic.get"
  readonly queue: string | undefined
}> {
  override get message(): string {
    return this.operation === "basic.get"
      ? `basic.get not sent on channel ${this.channel}: queue "${this.queue}" is a stream`
      : `basic.recover not sent on channel ${this.channel}: it runs a stream consumer or holds a stream's deliveries`
  }
}

/**
 * Why a channel ended: the broker closed it, its connection ended, or the application closed it.
 *
 * @since 0.1.0
 * @category models
 */
export type ChannelEndCause = AmqpChannelError | AmqpConnectionError | AmqpClosedError

/**
 * Every channel id up to the negotiated channel_max is in use.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpChannelLimit extends StacklessTaggedError("AmqpChannelLimit")<{
  readonly channelMax: number
}> {
  override get message(): string {
    return `all ${this.channelMax} channels of the connection are in use (channel_max)`
  }
}
