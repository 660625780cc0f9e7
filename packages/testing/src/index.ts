/**
 * @effect-amqp/testing
 */
export {}
