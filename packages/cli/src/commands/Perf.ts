/**
 * `effect-amqp perf`: a load generator in the spirit of RabbitMQ's PerfTest. `--producers`
 * publishers and `--consumers` consumers, each on its own connection, move `--size`-byte messages
 * through one queue for `--duration` seconds (or `--count` messages per producer), and the command
 * reports rates, publish-to-consume latency, CPU time and memory.
 *
 * A producer is one fiber that publishes with `publishAsync` and keeps up to `--confirm W`
 * unconfirmed messages in flight: with W out, it waits for the oldest confirm before it takes the
 * time for the next body, so a message's latency never includes its wait for the window. `--rate`
 * paces each producer from the run's start: over a duration, every message due before its end goes,
 * a little late if the process is busy. Consumers ack each delivery, or with `--multi-ack K` every
 * K deliveries with `multiple` (a partial group is acked after 50 ms). Every body starts with the
 * time it was published (milliseconds since the epoch, a big-endian float64) and a 32-bit id of the
 * run; latency is taken from the bodies of this run only, so messages left in a named queue by
 * earlier runs are consumed but not measured.
 *
 * The queue is `--queue`, declared with `--queue-type` unless it exists, and kept; by default it is
 * a fresh uniquely named queue that is deleted at the end, also on failure or interruption. Classic
 * queues are declared non-durable, quorum queues and streams durable, as RabbitMQ requires. An
 * existing queue is used as it is; AMQP does not tell its type, so with `--queue-type` the command
 * declares it as it would declare a new one (a classic one durable too), and the broker refuses a
 * queue of another type or with other arguments; without it the summary reports the type as
 * `null`, and the queue is taken for a classic or quorum one: an existing stream needs
 * `--queue-type stream`. Stream consumers start from one second before the run, so none of the
 * run's messages can slip past them.
 *
 * What runs where goes to stderr first, then a progress line once a second: totals, rates and
 * latency p50/p99 over the last second. At the end the summary goes to stdout, as lines or, with
 * `--json`, as one JSON object. When producers stop, consumers get until the queue has handed them
 * every published message (each consumer of a stream reads them all), or until they made no
 * progress for 5 s. The command exits 1 when any error happened (publish failures, nacks,
 * consumers that stopped or stalled), after printing the summary.
 *
 * A broker that blocks publishers (a memory or disk alarm) does not keep a `--duration` run going:
 * producers stop on time, the progress line says why they stood still, and confirms still owed
 * after 5 s without progress count as an error. Interrupted (Ctrl-C), the command prints the
 * summary so far before it closes the connections, and exits 130.
 *
 * @since 0.1.0
 */
import { AmqpChannel, type AmqpConnection, type AmqpPublishError } from "@effect-amqp/client"
import { type Cause, Console, Effect, Fiber, Option, Queue, type Scope, Stream } from "effect"
import { Command, Flag } from "effect/cli"
import * as Broker from "../Broker.ts"
import { Histogram } from "../Histogram.ts"
import * as Message from "../Message.ts"
import * as Queues from "../Queues.ts"
import * as Report from "../Report.ts"
import * as Flags from "./Flags.ts"

/**
 * @since 0.1.0
 * @category models
 */
export type QueueType = "classic" | "quorum" | "stream"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options extends Omit<Settings, "queueType"> {
  /** The type to declare a missing queue with (classic when not given), and to check an existing one against. */
  readonly queueType: Option.Option<QueueType>
  readonly url: Option.Option<string>
  readonly duration: Option.Option<number>
  readonly count: Option.Option<number>
  readonly queue: Option.Option<string>
  readonly json: boolean
}

/**
 * The shape of the load, as given by the flags and repeated in the summary.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  /** `null` for an existing queue used without `--queue-type`: its type was not checked. */
  readonly queueType: QueueType | null
  readonly producers: number
  readonly consumers: number
  readonly size: number
  readonly confirm: number
  readonly prefetch: number
  readonly multiAck: number
  readonly rate: number
}

