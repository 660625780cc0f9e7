/**
 * `effect-amqp consume`: takes `--count` messages from a queue with manual acks and exits once all
 * were acknowledged, printing count, bytes and rate. With `--print` every delivery is also written
 * to stdout as one line of JSON (`DeliveryJson`), headers with their AMQP field types; the summary
 * then goes to stderr so that stdout stays JSON. A delivery is acknowledged once its line is
 * written: when the reader goes away, the command fails and the rest stay in the queue. Written
 * means handed to stdout: into a pipe, that is its buffer, so lines a reader that quits early
 * (`| head`) left unread there are acknowledged all the same; a file keeps every line.
 *
 * Deliveries past `--count` that the broker already sent are returned to the queue (the consumer
 * is cancelled and they are rejected with requeue). `--timeout` bounds the wait for the messages.
 *
 * @since 0.1.0
 */
import { AmqpChannel } from "@effect-amqp/client"
import { Console, Effect, Option, Stream } from "effect"
import { Command, Flag } from "effect/cli"
import * as Broker from "../Broker.ts"
import * as DeliveryJson from "../DeliveryJson.ts"
import * as Report from "../Report.ts"
import * as Flags from "./Flags.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly url: Option.Option<string>
  readonly queue: string
  readonly count: number
  readonly prefetch: number
  readonly print: boolean
  readonly timeout: Option.Option<number>
  readonly progress: boolean
}

/**
 * Consumes as described in the module header.
 *
 * @since 0.1.0
 * @category commands
 */
export const run = Effect.fn("effect-amqp consume")(function*(options: Options) {
  const target = yield* Broker.target(options.url)
  const { connection } = yield* Broker.connect(target, {
    connectionName: "effect-amqp consume",
    typedHeaders: options.print
  })
  const channel = yield* AmqpChannel.make(connection)
  yield* channel.qos(options.prefetch)

  let done = 0
  let byteCount = 0
  const start = performance.now()
  yield* Report.progress(
    Report.progressWanted(options.progress),
    () => `consume: ${done}/${options.count} acked, ${Report.rate(done, Report.secondsSince(start))}`
  )
  const handle = (delivery: AmqpChannel.Delivery) =>
    Effect.gen(function*() {
      // Acknowledged once its line is written: one that a closed pipe refused goes back to the queue.
      if (options.print) {
        yield* Report.stdoutLine(JSON.stringify(DeliveryJson.deliveryJson(delivery))).pipe(
          Effect.mapError((error) =>
            new Report.CommandFailed({
              message: `${error.message} after ${done} messages; the others stay in "${options.queue}"`
            })
          )
        )
      }
      yield* delivery.ack()
      done++
      byteCount += delivery.body.length
    })
  const consumeAll = channel.consume(options.queue).pipe(Stream.take(options.count), Stream.runForEach(handle))
  yield* Option.match(options.timeout, {
    onNone: () => consumeAll,
    onSome: (seconds) =>
      consumeAll.pipe(Effect.timeoutOrElse({
        duration: `${seconds} seconds`,
        orElse: () =>
          Effect.fail(
            new Report.CommandFailed({
              message: `received ${done} of ${options.count} messages from "${options.queue}" within ${seconds} s`
            })
          )
      }))
  })

  const line = Report.summary("consumed", done, byteCount, Report.secondsSince(start))
  yield* options.print ? Console.error(line) : Console.log(line)
}, Effect.scoped)

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("consume", {
  url: Flags.url,
  queue: Flags.queue,
  count: Flags.count("Messages to consume and acknowledge before exiting.", 1000),
  prefetch: Flags.prefetch,
  print: Flags.boolean(
    "print",
    "Write each delivery to stdout as one JSON line (typed headers; body as text, or base64 if not UTF-8)."
  ),
  timeout: Flag.Int("timeout").pipe(
    Flag.withDescription("Give up (exit 1) when the messages have not all arrived within this many seconds."),
    Flag.filter((n) => n >= 1, (n) => `--timeout must be at least 1 second, got ${n}`),
    Flag.optional
  ),
  progress: Flags.progress
}, run).pipe(
  Command.withDescription("Consume --count messages from --queue with manual acks, then exit.")
)
