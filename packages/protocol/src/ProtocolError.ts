/**
 * The typed errors of the wire codec.
 *
 * Decoding failures carry the AMQP reply code a peer must close the connection with: 501
 * FRAME_ERROR for malformed framing, 502 SYNTAX_ERROR for illegal field values, 503
 * COMMAND_INVALID for a method that may not be sent where it was (a connection method on a
 * channel), 504 CHANNEL_ERROR for a frame on a channel that is not open and 505 UNEXPECTED_FRAME
 * for a frame that arrives where it may not. Encoding failures describe a value that has no AMQP
 * representation (a short string over 255 bytes, a table nested too deep).
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"

/**
 * The reply codes a decoding failure closes the connection with.
 *
 * @since 0.1.0
 * @category models
 */
export type FrameErrorCode = 501 | 502 | 503 | 504 | 505

/**
 * Malformed input from the peer. The connection must be closed with `replyCode`.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpFrameError extends Data.TaggedError("AmqpFrameError")<{
  readonly replyCode: FrameErrorCode
  readonly message: string
}> {}

/**
 * A value that cannot be written as AMQP.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpEncodeError extends Data.TaggedError("AmqpEncodeError")<{
  readonly message: string
}> {}

/** @internal */
export const frameError = (message: string): AmqpFrameError => new AmqpFrameError({ replyCode: 501, message })

/** @internal */
export const syntaxError = (message: string): AmqpFrameError => new AmqpFrameError({ replyCode: 502, message })

/** @internal */
export const commandInvalid = (message: string): AmqpFrameError => new AmqpFrameError({ replyCode: 503, message })

/** @internal */
export const channelError = (message: string): AmqpFrameError => new AmqpFrameError({ replyCode: 504, message })

/** @internal */
export const unexpectedFrame = (message: string): AmqpFrameError => new AmqpFrameError({ replyCode: 505, message })