/**
 * Latency quantiles in milliseconds; `null` without samples.
 *
 * @since 0.1.0
 * @category models
 */
export interface Latency {
  readonly samples: number
  readonly p50: number | null
  readonly p95: number | null
  readonly p99: number | null
  readonly max: number | null
}

/**
 * What `--json` prints.
 *
 * @since 0.1.0
 * @category models
 */
export interface Summary extends Settings {
  readonly queue: string
  /** From the first publish to the end of the drain. */
  readonly seconds: number
  readonly published: number
  readonly confirmed: number
  readonly nacked: number
  /** Deliveries acknowledged, earlier runs' messages included. */
  readonly consumed: number
  /** Messages per second, each over the time from the first publish to the last such event. */
  readonly rates: { readonly published: number; readonly confirmed: number; readonly consumed: number }
  /** From publish to consume, over this run's messages. */
  readonly latencyMs: Latency
  /** CPU time of this process during the run (`process.cpuUsage`). */
  readonly cpuMs: { readonly user: number; readonly system: number; readonly total: number }
  /** The largest resident set size sampled every 100 ms. */
  readonly peakRssBytes: number
  readonly errors: { readonly count: number; readonly first: ReadonlyArray<string> }
}

/** Bytes before the filler: the publish time (float64) and the run's id (uint32). */
const headerSize = 12

/** Errors whose message the summary keeps. */
const errorsKept = 5

/** Consumers that made no progress for this long end the drain. */
const stallMillis = 5000

const now = (): number => performance.timeOrigin + performance.now()

const round = (n: number, digits = 3): number => Number(n.toFixed(digits))

const messageOf = (error: unknown): string => error instanceof Error ? error.message : String(error)

/** The counters of a run, shared by every fiber (they all run on one thread). */
class Counters {
  sent = 0
  confirmed = 0
  nacked = 0
  consumed = 0
  /** This run's messages acknowledged. */
  ownConsumed = 0
  lastSentAt = 0
  /** When the last producer stopped publishing, its rate limit's last turn included. */
  publishingEndedAt = 0
  lastConfirmAt = 0
  lastConsumedAt = 0
  errors = 0
  readonly firstErrors: Array<string> = []
  readonly latency = new Histogram()
  readonly lastSecond = new Histogram()
  readonly runId: number

  constructor(runId: number) {
    this.runId = runId
  }

  error(error: unknown): void {
    this.errors++
    if (this.firstErrors.length < errorsKept) this.firstErrors.push(messageOf(error))
  }

  isOwn(body: Uint8Array): boolean {
    return body.length >= headerSize &&
      Buffer.from(body.buffer, body.byteOffset, headerSize).readUInt32BE(8) === this.runId
  }

  received(delivery: AmqpChannel.Delivery): void {
    if (!this.isOwn(delivery.body)) return
    const body = delivery.body
    const millis = now() - Buffer.from(body.buffer, body.byteOffset, headerSize).readDoubleBE(0)
    this.latency.record(millis)
    this.lastSecond.record(millis)
  }

  acked(deliveries: ReadonlyArray<AmqpChannel.Delivery>): void {
    this.consumed += deliveries.length
    for (const delivery of deliveries) if (this.isOwn(delivery.body)) this.ownConsumed++
    this.lastConsumedAt = performance.now()
  }
}

/** A fresh body: a copy of `template` with the current time in front. */
const stamped = (template: Buffer): Buffer => {
  const body = Buffer.from(template)
  body.writeDoubleBE(now(), 0)
  return body
}

const bodyTemplate = (size: number, runId: number): Buffer => {
  const template = Buffer.alloc(size, 0x2e)
  template.writeUInt32BE(runId, 8)
  return template
}

const queueArguments = (type: QueueType) => ({
  durable: type !== "classic",
  arguments: type === "classic" ? {} : { "x-queue-type": type }
})

