/**
 * `effect-amqp demo`: a work queue with publisher confirms and manual acks that loses its
 * connections halfway through and still delivers every confirmed message.
 *
 * One publisher fiber sends `--count` messages with a window of `--window` unconfirmed publishes;
 * `--consumers` consumer fibers, each on its own channel, take them with prefetch `--prefetch` and
 * ack each after recording its id (the body carries it, see `Message`). Publisher and consumers use
 * two recovering `AmqpClient`s, which reach the broker through a loopback `FaultProxy` started for
 * the run. Once half the messages have been published the demo resets every proxied connection,
 * once. The clients reconnect (backoff from 50 ms, capped at 1 s, at most 30 attempts) and restore
 * their channels, qos, confirm mode and consumers; a publish whose confirm was lost with the link is
 * published again with the same message id; an ack of a delivery from before the cut is dropped as
 * stale, and the broker delivers that message again. `--no-cut` runs without the proxy and the cut.
 *
 * When every confirmed id has been consumed (or `--timeout` passed) the consumers stop and the
 * report says how many messages were published, confirmed, nacked, published again (`retried`),
 * consumed, lost (confirmed but never consumed), redelivered, duplicated and corrupt, how many acks
 * were stale, and how many cuts and reconnects (`Recovered` events of both clients) there were. The
 * command exits 0 only when none was lost.
 *
 * The broker is `--url`, else `AMQP_URL`, else the local 127.0.0.1:5672, else (when that refuses
 * the connection) a private node started for the run. The queue has a unique name and is declared
 * on a third connection that goes straight to the broker: non-durable, neither exclusive nor
 * auto-delete, since an auto-delete queue would vanish with its consumers' connection at the cut.
 * It is deleted at the end, also on failure or interruption (not when the process is killed).
 *
 * @since 0.1.0
 */
import {
  type AmqpChannel,
  AmqpClient,
  type AmqpConnectionError,
  AmqpPublishError,
  type ConnectionConfig
} from "@effect-amqp/client"
import { Console, Deferred, Effect, Option, PubSub, Schedule, Stream } from "effect"
import { Command, Flag } from "effect/cli"
import * as Broker from "../Broker.ts"
import * as Message from "../Message.ts"
import * as Queues from "../Queues.ts"
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
  readonly cut: boolean
  readonly progress: boolean
}

/**
 * The outcome of a run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Tally {
  /** Messages published, each counted once however often it was sent. */
  published: number
  confirmed: number
  nacked: number
  /** Publishes sent again because their confirm was lost with the link. */
  retried: number
  /** Deliveries acknowledged, duplicates included. */
  consumed: number
  redelivered: number
  duplicates: number
  /** Acks not sent because the delivery's channel was gone; the broker delivers those again. */
  staleAcks: number
  /** Deliveries whose body did not match the message its id names. */
  corrupt: number
  lost: number
  /** Times the demo cut every proxied connection. */
  cuts: number
  /** Reconnects of the two clients (their `Recovered` events). */
  reconnects: number
}

const labels: ReadonlyArray<readonly [keyof Tally, string]> = [
  ["published", "published"],
  ["confirmed", "confirmed"],
  ["nacked", "nacked"],
  ["retried", "retried"],
  ["consumed", "consumed"],
  ["lost", "lost"],
  ["redelivered", "redelivered"],
  ["duplicates", "duplicates"],
  ["staleAcks", "stale acks"],
  ["corrupt", "corrupt"],
  ["cuts", "cuts"],
  ["reconnects", "reconnects"]
]

/**
 * The report printed at the end, one `name value` pair per line.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatTally = (tally: Tally): string =>
  labels.map(([key, label]) => `${label.padEnd(12)}${tally[key]}`).join("\n")

/**
 * How the demo's clients reconnect: 50 ms, doubling, capped at 1 s, at most 30 attempts, and not at
 * all after a failure a retry cannot fix (bad credentials, a forbidden vhost).
 *
 * @since 0.1.0
 * @category constants
 */
export const reconnect: Schedule.Schedule<unknown, AmqpConnectionError> = Schedule.min([
  Schedule.exponential("50 millis"),
  Schedule.spaced("1 second")
]).pipe(
  Schedule.setInputType<AmqpConnectionError>(),
  Schedule.while(({ attempt, input }) => attempt <= 30 && !input.isPermanent)
)

