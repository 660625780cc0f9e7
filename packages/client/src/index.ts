/**
 * @effect-amqp/client
 */
export {}