/** The broker's refusal of a declaration that does not match the queue as it exists. */
const refused = (error: AmqpChannel.ChannelError): boolean =>
  error._tag === "AmqpChannelError" && error.replyCode === 406

/** RabbitMQ names the first setting that differs: "inequivalent arg 'durable' for queue ...". */
const refusedForDurability = (error: AmqpChannel.ChannelError): boolean =>
  refused(error) && error._tag === "AmqpChannelError" && error.replyText.includes("inequivalent arg 'durable'")

/** The queue of a run and its type, when known. */
interface RunQueue {
  readonly name: string
  readonly type: QueueType | null
}

/**
 * The queue of the run: `--queue` (declared when missing; when it exists, checked against
 * `--queue-type` if given, else used as it is), or a fresh one deleted with the scope.
 */
const setupQueue = (
  connection: AmqpConnection.AmqpConnection,
  options: Options
): Effect.Effect<RunQueue, AmqpChannel.ChannelError | Report.CommandFailed, Scope.Scope> => {
  const type = Option.getOrElse(options.queueType, () => "classic" as const)
  if (Option.isNone(options.queue)) {
    const name = Queues.uniqueName("perf")
    return Effect.as(Queues.temporary(connection, name, queueArguments(type)), { name, type })
  }
  const name = options.queue.value
  const declare = (declareOptions: AmqpChannel.QueueDeclareOptions = queueArguments(type)) =>
    Effect.as(Queues.withChannel(connection, (channel) => channel.queueDeclare(name, declareOptions)), { name, type })
  // Declared as perf would declare it, an existing queue of another type (or other settings) is
  // refused by the broker with 406; a classic queue may be durable too, which is tried only when
  // durability is what the broker named, so that a refusal names the setting that differs.
  const asDeclared = type === "classic"
    ? Effect.catchIf(declare(), refusedForDurability, () => declare({ durable: true }))
    : declare()
  const checkExisting = (): Effect.Effect<RunQueue, AmqpChannel.ChannelError | Report.CommandFailed> =>
    Option.isNone(options.queueType) ? Effect.succeed({ name, type: null }) : asDeclared.pipe(
      Effect.catchIf(
        refused,
        (error) =>
          Effect.fail(
            new Report.CommandFailed({
              message: `queue ${name} exists, but not as perf declares a ${type} queue (give no --queue-type to ` +
                `use it as it is): ${error.message}`
            })
          )
      )
    )
  return Queues.withChannel(connection, (channel) => channel.queueDeclare(name, { passive: true })).pipe(
    Effect.matchEffect({
      onFailure: (error) =>
        error._tag === "AmqpChannelError" && error.replyCode === 404 ? declare() : Effect.fail(error),
      onSuccess: checkExisting
    })
  )
}

/**
 * When a producer stops: after `count` messages, or at `stopAt` (performance.now milliseconds).
 * Every producer paces its `--rate` from the run's `start`.
 */
interface Plan {
  readonly start: number
  readonly count: number | undefined
  readonly stopAt: number
}

const finished = (plan: Plan, sent: number): boolean =>
  plan.count !== undefined ? sent >= plan.count : performance.now() >= plan.stopAt

/** Sleeps until `due`, or until the run's end if that comes first (a timer may also wake early). */
const untilDue = (due: number, plan: Plan) =>
  Effect.gen(function*() {
    let at = performance.now()
    while (at < due && at < plan.stopAt) {
      yield* Effect.sleep(Math.min(due, plan.stopAt) - at)
      at = performance.now()
    }
  })

/**
 * Publishes until the plan says stop, keeping up to `--confirm` unconfirmed messages in flight from
 * this one fiber; a second fiber counts the confirms in the order they were published. With the
 * window full the producer waits for the oldest confirm before it stamps the next body, so the
 * channel, whose window is the same size, never holds a stamped message back.
 *
 * A broker that blocks publishers (a memory or disk alarm) does not hold a `--duration` run past its
 * end: the producer stops at `stopAt` (a second later under `--rate`, for a producer running late)
 * wherever it waits, and a publish not yet admitted is not sent. Confirms still owed then get
 * until they make no progress for 5 s, and count as an error.
 */
