/**
 * The scenarios, written once against `Session`. Each runs on a fresh queue that the orchestrator
 * declared (and, for consume scenarios, filled with the raw writer); the worker runs the measured
 * part and the orchestrator checks what is left in the queue afterwards.
 */
import { check, type Session } from "./adapter.ts"

export type BrokerKind = "rabbitmq" | "null" | "tls"

export interface Scenario {
  readonly name: string
  readonly title: string
  readonly kind: "publish" | "confirm" | "consume" | "pingPong"
  readonly bodySize: number
  /**
   * Against RabbitMQ and over TLS. Counts that ran for a third of a second measured the JIT more than the
   * clients: V8's compiler threads were still at work (1-2 µs per message for effect-amqp, 0.7-1.2
   * for the others), and every client's CPU per message was about twice its steady figure.
   */
  readonly messages: number
  /**
   * Against the null broker, where the same count would be over in a tenth of a second and measure
   * start-up more than the client, when more are needed.
   */
  readonly nullMessages?: number
  readonly quickMessages: number
  /** Confirm window; 1 is one at a time. */
  readonly window?: number
  readonly prefetch?: number
  readonly ackEvery?: number
  /**
   * The least warm-up, where a fifth of the count is too short: a scenario that sends one message
   * at a time runs its 2,000 or 10,000 messages in a fraction of a second, during which the JIT is
   * still compiling every client's hot path on the core the broker leaves free.
   */
  readonly minWarmup?: number
  readonly brokers: ReadonlyArray<BrokerKind>
}

const KiB = 1024
const MiB = 1024 * KiB

export const scenarios: ReadonlyArray<Scenario> = [
  {
    name: "publish-16B",
    title: "publish 16 B",
    kind: "publish",
    bodySize: 16,
    messages: 300_000,
    nullMessages: 500_000,
    quickMessages: 5_000,
    brokers: ["rabbitmq", "null"]
  },
  {
    name: "publish-1KiB",
    title: "publish 1 KiB",
    kind: "publish",
    bodySize: KiB,
    messages: 200_000,
    nullMessages: 500_000,
    quickMessages: 2_500,
    brokers: ["rabbitmq", "null", "tls"]
  },
  {
    name: "publish-64KiB",
    title: "publish 64 KiB",
    kind: "publish",
    bodySize: 64 * KiB,
    // 5,000 messages took a quarter of a second, and kernel time (most of each client's CPU here)
    // swung 3x between repetitions: 13 to 46 µs per message for effect-amqp. Over 20,000, three
    // repetitions gave 18-20 µs for effect-amqp and 22-33 for cloudamqp.
    messages: 20_000,
    nullMessages: 20_000,
    quickMessages: 250,
    // A fifth of 5,000 left the JIT compiling the publish path during the measured part, in
    // background threads whose CPU counted: 35-38 µs per message instead of 18 for effect-amqp,
    // 47-49 instead of 28-40 for cloudamqp.
    minWarmup: 10_000,
    brokers: ["rabbitmq", "null"]
  },
  {
    name: "confirm-serial",
    title: "confirm, one at a time",
    kind: "confirm",
    bodySize: 16,
    messages: 10_000,
    quickMessages: 100,
    window: 1,
    minWarmup: 10_000,
    brokers: ["rabbitmq", "null"]
  },
  {
    name: "confirm-window",
    title: "confirm, window 1,000",
    kind: "confirm",
    bodySize: 16,
    messages: 200_000,
    quickMessages: 2_500,
    window: 1000,
    brokers: ["rabbitmq", "null"]
  },
  {
    name: "consume-ack-each",
    title: "consume, ack each",
    kind: "consume",
    bodySize: 16,
    messages: 200_000,
    quickMessages: 2_500,
    prefetch: 1000,
    ackEvery: 1,
    brokers: ["rabbitmq", "null"]
  },
  {
    name: "consume-ack-250",
    title: "consume, ack multiple/250",
    kind: "consume",
    bodySize: 16,
    messages: 200_000,
    nullMessages: 300_000,
    quickMessages: 2_500,
    prefetch: 1000,
    ackEvery: 250,
    brokers: ["rabbitmq", "null", "tls"]
  },
  {
    name: "roundtrip-16B",
    title: "round trip 16 B",
    kind: "pingPong",
    bodySize: 16,
    messages: 2_000,
    quickMessages: 100,
    minWarmup: 10_000,
    brokers: ["rabbitmq"]
  },
  {
    name: "message-1MiB",
    title: "1 MiB publish+consume",
    kind: "pingPong",
    bodySize: MiB,
    messages: 20,
    quickMessages: 2,
    brokers: ["rabbitmq"]
  },
  {
    name: "message-16MiB",
    title: "16 MiB publish+consume",
    kind: "pingPong",
    bodySize: 16 * MiB,
    messages: 3,
    quickMessages: 1,
    brokers: ["rabbitmq"]
  },
  {
    name: "message-64MiB",
    title: "64 MiB publish+consume",
    kind: "pingPong",
    bodySize: 64 * MiB,
    messages: 2,
    quickMessages: 1,
    brokers: ["rabbitmq"]
  }
]

