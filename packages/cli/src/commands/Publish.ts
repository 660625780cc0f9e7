/**
 * `effect-amqp publish`: sends `--count` messages of `--size` bytes, to a queue through the default
 * exchange or to `--exchange` with a routing key, and exits 0 only when all were written (and, with
 * `--confirm`, confirmed by the broker).
 *
 * Through the default exchange, without `--declare`, the queue must exist: it is checked first
 * with a passive `queue.declare`, so a typo fails with 404. A named exchange is checked the same
 * way with a passive `exchange.declare`; with `--declare` and `--queue`, the queue is declared and
 * bound to it with the routing key first. With `--confirm` the publishes are mandatory, so a
 * message no queue is bound for fails the command; without it, the broker drops such a message,
 * but a publish it refuses (an internal exchange) still fails the command, found by one more round
 * trip at the end. Bodies come from `Message.body`.
 *
 * @since 0.1.0
 */
import { AmqpChannel, AmqpChannelError } from "@effect-amqp/client"
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
  readonly queue: Option.Option<string>
  readonly exchange: Option.Option<string>
  readonly routingKey: Option.Option<string>
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
  const destination = yield* destinationOf(options)
  const target = yield* Broker.target(options.url)
  const { connection } = yield* Broker.connect(target, { connectionName: "effect-amqp publish" })
  const channel = yield* AmqpChannel.make(connection, { maxOutstandingConfirms: options.window })
  yield* prepare(channel, destination, options.declare)
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
    return channel.publish(destination.exchange, destination.routingKey, body, {
      properties: Message.properties(id),
      mandatory: options.confirm
    }).pipe(Effect.map(() => {
      done++
      byteCount += body.length
    }))
  }
  yield* Message.forEachId(options.count, options.confirm ? options.window : 1, publishOne)
  if (!options.confirm) yield* handled(channel, destination)

  const verb = options.confirm ? "published and confirmed" : "published"
  yield* Console.log(Report.summary(verb, done, byteCount, Report.secondsSince(start)))
}, Effect.scoped)

/**
 * Where the messages go: an exchange (`""` for the default one), the routing key, and the queue
 * named by `--queue`, if any, to check or declare (and bind to a named exchange).
 *
 * @since 0.1.0
 * @category models
 */
export interface Destination {
  readonly exchange: string
  readonly routingKey: string
  readonly queue: string | undefined
}

const refuse = (message: string) => Effect.fail(new Report.UsageError({ command: "publish", message }))

/**
 * The destination the flags name, or the reason they do not fit together. Through the default
 * exchange the routing key is the queue's name, so `--queue` is needed and `--routing-key` is
 * refused; with a named exchange, `--queue` comes only with `--declare`, which binds it.
 *
 * @since 0.1.0
 * @category destination
 */
export const destinationOf = (
  options: Pick<Options, "queue" | "exchange" | "routingKey" | "declare">
): Effect.Effect<Destination, Report.UsageError> => {
  const queue = Option.getOrUndefined(options.queue)
  const exchange = Option.getOrElse(options.exchange, () => "")
  const routingKey = Option.getOrUndefined(options.routingKey)
  if (exchange === "") {
    if (routingKey !== undefined) {
      return refuse("--routing-key needs --exchange: through the default exchange the routing key is --queue")
    }
    if (queue === undefined) return refuse("give --queue, or --exchange (with --routing-key)")
    return Effect.succeed({ exchange, routingKey: queue, queue })
  }
  if (queue !== undefined && !options.declare) {
    return refuse("--queue with --exchange needs --declare, which declares the queue and binds it")
  }
  if (queue === undefined && options.declare) return refuse("--declare with --exchange needs the --queue to bind")
  return Effect.succeed({ exchange, routingKey: routingKey ?? queue ?? "", queue })
}

/** Checks, or with `declare` creates, what the destination names before anything is published. */
const prepare = (channel: AmqpChannel.AmqpChannel, destination: Destination, declare: boolean) =>
  Effect.gen(function*() {
    const { exchange, queue } = destination
    if (exchange !== "") {
      yield* failIfMissing(
        channel.exchangeDeclare(exchange, "direct", { passive: true }),
        "publish declares no exchange"
      )
    }
    if (queue !== undefined && !declare) {
      yield* failIfMissing(channel.queueDeclare(queue, { passive: true }), "--declare creates it")
    }
    if (queue !== undefined && declare) {
      yield* channel.queueDeclare(queue, { durable: false })
      if (exchange !== "") yield* channel.queueBind(queue, exchange, destination.routingKey)
    }
  })

/**
 * Returns once the broker has handled every publish before it: it answers a method on a channel
 * only after what came before, so a publish it refused (a channel closed with 403 or 404) fails
 * here instead of the command exiting 0 with the refusal still on its way.
 */
const handled = (channel: AmqpChannel.AmqpChannel, destination: Destination) =>
  destination.exchange !== ""
    ? channel.exchangeDeclare(destination.exchange, "direct", { passive: true })
    : channel.queueDeclare(destination.routingKey, { passive: true })

/** A 404 from a passive declare becomes the command's failure, with a hint after the broker's words. */
const failIfMissing = <A, E, R>(effect: Effect.Effect<A, E, R>, hint: string) =>
  Effect.catchIf(
    effect,
    (error) => error instanceof AmqpChannelError && error.replyCode === 404,
    (error) => Effect.fail(new Report.CommandFailed({ message: `${(error as AmqpChannelError).message}; ${hint}` }))
  )

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("publish", {
  url: Flags.url,
  queue: Flags.queue.pipe(
    Flag.withDescription(
      "Queue to publish to through the default exchange; with --exchange and --declare, the queue to declare and bind."
    ),
    Flag.optional
  ),
  exchange: Flags.shortString("exchange", "Exchange to publish to (it must exist). Default: the default exchange.")
    .pipe(
      Flag.optional
    ),
  routingKey: Flags.shortString("routing-key", "Routing key, with --exchange. Default: --queue, else empty.").pipe(
    Flag.optional
  ),
  count: Flags.count("Messages to publish.", 1000),
  size: Flag.Int("size").pipe(
    Flag.withDescription(
      "Body size in bytes: \"<id>:\" followed by letters, cut short to fit (0 sends empty bodies). Default 100."
    ),
    Flag.withDefault(100),
    Flag.filter((n) => n >= 0 && n <= 128 * 1024 * 1024, (n) => `--size must be 0 to 134217728 bytes, got ${n}`)
  ),
  confirm: Flags.boolean("confirm", "Use publisher confirms; exit 0 only once the broker acked every message."),
  declare: Flags.boolean(
    "declare",
    "Declare --queue first (non-durable, no arguments), and bind it to --exchange with the routing key."
  ),
  window: Flags.window,
  progress: Flags.progress
}, run).pipe(
  Command.withDescription(
    "Publish --count messages of --size bytes to --queue through the default exchange, or to --exchange."
  )
)