const publishLoop = (link: Link, queue: string, options: Options, plan: Plan, counters: Counters) =>
  Effect.gen(function*() {
    const template = bodyTemplate(options.size, counters.runId)
    const pending = yield* Queue.unbounded<Effect.Effect<void, AmqpPublishError>, Cause.Done>()
    let settled = 0
    const confirms = yield* Effect.forkChild(
      Stream.fromQueue(pending).pipe(Stream.runForEach((confirmation) =>
        Effect.match(confirmation, {
          onFailure: (error) => {
            settled++
            if (error.reason._tag === "Nacked") counters.nacked++
            counters.error(error)
          },
          onSuccess: () => {
            settled++
            counters.confirmed++
            counters.lastConfirmAt = performance.now()
          }
        })
      ))
    )
    const window: Array<Effect.Effect<void, AmqpPublishError>> = []
    let sent = 0
    // Counted in the same uninterruptible step as the publish that it counts: a stop that comes
    // while the publish waits to be admitted leaves it unsent and uncounted, never sent uncounted.
    const publishOne = Effect.uninterruptibleMask((restore) =>
      Effect.map(restore(link.channel.publishAsync("", queue, stamped(template))), (confirmation) => {
        sent++
        counters.sent++
        counters.lastSentAt = performance.now()
        if (options.confirm > 0) {
          window[(sent - 1) % options.confirm] = confirmation
          Queue.offerUnsafe(pending, confirmation)
        }
      })
    )
    // Under a rate limit over a duration, every message due before the end goes, a little late if
    // the process was busy: how many does not depend on the machine's load.
    const dueAt = (n: number) => plan.start + (n * 1000) / options.rate
    const done = () => options.rate > 0 && plan.count === undefined ? dueAt(sent) >= plan.stopAt : finished(plan, sent)
    const publishing = Effect.gen(function*() {
      while (!done()) {
        if (options.rate > 0) yield* untilDue(dueAt(sent), plan)
        if (options.confirm > 0 && sent >= options.confirm) yield* Effect.exit(window[sent % options.confirm]!)
        yield* publishOne
      }
      // Under a rate limit the last message's turn lasts until the next one would be due: the
      // run's rate is then the limit, not a little above it.
      if (options.rate > 0) yield* untilDue(dueAt(sent), plan)
    })
    // A producer more than a second behind its rate is stopped with the others.
    const deadline = plan.stopAt + (options.rate > 0 ? 1000 : 0)
    yield* plan.count !== undefined
      ? publishing
      : Effect.raceFirst(publishing, Effect.suspend(() => Effect.sleep(Math.max(deadline - performance.now(), 0))))
    counters.publishingEndedAt = Math.max(counters.publishingEndedAt, performance.now())
    Queue.endUnsafe(pending)
    if (!(yield* untilStalled(() => confirms.pollUnsafe() !== undefined, () => settled))) {
      yield* Fiber.join(confirms)
    } else {
      yield* Fiber.interrupt(confirms)
      const blocked = yield* link.connection.blocked
      counters.error(
        new Error(
          `${sent - settled} publishes were not confirmed (no progress for 5 s)` +
            (blocked === undefined ? "" : `: the broker blocks publishers (${blocked})`)
        )
      )
    }
  })

/**
 * Waits until `done()`, or until `progress()` has not changed for 5 s; true when it stalled.
 */
const untilStalled = (done: () => boolean, progress: () => number) =>
  Effect.gen(function*() {
    let seen = progress()
    let progressAt = performance.now()
    while (!done()) {
      yield* Effect.sleep("10 millis")
      if (progress() !== seen) {
        seen = progress()
        progressAt = performance.now()
      } else if (performance.now() - progressAt > stallMillis) {
        return true
      }
    }
    return false
  })

