/**
 * @effect-amqp/cli: the `effect-amqp` command line tool (publish, consume, demo, perf).
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as Cli from "./Cli.ts"

/**
 * @since 0.1.0
 */
export * as DeliveryJson from "./DeliveryJson.ts"

/**
 * @since 0.1.0
 */
export * as Histogram from "./Histogram.ts"

/**
 * @since 0.1.0
 */
export * as Message from "./Message.ts"
