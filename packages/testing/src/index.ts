/**
 * @effect-amqp/testing: fault proxy, private RabbitMQ nodes, leak probes and a scripted AMQP peer
 * for tests of AMQP clients.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as FaultProxy from "./FaultProxy.ts"
