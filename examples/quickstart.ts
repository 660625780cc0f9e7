/**
 * Publish with a confirm and consume one message. Run: `node examples/quickstart.ts` with a broker
 * on 127.0.0.1:5672.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Effect, Stream } from "effect"

const program = Effect.gen(function*() {
  const connection = yield* AmqpConnection.fromUrl("amqp://guest:guest@127.0.0.1:5672")
  const channel = yield* AmqpChannel.make(connection)
  const { queue } = yield* channel.queueDeclare("", { exclusive: true })

  yield* channel.confirmSelect
  yield* channel.publish("", queue, new TextEncoder().encode("hello")) // completes on the broker's ack

  yield* channel.consume(queue).pipe(
    Stream.take(1),
    Stream.runForEach((delivery) => delivery.ack())
  )
}).pipe(Effect.scoped) // closing the scope closes channel and connection in order

Effect.runPromise(program)
