/**
 * `effect-amqp publish`: sends `--count` messages of `--size` bytes to a queue through the default
 * exchange, and exits 0 only when all were written (and, with `--confirm`, confirmed by the broker).
 *
 * Without `--declare` the queue must exist: it is checked first with a passive `queue.declare`, so
 * a typo fails with 404 instead of publishing into nothing. With `--confirm` the publishes are
 * mandatory, so an unroutable message fails the command too. Bodies come from `Message.body`.
 *
 * @since 0.1.0
 */
import { AmqpChannel } from "@effect-amqp/client"
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as Broker from "../Broker.ts"
import * as Message from "../Message.ts"
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
  readonly size: number
  readonly confirm: boolean
  readonly declare: boolean
  readonly window: number
  readonly progress: boolean
}

/**
 * Publishes as described in the module header and prints the summary line on stdout.
 *
 * @since 0.1.0
 * @category commands
 */
export const run = Effect.fn("effect-amqp publish")(function*(options: Options) {
  const target = yield* Broker.target(options.url)
  const { connection } = yield* Broker.connect(target, { connectionName: "effect-amqp publish" })
  const channel = yield* AmqpChannel.make(connection, { maxOutstandingConfirms: options.window })
  if (options.declare) yield* channel.queueDeclare(options.queue, { durable: false })
  else {
    yield* channel.queueDeclare(options.queue, { passive: true }).pipe(
      Effect.catchIf(
        (error) => error._tag === "AmqpChannelError" && error.replyCode === 404,
        (error) => Effect.fail(new Report.CommandFailed({ message: `${error.message}; --declare creates it` }))
      )
    )
  }
  if (options.confirm) yield* channel.confirmSelect

  let done = 0
  let byteCount = 0
  const start = performance.now()
  yield* Report.progress(
    Report.progressWanted(options.progress),
    () =>
      `publish: ${done}/${options.count} ${options.confirm ? "confirmed" : "written"}, ` +
      Report.rate(done, Report.secondsSince(start))
  )
  const publishOne = (id: number) => {
    const body = Message.body(id, options.size)
    return channel.publish("", options.queue, body, {
      properties: Message.properties(id),
      mandatory: options.confirm
    }).pipe(Effect.map(() => {
      done++
      byteCount += body.length
    }))
  }
  yield* Message.forEachId(options.count, options.confirm ? options.window : 1, publishOne)

  const verb = options.confirm ? "published and confirmed" : "published"
  yield* Console.log(Report.summary(verb, done, byteCount, Report.secondsSince(start)))
}, Effect.scoped)

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("publish", {
  url: Flags.url,
  queue: Flags.queue,
  count: Flags.count("Messages to publish.", 1000),
  size: Flag.Int("size").pipe(
    Flag.withDescription(
      "Body size in bytes: \"<id>:\" followed by letters, cut short to fit (0 sends empty bodies). Default 100."
    ),
    Flag.withDefault(100),
    Flag.filter((n) => n >= 0 && n <= 128 * 1024 * 1024, (n) => `--size must be 0 to 134217728 bytes, got ${n}`)
  ),
  confirm: Flags.boolean("confirm", "Use publisher confirms; exit 0 only once the broker acked every message."),
  declare: Flags.boolean("declare", "Declare the queue first (non-durable, no arguments)."),
  window: Flags.window,
  progress: Flags.progress
}, run).pipe(
  Command.withDescription("Publish --count messages of --size bytes to --queue through the default exchange.")
)