/** Consumes until interrupted, acking each delivery or every `--multi-ack` with `multiple`. */
const consumeLoop = (channel: AmqpChannel.AmqpChannel, queue: RunQueue, options: Options, counters: Counters) => {
  const consumeOptions = queue.type === "stream"
    ? { arguments: { "x-stream-offset": new Date(Date.now() - 1000) } }
    : {}
  const deliveries = channel.consume(queue.name, consumeOptions).pipe(
    Stream.tap((delivery) => Effect.sync(() => counters.received(delivery)))
  )
  if (options.multiAck <= 1) {
    return Stream.runForEach(
      deliveries,
      (delivery) => Effect.andThen(delivery.ack(), Effect.sync(() => counters.acked([delivery])))
    )
  }
  return deliveries.pipe(
    Stream.groupedWithin(options.multiAck, "50 millis"),
    Stream.runForEach((group) => {
      const last = group.at(-1)
      if (last === undefined) return Effect.void
      return Effect.andThen(last.ack({ multiple: true }), Effect.sync(() => counters.acked(group)))
    })
  )
}

/** A producer's or consumer's own connection and its channel. */
interface Link {
  readonly connection: AmqpConnection.AmqpConnection
  readonly channel: AmqpChannel.AmqpChannel
}

/** Opens a connection and channel for one producer or consumer, for the scope. */
const openLink = (target: Broker.Target, role: string, channelOptions: AmqpChannel.ChannelOptions = {}) =>
  Effect.flatMap(
    Broker.connect(target, { connectionName: `effect-amqp perf ${role}` }),
    ({ connection }) =>
      Effect.map(AmqpChannel.make(connection, channelOptions), (channel): Link => ({ connection, channel }))
  )

/**
 * Waits until the consumers have every message the producers got through (on a stream, every
 * consumer reads every message), or stop making progress.
 */
const drain = (queue: RunQueue, options: Options, counters: Counters) =>
  Effect.gen(function*() {
    const readers = queue.type === "stream" ? options.consumers : 1
    const published = () => options.confirm > 0 ? counters.confirmed : counters.sent
    const expected = () => published() * readers
    if (!(yield* untilStalled(() => counters.ownConsumed >= expected(), () => counters.ownConsumed))) return
    const missing = expected() - counters.ownConsumed
    counters.error(
      new Error(
        readers === 1
          ? `${missing} published messages were not consumed (no progress for 5 s)`
          : `${missing} of ${expected()} deliveries (${published()} messages, each to ${readers} stream ` +
            `consumers) were not consumed (no progress for 5 s)`
      )
    )
  })

/** Samples the resident set size every 100 ms while the scope is open; `peak()` is the largest seen. */
const sampleRss = Effect.gen(function*() {
  let peak = process.memoryUsage.rss()
  yield* Effect.forkScoped(Effect.forever(Effect.andThen(
    Effect.sleep("100 millis"),
    Effect.sync(() => {
      peak = Math.max(peak, process.memoryUsage.rss())
    })
  )))
  return () => Math.max(peak, process.memoryUsage.rss())
})

const formatMillis = (millis: number | null | undefined): string =>
  millis === null || millis === undefined ? "-" : `${millis.toFixed(2)} ms`

/**
 * The progress line: totals and what happened in the last second, and why the producers stand
 * still when the broker blocks them.
 */
