/**
 * `AmqpPublisher`: a service that publishes with confirms on a channel of its own, for Effect
 * backends that want `yield* AmqpPublisher.AmqpPublisher` (the tag inside this module) and nothing
 * else. `consume` is its counterpart: a
 * stream of deliveries on a channel of its own, with a prefetch, closed with the stream.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as AmqpChannel from "./AmqpChannel.ts"
import { AmqpConnection } from "./AmqpConnection.ts"
import type { AmqpConfigError, AmqpConsumerCancelled, AmqpPublishError } from "./AmqpError.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface AmqpPublisher {
  /** Publishes and waits for the broker's confirm. */
  readonly publish: (
    exchange: string,
    routingKey: string,
    body: Uint8Array,
    options?: AmqpChannel.PublishOptions
  ) => Effect.Effect<void, AmqpPublishError | AmqpChannel.ChannelError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const AmqpPublisher: Context.Service<AmqpPublisher, AmqpPublisher> = Context.Service<AmqpPublisher>(
  "@effect-amqp/client/AmqpPublisher"
)

/**
 * A publisher on its own confirm-mode channel of the `AmqpConnection` in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: AmqpChannel.ChannelOptions
): Layer.Layer<AmqpPublisher, AmqpChannel.ChannelError | AmqpConfigError, AmqpConnection> =>
  Layer.effect(
    AmqpPublisher,
    Effect.gen(function*() {
      const connection = yield* AmqpConnection
      const channel = yield* AmqpChannel.make(connection, options)
      yield* channel.confirmSelect
      return { publish: channel.publish }
    })
  )

/**
 * Consumes `queue` on a channel of its own with `prefetch` unacknowledged deliveries at most; the
 * channel closes when the stream ends.
 *
 * @since 0.1.0
 * @category consuming
 */
export const consume = (
  queue: string,
  options: AmqpChannel.ConsumeOptions & { readonly prefetch?: number } = {}
): Stream.Stream<AmqpChannel.Delivery, AmqpChannel.ChannelError | AmqpConsumerCancelled, AmqpConnection> =>
  Stream.unwrap(Effect.gen(function*() {
    const connection = yield* AmqpConnection
    const channel = yield* AmqpChannel.make(connection)
    if (options.prefetch !== undefined) yield* channel.qos(options.prefetch)
    return channel.consume(queue, options)
  }))
