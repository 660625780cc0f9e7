/**
 * A recovering client with a reconnect policy of its own: every 500 ms, at most 20 times, never for
 * a refused login or vhost. Run: `pnpm exec node examples/recovering.ts` with a broker on
 * 127.0.0.1:5672.
 */
import { AmqpClient, type AmqpConnectionError, ConnectionConfig } from "@effect-amqp/client"
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Schedule, Stream } from "effect"

const reconnect = Schedule.spaced("500 millis").pipe(
  Schedule.upTo({ times: 20 }),
  Schedule.setInputType<AmqpConnectionError>(),
  Schedule.while(({ input }) => !input.isPermanent)
)

const program = Effect.gen(function*() {
  const options = yield* ConnectionConfig.fromUrl("amqp://guest:guest@127.0.0.1:5672")
  const client = yield* AmqpClient.make(options, { reconnect })
  const channel = yield* client.channel()
  const { queue } = yield* channel.queueDeclare("", { exclusive: true })
  yield* channel.confirmSelect
  yield* channel.publish("", queue, new TextEncoder().encode("survives reconnects"))
  const [delivery] = yield* channel.consume(queue).pipe(Stream.take(1), Stream.runCollect)
  yield* delivery!.ack()
  console.log(new TextDecoder().decode(delivery!.body))
}).pipe(Effect.scoped)

NodeRuntime.runMain(program)