const progress = (
  counters: Counters,
  start: number,
  producers: ReadonlyArray<Link>
): Effect.Effect<void, never, Scope.Scope> => {
  let last = { sent: 0, confirmed: 0, consumed: 0, at: start }
  const blocked = Effect.map(
    Effect.forEach(producers, (link) => link.connection.blocked),
    (reasons) => reasons.find((reason) => reason !== undefined)
  )
  const line = (blockedReason: string | undefined) => {
    const at = performance.now()
    const seconds = Math.max(at - last.at, 1) / 1000
    const rate = (n: number, before: number) => Math.round((n - before) / seconds)
    const text = `perf: ${Math.round((at - start) / 1000)} s, ` +
      `sent ${counters.sent} (${rate(counters.sent, last.sent)} msg/s), ` +
      `confirmed ${counters.confirmed} (${rate(counters.confirmed, last.confirmed)} msg/s), ` +
      `received ${counters.consumed} (${rate(counters.consumed, last.consumed)} msg/s), ` +
      `latency p50 ${formatMillis(counters.lastSecond.quantile(0.5))} ` +
      `p99 ${formatMillis(counters.lastSecond.quantile(0.99))}` +
      (blockedReason === undefined ? "" : `, blocked by the broker: ${blockedReason}`)
    last = { sent: counters.sent, confirmed: counters.confirmed, consumed: counters.consumed, at }
    counters.lastSecond.reset()
    return text
  }
  return Effect.asVoid(Effect.forkScoped(
    Effect.forever(Effect.andThen(
      Effect.sleep("1 second"),
      Effect.flatMap(blocked, (reason) => Console.error(line(reason)))
    ))
  ))
}

const checkOptions = (options: Options): Effect.Effect<void, Report.UsageError> => {
  const problem = Option.isSome(options.duration) && Option.isSome(options.count)
    ? "give --duration or --count, not both"
    : options.producers === 0 && options.consumers === 0
    ? "--producers and --consumers cannot both be 0"
    : options.producers === 0 && Option.isSome(options.count)
    ? "--count needs at least one producer; consumers alone run for --duration"
    : Option.getOrUndefined(options.queueType) === "stream" && options.prefetch === 0
    ? "stream consumers need a prefetch: --prefetch must be at least 1 with --queue-type stream"
    : options.prefetch > 0 && options.multiAck > options.prefetch
    ? `--multi-ack (${options.multiAck}) cannot exceed --prefetch (${options.prefetch})`
    : undefined
  return problem === undefined ? Effect.void : Effect.fail(new Report.UsageError({ command: "perf", message: problem }))
}

const latencyOf = (histogram: Histogram): Latency => {
  const quantile = (q: number) => {
    const value = histogram.quantile(q)
    return value === undefined ? null : round(value)
  }
  const max = histogram.max
  return {
    samples: histogram.count,
    p50: quantile(0.5),
    p95: quantile(0.95),
    p99: quantile(0.99),
    max: max === undefined ? null : round(max)
  }
}

/**
 * The summary as lines for people.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatSummary = (summary: Summary): string => {
  const { latencyMs: latency } = summary
  const lines: Array<[string, string]> = [
    ["queue", `${summary.queue} (${summary.queueType ?? "existing, type not checked"})`],
    ["time", `${summary.seconds.toFixed(2)} s`],
    ["published", `${summary.published} (${Report.rate(summary.rates.published, 1)})`],
    ["confirmed", `${summary.confirmed} (${Report.rate(summary.rates.confirmed, 1)})`],
    ["nacked", `${summary.nacked}`],
    ["consumed", `${summary.consumed} (${Report.rate(summary.rates.consumed, 1)})`],
    [
      "latency",
      `p50 ${formatMillis(latency.p50)}, p95 ${formatMillis(latency.p95)}, p99 ${formatMillis(latency.p99)}, ` +
      `max ${formatMillis(latency.max)} ` +
      `(${latency.samples} samples)`
    ],
    ["cpu", `${summary.cpuMs.total} ms (user ${summary.cpuMs.user}, system ${summary.cpuMs.system})`],
    ["peak rss", Report.bytes(summary.peakRssBytes)],
    ["errors", [`${summary.errors.count}`, ...summary.errors.first].join("\n  ")]
  ]
  return lines.map(([label, value]) => `${label.padEnd(12)}${value}`).join("\n")
}

/** The summary of the run so far, from its counters. */
const summaryOf = (
  queue: RunQueue,
  options: Options,
  counters: Counters,
  start: number,
  cpu: NodeJS.CpuUsage,
  peakRssBytes: number
): Summary => {
  const end = performance.now()
  const over = (last: number, n: number) => n / (Math.max(last - start, 1) / 1000)
  // Without a rate limit, publishing ends with the last message; with one, a turn later.
  const publishedUntil = options.rate > 0 ? counters.publishingEndedAt : counters.lastSentAt
  const user = round(cpu.user / 1000, 1)
  const system = round(cpu.system / 1000, 1)
  return {
    queue: queue.name,
    queueType: queue.type,
    producers: options.producers,
    consumers: options.consumers,
    size: options.size,
    confirm: options.confirm,
    prefetch: options.prefetch,
    multiAck: options.multiAck,
    rate: options.rate,
    seconds: round((end - start) / 1000),
    published: counters.sent,
    confirmed: counters.confirmed,
    nacked: counters.nacked,
    consumed: counters.consumed,
    rates: {
      published: round(over(publishedUntil, counters.sent), 1),
      confirmed: round(over(Math.max(counters.lastConfirmAt, publishedUntil), counters.confirmed), 1),
      consumed: round(over(Math.max(counters.lastConsumedAt, publishedUntil), counters.consumed), 1)
    },
    latencyMs: latencyOf(counters.latency),
    cpuMs: { user, system, total: round(user + system, 1) },
    peakRssBytes,
    errors: { count: counters.errors, first: counters.firstErrors }
  }
}

