/**
 * Publish with a confirm and consume one message. Run: `pnpm exec node examples/quickstart.ts`
 * with a broker on 127.0.0.1:5672.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Stream } from "effect"

const program = Effect.gen(function*() {
  const connection = yield* AmqpConnection.fromUrl("amqp://guest:guest@127.0.0.1:5672")
  const channel = yield* AmqpChannel.make(connection)
  const { queue } = yield* channel.queueDeclare("", { exclusive: true })

  yield* channel.confirmSelect
  yield* channel.publish("", queue, new TextEncoder().encode("hello")) // completes on the broker's ack

  yield* channel.consume(queue).pipe(
    Stream.take(1),
    Stream.runForEach((delivery) =>
      Effect.andThen(delivery.ack(), Console.log(`received: ${new TextDecoder().decode(delivery.body)}`))
    )
  )
}).pipe(Effect.scoped) // closing the scope closes channel and connection in order

// runMain interrupts the program on Ctrl-C, so the scope still closes in order.
NodeRuntime.runMain(program)
