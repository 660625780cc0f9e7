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
 * `Data.TaggedError` without a captured stack trace, for the errors of this package and of the
 * client. They are made in the methods of an encoder, a decoder or a connection's state machine,
 * often in a socket's data callback: their frames would show only the library's internals, and
 * until a stack is formatted V8 keeps the receiver of each frame, so a kept error (a log of past
 * outages) would keep a whole dead connection alive, socket and buffers. The message and the
 * fields say what happened.
 *
 * @internal
 */
export const StacklessTaggedError = <Tag extends string>(tag: Tag): ReturnType<typeof Data.TaggedError<Tag>> => {
  const Base = Data.TaggedError(tag)
  return class extends Base {
    constructor(args?: any) {
      const limit = Error.stackTraceLimit
      Error.stackTraceLimit = 0
      try {
        super(args)
      } finally {
        Error.stackTraceLimit = limit
      }
    }
  } as ReturnType<typeof Data.TaggedError<Tag>>
}

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
export class AmqpFrameError extends StacklessTaggedError("AmqpFrameError")<{
  readonly replyCode: FrameErrorCode
  readonly message: string
}> {}

/**
 * A value that cannot be written as AMQP.
 *
 * @since 0.1.0
 * @category errors
 */
export class AmqpEncodeError extends StacklessTaggedError("AmqpEncodeError")<{
  readonly message: string
}> {}

/** @internal */
export const frameError = (message: string): AmqpFrameError => new AmqpFrameError({ replyCode: 501, message })

/** @internal */
export const syntaxError = (message: string): AmqpFrameError => new AmqpFrameError({ replyCode: 502, message })

/** @internal */
export const commandInvalid = (message: string): AmqpFrameError => new AmqpFrameError({ replyCode: 503, message })

/** @internal */
export const unexpectedFrame = (message: string): AmqpFrameError => new AmqpFrameError({ replyCode: 505, message })