/**
 * Runs the load as described in the module header.
 *
 * @since 0.1.0
 * @category commands
 */
export const run = Effect.fn("effect-amqp perf")(function*(options: Options) {
  yield* checkOptions(options)
  const target = yield* Broker.target(options.url)
  const { connection: admin } = yield* Broker.connect(target, { connectionName: "effect-amqp perf admin" })
  const queue = yield* setupQueue(admin, options)
  yield* Console.error(
    `perf: ${Report.counted(options.producers, "producer")}, ${Report.counted(options.consumers, "consumer")}, ` +
      `${queue.type ?? "existing"} queue ${queue.name} ` +
      `on ${Broker.describe(target)}`
  )
  const counters = new Counters(Math.floor(Math.random() * 0x1_0000_0000))
  const consumerLinks = yield* Effect.forEach(Message.ids(options.consumers), (index) =>
    Effect.tap(
      openLink(target, `consumer ${index}`),
      ({ channel }) => options.prefetch > 0 ? channel.qos(options.prefetch) : Effect.void
    ), { concurrency: "unbounded" })
  const consumers = yield* Effect.forEach(
    consumerLinks,
    ({ channel }) =>
      Effect.forkScoped(
        consumeLoop(channel, queue, options, counters).pipe(
          Effect.andThen(Effect.fail(new Error("a consumer stopped: the broker ended its stream"))),
          Effect.catch((error) => Effect.sync(() => counters.error(error)))
        )
      )
  )
  if (queue.type !== "stream") {
    yield* Queues.awaitConsumers(admin, queue.name, options.consumers).pipe(
      Effect.mapError((error) =>
        queue.type === null && error._tag === "CommandFailed"
          ? new Report.CommandFailed({
            message: `${error.message} (a stream counts no consumers: give --queue-type stream for one)`
          })
          : error
      )
    )
  }
  const producers = yield* Effect.forEach(
    Message.ids(options.producers),
    (index) =>
      openLink(target, `producer ${index}`, options.confirm > 0 ? { maxOutstandingConfirms: options.confirm } : {}),
    { concurrency: "unbounded" }
  )
  if (options.confirm > 0) yield* Effect.forEach(producers, ({ channel }) => channel.confirmSelect)

  const peakRss = yield* sampleRss
  const cpuBefore = process.cpuUsage()
  const start = performance.now()
  const plan: Plan = {
    start,
    count: Option.getOrUndefined(options.count),
    // A run of --count messages is not cut short by the default duration.
    stopAt: Option.isSome(options.count) ? Infinity : start + Option.getOrElse(options.duration, () => 10) * 1000
  }
  const summarize = () => summaryOf(queue, options, counters, start, process.cpuUsage(cpuBefore), peakRss())
  const printSummary = (summary: Summary) =>
    Console.log(options.json ? JSON.stringify(summary) : formatSummary(summary))
  yield* progress(counters, start, producers)
  yield* Effect.gen(function*() {
    yield* Effect.forEach(producers, (link) =>
      publishLoop(link, queue.name, options, plan, counters).pipe(
        Effect.catch((error) => Effect.sync(() => counters.error(error)))
      ), { concurrency: "unbounded", discard: true })
    if (options.producers === 0) yield* Effect.sleep(Math.max(plan.stopAt - performance.now(), 0))
    else if (options.consumers > 0) yield* drain(queue, options, counters)
  }).pipe(
    // Interrupted (Ctrl-C), the run so far is reported before the connections close.
    Effect.onInterrupt(() =>
      Effect.andThen(printSummary(summarize()), Console.error("perf: interrupted; closing the connections"))
    )
  )
  yield* Fiber.interruptAll(consumers)
  yield* printSummary(summarize())
  if (counters.errors > 0) {
    return yield* new Report.CommandFailed({
      message: `${Report.counted(counters.errors, "error")} during the run, the first: ${counters.firstErrors[0]}`
    })
  }
}, Effect.scoped)