const emptyTally = (): Tally => ({
  published: 0,
  confirmed: 0,
  nacked: 0,
  retried: 0,
  consumed: 0,
  redelivered: 0,
  duplicates: 0,
  staleAcks: 0,
  corrupt: 0,
  lost: 0,
  cuts: 0,
  reconnects: 0
})

const isLinkLoss = (error: { readonly _tag: string }): boolean =>
  error._tag === "AmqpConnectionError" || error._tag === "AmqpClosedError"

const isNack = (error: unknown): boolean => error instanceof AmqpPublishError && error.reason._tag === "Nacked"

/**
 * Runs the demo as described in the module header.
 *
 * @since 0.1.0
 * @category commands
 */
export const run = Effect.fn("effect-amqp demo")(function*(options: Options) {
  const requested = yield* Broker.target(options.url)
  const { connection: admin, target } = yield* Broker.connect(requested, {
    connectionName: "effect-amqp demo admin",
    privateFallback: true
  })
  const queue = Queues.uniqueName("demo")
  yield* Console.log(`demo: ${options.count} messages through queue ${queue} on ${Broker.describe(target)}`)
  yield* Queues.temporary(admin, queue)

  const broker = yield* Broker.connectionOptions(target)
  const proxy = options.cut ? yield* startProxy(broker) : undefined
  if (proxy !== undefined) {
    yield* Console.log(`demo: clients connect through a fault proxy on ${proxy.host}:${proxy.port}`)
  }
  const via = proxy === undefined ? broker : throughProxy(broker, proxy)
  const connectClient = (role: string) =>
    Effect.tap(
      AmqpClient.make({ ...via, connectionName: `effect-amqp demo ${role}` }, { reconnect }),
      (client) => narrate(role, client)
    )
  const publisherClient = yield* connectClient("publisher")
  const consumerClient = yield* connectClient("consumers")

  const tally = emptyTally()
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

  const cutLinks = Effect.gen(function*() {
    if (proxy === undefined) return
    const open = (yield* proxy.stats).connections.filter((connection) => !connection.closed).length
    yield* proxy.dropAll("reset")
    tally.cuts++
    yield* Console.log(`demo: cut ${open} connections (reset) after ${tally.published} publishes`)
  })

  const record = (delivery: AmqpChannel.Delivery) =>
    Effect.suspend(() => {
      tally.consumed++
      const id = Message.idOf(delivery.body)
      if (id === undefined || !Message.isIntact(id, delivery.body)) tally.corrupt++
      if (delivery.redelivered) tally.redelivered++
      if (id !== undefined) {
        if (consumed.has(id)) tally.duplicates++
        consumed.add(id)
        awaiting.delete(id)
      }
      return checkDrained
    })

  const consumer = Effect.gen(function*() {
    const channel = yield* consumerClient.channel()
    yield* channel.qos(options.prefetch)
    yield* channel.consume(queue).pipe(
      Stream.runForEach((delivery) =>
        delivery.ack().pipe(
          Effect.matchEffect({
            // Stale: the channel it came on is gone, and the broker will deliver the message again.
            onFailure: () => Effect.sync(() => tally.staleAcks++),
            onSuccess: () => record(delivery)
          })
        )
      ),
      // The client's consumer stream fails, instead of waiting for the next link, when the link is
      // lost while its basic.consume is on the way; consuming again on the same channel waits for it.
      Effect.retry({ times: 5, while: isLinkLoss })
    )
  }).pipe(Effect.scoped)

  const publisher = Effect.gen(function*() {
    const channel = yield* publisherClient.channel({ maxOutstandingConfirms: options.window })
    yield* channel.confirmSelect
    // Runs once for every publish the channel sends again after its confirm was lost with the link.
    const retry = Schedule.recurs(10).pipe(Schedule.tap(() => Effect.sync(() => tally.retried++)))
    let cutDone = !options.cut
    const publishOne = (id: number) =>
      Effect.gen(function*() {
        tally.published++
        if (!cutDone && tally.published >= options.count / 2) {
          cutDone = true
          yield* cutLinks
        }
        yield* channel.publish("", queue, Message.body(id, options.size), {
          properties: Message.properties(id),
          mandatory: true,
          retry
        })
        tally.confirmed++
        if (!consumed.has(id)) awaiting.add(id)
      }).pipe(Effect.catchIf(isNack, () => Effect.sync(() => tally.nacked++)))
    yield* Message.forEachId(options.count, options.window, publishOne)
    publisherDone = true
    yield* checkDrained
  }).pipe(Effect.scoped)

  const consumers = Effect.forEach(Message.ids(options.consumers), () => consumer, {
    concurrency: "unbounded",
    discard: true
  })
  const stopped = new Report.CommandFailed({ message: "the consumers stopped before the queue was drained" })
  const work = Queues.awaitConsumers(admin, queue, options.consumers).pipe(
    Effect.andThen(publisher),
    Effect.andThen(Deferred.await(drained).pipe(Effect.timeoutOption(`${options.timeout} seconds`))),
    Effect.asVoid
  )
  yield* Effect.raceFirst(work, consumers.pipe(Effect.andThen(Effect.fail(stopped))))

  tally.lost = awaiting.size
  tally.reconnects = (yield* publisherClient.stats).reconnects + (yield* consumerClient.stats).reconnects
  const seconds = Report.secondsSince(start)
  yield* Console.log(formatTally(tally))
  yield* Console.log(`time        ${seconds.toFixed(2)} s (${Report.rate(tally.consumed, seconds)})`)
  if (tally.lost > 0) {
    return yield* new Report.CommandFailed({
      message: `${tally.lost} confirmed messages were not consumed within ${options.timeout} s`
    })
  }
}, Effect.scoped)

