/**
 * `effect-amqp demo`: a work queue with publisher confirms and manual acks, checked end to end.
 *
 * One publisher fiber sends `--count` messages with a window of `--window` unconfirmed publishes;
 * `--consumers` consumer fibers, each on its own channel of a second connection, take them with
 * prefetch `--prefetch` and ack each after recording its id (the body carries it, see `Message`).
 * When every confirmed id has been consumed (or `--timeout` passed) the consumers stop and the
 * report says how many messages were published, confirmed, nacked, consumed, lost (confirmed but
 * never consumed), redelivered and duplicated. The command exits 0 only when none was lost.
 *
 * The broker is `--url`, else `AMQP_URL`, else the local 127.0.0.1:5672, else (when that refuses
 * the connection) a private node started for the run. The queue has a unique name, is declared
 * non-durable and is deleted at the end, also on failure or interruption; it is also auto-delete, so
 * that the broker removes it once its consumers are gone should this process die without cleaning up.
 *
 * @since 0.1.0
 */
import { AmqpChannel, type AmqpConnection, AmqpPublishError } from "@effect-amqp/client"
import { Console, Deferred, Effect, Option, Stream } from "effect"
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
  readonly count: number
  readonly consumers: number
  readonly size: number
  readonly window: number
  readonly prefetch: number
  readonly timeout: number
  readonly progress: boolean
}

/**
 * The outcome of a run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Tally {
  published: number
  confirmed: number
  nacked: number
  /** Deliveries acknowledged, duplicates included. */
  consumed: number
  redelivered: number
  duplicates: number
  /** Deliveries whose body did not match the message its id names. */
  corrupt: number
  lost: number
}

/**
 * The report printed at the end, one `name value` pair per line.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatTally = (tally: Tally): string =>
  (["published", "confirmed", "nacked", "consumed", "lost", "redelivered", "duplicates", "corrupt"] as const)
    .map((key) => `${key.padEnd(12)}${tally[key]}`)
    .join("\n")

const uniqueQueueName = (): string =>
  `effect-amqp-demo-${Date.now().toString(36)}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`

/**
 * Runs the demo as described in the module header.
 *
 * @since 0.1.0
 * @category commands
 */
