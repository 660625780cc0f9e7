/**
 * An Effect backend's view: the connection, a channel and a confirming publisher come from layers,
 * a consumer is a stream. `NodeRuntime.runMain` interrupts the program on Ctrl-C, and the layers
 * then close channel and connection in order. Run: `pnpm exec node examples/service.ts` with a
 * broker on 127.0.0.1:5672 (or AMQP_URL set).
 */
import { AmqpChannel, AmqpConnection, AmqpPublisher } from "@effect-amqp/client"
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Stream } from "effect"

const program = Effect.gen(function*() {
  // The services are the `AmqpChannel`/`AmqpPublisher` tags inside the modules of the same name.
  const channel = yield* AmqpChannel.AmqpChannel
  const publisher = yield* AmqpPublisher.AmqpPublisher
  const { queue } = yield* channel.queueDeclare("", { exclusive: true })

  for (let i = 0; i < 100; i++) yield* publisher.publish("", queue, new TextEncoder().encode(`order ${i}`))

  const received = yield* AmqpPublisher.consume(queue, { prefetch: 50 }).pipe(
    Stream.take(100),
    Stream.runFoldEffect(() => 0, (n, delivery) => Effect.as(delivery.ack(), n + 1))
  )
  yield* Effect.log(`published 100 with confirms, consumed ${received}`)
})

const Amqp = Layer.mergeAll(AmqpChannel.layer(), AmqpPublisher.layer()).pipe(
  Layer.provideMerge(AmqpConnection.layerConfig)
)

NodeRuntime.runMain(program.pipe(Effect.provide(Amqp)))
