/**
 * @effect-amqp/protocol
 */
export {}