export const run = Effect.fn("effect-amqp demo")(function*(options: Options) {
  const requested = yield* Broker.target(options.url)
  const { connection: publisherConnection, target } = yield* Broker.connect(requested, {
    connectionName: "effect-amqp demo publisher",
    privateFallback: true
  })
  const { connection: consumerConnection } = yield* Broker.connect(target, {
    connectionName: "effect-amqp demo consumers"
  })
  const queue = uniqueQueueName()
  yield* Console.log(`demo: ${options.count} messages through queue ${queue} on ${Broker.describe(target)}`)
  yield* declareQueue(publisherConnection, queue)

  const tally: Tally = {
    published: 0,
    confirmed: 0,
    nacked: 0,
    consumed: 0,
    redelivered: 0,
    duplicates: 0,
    corrupt: 0,
    lost: 0
  }
  const consumed = new Set<number>()
  const awaiting = new Set<number>()
  let publisherDone = false
  const drained = yield* Deferred.make<void>()
  const checkDrained = Effect.suspend(() =>
    publisherDone && awaiting.size === 0 ? Deferred.succeed(drained, undefined) : Effect.void
  )
  const start = performance.now()
  yield* Report.progress(
    Report.progressWanted(options.progress),
    () =>
      `demo: published ${tally.published}/${options.count}, confirmed ${tally.confirmed}, ` +
      `consumed ${tally.consumed}, ${Report.rate(tally.consumed, Report.secondsSince(start))}`
  )

  const consumer = Effect.gen(function*() {
    const channel = yield* AmqpChannel.make(consumerConnection)
    yield* channel.qos(options.prefetch)
    yield* channel.consume(queue).pipe(Stream.runForEach((delivery) =>
      Effect.gen(function*() {
        const id = Message.idOf(delivery.body)
        if (id === undefined || !Message.isIntact(id, delivery.body)) tally.corrupt++
        if (delivery.redelivered) tally.redelivered++
        if (id !== undefined) {
          if (consumed.has(id)) tally.duplicates++
          consumed.add(id)
          awaiting.delete(id)
        }
        yield* delivery.ack()
        tally.consumed++
        yield* checkDrained
      })
    ))
  }).pipe(Effect.scoped)

  const publisher = Effect.gen(function*() {
    const channel = yield* AmqpChannel.make(publisherConnection, { maxOutstandingConfirms: options.window })
    yield* channel.confirmSelect
    const publishOne = (id: number) =>
      Effect.suspend(() => {
        tally.published++
        return channel.publish("", queue, Message.body(id, options.size), {
          properties: Message.properties(id),
          mandatory: true
        })
      }).pipe(
        Effect.map(() => {
          tally.confirmed++
          if (!consumed.has(id)) awaiting.add(id)
        }),
        Effect.catchIf(
          (error) => error instanceof AmqpPublishError && error.reason._tag === "Nacked",
          () => Effect.sync(() => tally.nacked++)
        )
      )
    yield* Effect.forEach(Message.ids(options.count), publishOne, { concurrency: options.window, discard: true })
    publisherDone = true
    yield* checkDrained
  }).pipe(Effect.scoped)

  const consumers = Effect.forEach(Message.ids(options.consumers), () => consumer, {
    concurrency: "unbounded",
    discard: true
  })
  const stopped = new Report.CommandFailed({ message: "the consumers stopped before the queue was drained" })
  const work = publisher.pipe(
    Effect.andThen(Deferred.await(drained).pipe(Effect.timeoutOption(`${options.timeout} seconds`))),
    Effect.asVoid
  )
  yield* Effect.raceFirst(work, consumers.pipe(Effect.andThen(Effect.fail(stopped))))

  tally.lost = awaiting.size
  const seconds = Report.secondsSince(start)
  yield* Console.log(formatTally(tally))
  yield* Console.log(`time        ${seconds.toFixed(2)} s (${Report.rate(tally.consumed, seconds)})`)
  if (tally.lost > 0) {
    return yield* new Report.CommandFailed({
      message: `${tally.lost} confirmed messages were not consumed within ${options.timeout} s`
    })
  }
}, Effect.scoped)

/** Declares `queue` on a channel of its own and deletes it when the scope closes. */
const declareQueue = (connection: AmqpConnection.AmqpConnection, queue: string) =>
  Effect.acquireRelease(
    Effect.scoped(
      Effect.flatMap(AmqpChannel.make(connection), (channel) => channel.queueDeclare(queue, { autoDelete: true }))
    ),
    () =>
      Effect.scoped(Effect.flatMap(AmqpChannel.make(connection), (channel) => channel.queueDelete(queue))).pipe(
        Effect.tapError((error) => Console.error(`effect-amqp: could not delete queue ${queue}: ${error.message}`)),
        Effect.ignore
      )
  )

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("demo", {
  url: Flags.url,
  count: Flags.count("Messages to send through the work queue.", 10_000),
  consumers: Flag.Int("consumers").pipe(
    Flag.withDescription("Consumer fibers, each with its own channel. Default 2."),
    Flag.withDefault(2),
    Flag.filter((n) => n >= 1 && n <= 100, (n) => `--consumers must be 1 to 100, got ${n}`)
  ),
  size: Flag.Int("size").pipe(
    Flag.withDescription("Body size in bytes (at least 16, room for the id). Default 64."),
    Flag.withDefault(64),
    Flag.filter((n) => n >= 16 && n <= 16 * 1024 * 1024, (n) => `--size must be 16 to 16777216 bytes, got ${n}`)
  ),
  window: Flags.window,
  prefetch: Flags.prefetch,
  timeout: Flag.Int("timeout").pipe(
    Flag.withDescription("Seconds to wait, after publishing, for every confirmed message to be consumed. Default 60."),
    Flag.withDefault(60),
    Flag.filter((n) => n >= 1, (n) => `--timeout must be at least 1 second, got ${n}`)
  ),
  progress: Flags.progress
}, run).pipe(
  Command.withDescription(
    "Run a work queue with publisher confirms and manual acks, and report published, confirmed, consumed, lost " +
      "(must be 0), redelivered and duplicates. Exits 0 only when no confirmed message was lost."
  )
)
