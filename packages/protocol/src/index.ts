/**
 * @effect-amqp/protocol: the AMQP 0-9-1 wire format with RabbitMQ's extensions, free of I/O.
 *
 * Frames, methods, field tables and content properties, an incremental frame decoder and a
 * message encoder. Connections, sockets and state live in `@effect-amqp/client`.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * from "./CommandAssembler.ts"

/**
 * @since 0.1.0
 */
export * from "./FieldTable.ts"

/**
 * @since 0.1.0
 */
export * from "./Frame.ts"

/**
 * @since 0.1.0
 */
export * from "./FrameDecoder.ts"

/**
 * @since 0.1.0
 */
export * from "./generated/Methods.ts"

/**
 * @since 0.1.0
 */
export * from "./MessageEncoder.ts"

/**
 * @since 0.1.0
 */
export * from "./Properties.ts"

/**
 * @since 0.1.0
 */
export * from "./ProtocolError.ts"