const count = (name: string, description: string, defaultValue: number, min: number, max: number) =>
  Flag.Int(name).pipe(
    Flag.withDescription(`${description} Default ${defaultValue}.`),
    Flag.withDefault(defaultValue),
    Flag.filter((n) => n >= min && n <= max, (n) => `--${name} must be ${min} to ${max}, got ${n}`)
  )

/**
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("perf", {
  url: Flags.url,
  producers: count("producers", "Producers, each with its own connection.", 1, 0, 1000),
  consumers: count("consumers", "Consumers, each with its own connection.", 1, 0, 1000),
  size: count("size", "Body size in bytes (at least 12: publish time and run id).", 12, 12, 128 * 1024 * 1024),
  confirm: count(
    "confirm",
    "Confirm window per producer: unconfirmed publishes in flight; 0 = no confirms.",
    0,
    0,
    100_000
  ),
  prefetch: count("prefetch", "Unacknowledged deliveries per consumer (basic.qos); 0 = unlimited.", 1000, 0, 65535),
  multiAck: count("multi-ack", "Ack every K deliveries at once (basic.ack with multiple).", 1, 1, 65535),
  rate: Flag.Finite("rate").pipe(
    Flag.withDescription("Messages per second per producer; 0 = as fast as possible. Default 0."),
    Flag.withDefault(0),
    Flag.filter((n) => n >= 0, (n) => `--rate must be 0 or more, got ${n}`)
  ),
  duration: Flag.Finite("duration").pipe(
    Flag.withDescription("Seconds to publish (default 10 unless --count is given)."),
    Flag.filter((n) => n > 0, (n) => `--duration must be more than 0 seconds, got ${n}`),
    Flag.optional
  ),
  count: Flag.Int("count").pipe(
    Flag.withDescription("Messages each producer publishes, instead of --duration."),
    Flag.filter((n) => n >= 1, (n) => `--count must be at least 1, got ${n}`),
    Flag.optional
  ),
  queueType: Flag.Literals("queue-type", ["classic", "quorum", "stream"]).pipe(
    Flag.withDescription(
      "Type of the queue to declare (default classic); an existing --queue is checked against it, else used as it is."
    ),
    Flag.optional
  ),
  queue: Flags.queue.pipe(
    Flag.withDescription("Queue to use, declared when missing and kept. Default: a fresh queue, deleted at the end."),
    Flag.optional
  ),
  json: Flags.boolean("json", "Print the summary as one JSON object.")
}, run).pipe(
  Command.withDescription(
    "Load test: producers and consumers on one queue; prints rates, publish-to-consume latency, CPU time and " +
      "peak memory. Progress goes to stderr once a second."
  )
)
