/**
 * @effect-amqp/client: an AMQP 0-9-1 client for RabbitMQ built on Effect.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as AmqpConnection from "./AmqpConnection.ts"

/**
 * @since 0.1.0
 */
export * from "./AmqpError.ts"

/**
 * @since 0.1.0
 */
export * as ConnectionConfig from "./ConnectionConfig.ts"

/**
 * @since 0.1.0
 */
export * as AmqpChannel from "./AmqpChannel.ts"

/**
 * @since 0.1.0
 */
export * as AmqpClient from "./AmqpClient.ts"

/**
 * @since 0.1.0
 */
export * as AmqpPublisher from "./AmqpPublisher.ts"