/** A loopback proxy to the broker for the scope; `@effect-amqp/testing` is loaded only for it. */
const startProxy = (broker: ConnectionConfig.ConnectionOptions) =>
  Effect.gen(function*() {
    const testing = yield* Effect.tryPromise({
      try: () => import("@effect-amqp/testing"),
      catch: (cause) =>
        new Report.CommandFailed({
          message: `@effect-amqp/testing, which has the fault proxy, cannot be loaded (try --no-cut): ${String(cause)}`
        })
    })
    return yield* testing.FaultProxy.make({ target: { host: broker.host, port: broker.port } }).pipe(
      Effect.mapError((error) =>
        new Report.CommandFailed({ message: `the fault proxy did not start: ${error.message}` })
      )
    )
  })

/**
 * The broker's options with the proxy's address. Over TLS the name checked in the certificate stays
 * the broker's (a broker addressed by IP cannot be checked behind the proxy; use `--no-cut`).
 */
const throughProxy = (
  broker: ConnectionConfig.ConnectionOptions,
  proxy: { readonly host: string; readonly port: number }
): ConnectionConfig.ConnectionOptions => ({
  ...broker,
  host: proxy.host,
  port: proxy.port,
  tls: broker.tls === undefined ? undefined : { servername: broker.host, ...broker.tls }
})

/** Prints a client's losses and recoveries as they happen, for the scope. */
const narrate = (role: string, client: AmqpClient.AmqpClient) =>
  Effect.flatMap(
    client.subscribe,
    (subscription) =>
      Effect.forkScoped(Effect.forever(Effect.flatMap(PubSub.take(subscription), (event) => {
        switch (event._tag) {
          case "Disconnected":
            return Console.log(`demo: ${role} lost the connection: ${event.cause.message}`)
          case "Recovered":
            return Console.log(`demo: ${role} reconnected and recovered in ${event.durationMillis} ms`)
          case "RecoveryStepFailed":
            return Console.log(`demo: ${role} could not recover ${event.step}: ${String(event.error)}`)
          case "GaveUp":
            return Console.log(`demo: ${role} gave up reconnecting: ${event.cause.message}`)
          default:
            return Effect.void
        }
      })))
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
  cut: Flag.Boolean("cut").pipe(
    Flag.withDescription(
      "Connect through a loopback fault proxy and reset every connection once, halfway through publishing " +
        "(default). --no-cut connects straight to the broker and cuts nothing."
    ),
    Flag.withDefault(true)
  ),
  progress: Flags.progress
}, run).pipe(
  Command.withDescription(
    "Run a work queue with publisher confirms and manual acks, cut its connections halfway, and report " +
      "published, confirmed, retried, consumed, lost (must be 0), redelivered, duplicates, stale acks and " +
      "reconnects. Exits 0 only when no confirmed message was lost."
  )
)
