/**
 * @effect-amqp/cli
 */
export {}