export const scenarioByName = (name: string): Scenario => {
  const scenario = scenarios.find((s) => s.name === name)
  if (scenario === undefined) throw new Error(`unknown scenario ${name}; known: ${scenarios.map((s) => s.name)}`)
  return scenario
}

export const messagesOf = (scenario: Scenario, quick: boolean, broker: BrokerKind): number =>
  quick ? scenario.quickMessages : broker === "null" ? scenario.nullMessages ?? scenario.messages : scenario.messages

/**
 * Messages of the unmeasured passes each worker runs first, so that every client is measured with
 * its code compiled by the JIT, as in a service that has been running. None for messages of 1 MiB
 * and more: their cost is copying, and their memory is measured from a process that has not yet
 * held such a message.
 */
export const warmupOf = (scenario: Scenario, messages: number): number =>
  scenario.bodySize >= MiB ? 0 : Math.max(1, Math.min(Math.ceil(messages / 5), 10_000), scenario.minWarmup ?? 0)

/**
 * The warm-up runs as this many passes, each the whole scenario on a queue of its own with an
 * equal share of the messages. The end of the first pass (a consumer cancelled, a channel closed)
 * is the first time each client takes those paths; the new object shapes it meets make V8 throw
 * away compiled code of the hot path, in every client. A single pass left that recompilation to
 * the measured part: the first 2,000 round trips after it cost 40-58 µs of CPU each instead of
 * 27-28, and their p99 tripled.
 */
export const WARMUP_PASSES = 2

/** The messages of each warm-up pass. */
export const warmupPassOf = (scenario: Scenario, messages: number): number =>
  Math.ceil(warmupOf(scenario, messages) / WARMUP_PASSES)

/** What the queue holds after a correct run. */
export const expectedAfter = (scenario: Scenario, messages: number): number =>
  scenario.kind === "publish" || scenario.kind === "confirm" ? messages : 0

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls a passive declare until the broker holds exactly `count` messages. */
export const awaitCount = async (
  session: Pick<Session, "messageCount">,
  queue: string,
  count: number,
  timeoutMs = 120_000
): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (true) {
    const now = await session.messageCount(queue)
    check(now <= count, `queue ${queue} holds ${now} messages, more than ${count}`)
    if (now === count) return
    check(Date.now() < deadline, `queue ${queue} holds ${now} of ${count} messages after ${timeoutMs} ms`)
    await sleep(2)
  }
}

export interface Measured {
  /** Latencies in nanoseconds, for round-trip scenarios. */
  readonly latencies?: ReadonlyArray<number>
}

/** The measured part of a scenario; throws when a count does not add up. */
export const runScenario = async (
  session: Session,
  scenario: Scenario,
  queue: string,
  body: Uint8Array,
  messages: number
): Promise<Measured> => {
  switch (scenario.kind) {
    case "publish":
      await session.publish(queue, body, messages)
      await awaitCount(session, queue, messages)
      return {}
    case "confirm":
      await session.publishConfirmed(queue, body, messages, scenario.window ?? 1)
      return {}
    case "consume":
      await session.consume(queue, messages, {
        prefetch: scenario.prefetch ?? 1000,
        ackEvery: scenario.ackEvery ?? 1,
        bodySize: body.length
      })
      return {}
    case "pingPong": {
      // One more round trip than measured: the first includes starting the consumer.
      const times = await session.pingPong(queue, body, messages + 1)
      check(times.length === messages + 1, `${times.length} round trips of ${messages + 1}`)
      return { latencies: times.slice(1) }
    }
  }
}
