/**
 * @effect-amqp/testing: a fault proxy, private RabbitMQ nodes, leak probes and a scripted AMQP
 * peer, for tests of AMQP clients.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as BrokerNode from "./BrokerNode.ts"

/**
 * @since 0.1.0
 */
export * as Certificates from "./Certificates.ts"

/**
 * @since 0.1.0
 */
export * as FaultProxy from "./FaultProxy.ts"

/**
 * @since 0.1.0
 */
export * as LeakProbe from "./LeakProbe.ts"

/**
 * @since 0.1.0
 */
export * as LiveFibers from "./LiveFibers.ts"

/**
 * @since 0.1.0
 */
export * as ScriptedPeer from "./ScriptedPeer.ts"

/**
 * @since 0.1.0
 */
export * as SharedBroker from "./SharedBroker.ts"
