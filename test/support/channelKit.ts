/**
 * Helpers for the channel suites in test/channel: named connections to a private broker node,
 * a leak probe that counts only this suite's broker connections (other files use the same shared
 * node at the same time), confirm-mode channels with a queue, unique names, digests and bounded
 * polling.
 *
 * Nothing here opens a connection anywhere but the node it is given.
 */
import {
  AmqpChannel,
  type AmqpConfigError,
  AmqpConnection,
  type AmqpConnectionError,
  type ConnectionConfig
} from "@effect-amqp/client"
import { type BrokerNode, LeakProbe, SharedBroker as Shared } from "@effect-amqp/testing"
import { assert } from "@effect/vitest"
import { Effect, Option } from "effect"
import type * as Scope from "effect/Scope"
import * as Crypto from "node:crypto"

/** What the helpers need of a node: its URL and its `rabbitmqctl` listing of connections. */
export type Node = Pick<BrokerNode.Info, "url"> & Pick<BrokerNode.Control, "listConnections">

const runId = `${process.pid}-${Date.now().toString(36)}`
let counter = 0

/** A name no other test (or earlier run) uses: `prefix` plus this process, time and a counter. */
export const unique = (prefix: string): string => `${prefix}-${runId}-${++counter}`

/** Opens a connection to the node, named so that the broker and the leak probe can tell it apart. */
export type Connect = (
  overrides?: ConnectionConfig.ConnectionOptionsInput
) => Effect.Effect<AmqpConnection.AmqpConnection, AmqpConnectionError | AmqpConfigError, Scope.Scope>

/**
 * Runs `body` in its own scope between two leak snapshots: sockets, timers, the client's live
 * fibers and the broker connections `body` opened with the `connect` it is given must all be back
 * to where they were. Those connections carry a name prefix unique to this run of `body`, so the
 * broker-side count ignores other test files that share the node, and it starts at zero: nothing
 * can carry the prefix before `body` runs, which saves a `rabbitmqctl` call (about 1.5 s).
 */
export const withLeakProbe = <A, E>(
  node: Node,
  body: (connect: Connect) => Effect.Effect<A, E, Scope.Scope>
) =>
  Effect.gen(function*() {
    const prefix = unique("channel-suite")
    const ours = {
      listConnections: Effect.map(
        node.listConnections,
        (all) => all.filter((c) => c.clientProvidedName?.startsWith(prefix) === true)
      )
    }
    const before = { ...(yield* LeakProbe.snapshot()), brokerConnections: [] }
    let opened = 0
    const connect: Connect = (overrides = {}) =>
      AmqpConnection.fromUrl(node.url, { connectionName: `${prefix}-c${++opened}`, ...overrides })
    const result = yield* Effect.scoped(body(connect))
    // The probe lists connections with `rabbitmqctl` and then counts handles, when that child's
    // ProcessWrap is often still open: it would cost every test a second listing. The client
    // starts no processes, so none of its leaks can hide there.
    yield* LeakProbe.assertNoLeaks(before, { broker: ours, timeoutMillis: 10_000, ignore: ["ProcessWrap"] })
    return result
  })

/** The run's shared private node. */
export type SharedBroker = Shared.SharedBroker

/** `withLeakProbe` on the run's shared private node, which `body` gets too. */
export const onSharedBroker = <A, E>(
  body: (connect: Connect, broker: SharedBroker) => Effect.Effect<A, E, Scope.Scope>
) => Effect.flatMap(Shared.acquire, (broker) => withLeakProbe(broker, (connect) => body(connect, broker)))

/**
 * `onSharedBroker` with one connection, a queue named from `prefix` that an admin channel on it
 * has declared, and a second channel on it for the test.
 */
export const onQueue = <A, E>(
  prefix: string,
  body: (env: {
    readonly connection: AmqpConnection.AmqpConnection
    readonly admin: AmqpChannel.AmqpChannel
    readonly channel: AmqpChannel.AmqpChannel
    readonly queue: string
  }) => Effect.Effect<A, E, Scope.Scope>
) =>
  onSharedBroker((connect) =>
    Effect.gen(function*() {
      const connection = yield* connect()
      const admin = yield* AmqpChannel.make(connection)
      const channel = yield* AmqpChannel.make(connection)
      const queue = unique(prefix)
      yield* admin.queueDeclare(queue)
      return yield* body({ connection, admin, channel, queue })
    })
  )

/** A channel on `connection` in confirm mode, and an exclusive server-named queue it declared. */
export const confirmingChannel = (connection: AmqpConnection.AmqpConnection, options?: AmqpChannel.ChannelOptions) =>
  Effect.gen(function*() {
    const channel = yield* AmqpChannel.make(connection, options)
    yield* channel.confirmSelect
    const queue = (yield* channel.queueDeclare("", { exclusive: true })).queue
    return { channel, queue }
  })

/**
 * Publishes `count` messages "<prefix>0", "<prefix>1" ... to `queue` through the default exchange,
 * one after another.
 */
export const publishNumbered = (channel: AmqpChannel.AmqpChannel, queue: string, count: number, prefix = "m") =>
  Effect.forEach(
    Array.from({ length: count }, (_, i) => i),
    (i) => channel.publish("", queue, utf8(`${prefix}${i}`)),
    { discard: true }
  )

/**
 * A confirm-mode channel, a queue holding `count` messages "m0".. published on it, and a second
 * channel on the same connection to consume with.
 */
export const queueWithMessages = (connect: Connect, prefix: string, count: number) =>
  Effect.gen(function*() {
    const connection = yield* connect()
    const channel = yield* AmqpChannel.make(connection)
    yield* channel.confirmSelect
    const queue = unique(prefix)
    yield* channel.queueDeclare(queue)
    yield* publishNumbered(channel, queue, count)
    const consumer = yield* AmqpChannel.make(connection)
    return { connection, channel, queue, consumer }
  })

/** The number of ready messages in `queue`, from a passive declare. */
export const readyCount = (channel: AmqpChannel.AmqpChannel, queue: string) =>
  Effect.map(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount)

/**
 * The number of ready messages in `queue` once it is `expected`, or after five seconds: publishes
 * and requeues reach a queue a moment after the methods that follow them are answered.
 */
export const readyCountOnceAt = (channel: AmqpChannel.AmqpChannel, queue: string, expected: number) =>
  poll(readyCount(channel, queue), (count) => count === expected)

/** SHA-256 of `bytes`, hex. */
export const sha256 = (bytes: Uint8Array): string => Crypto.createHash("sha256").update(bytes).digest("hex")

/** `size` random bytes. */
export const randomBytes = (size: number): Uint8Array => new Uint8Array(Crypto.randomBytes(size))

/** UTF-8 bytes of `text`. */
export const utf8 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "utf8"))

/** The text of UTF-8 `bytes`. */
export const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString("utf8")

/**
 * Re-runs `effect` until `done` holds for its value (at most `timeoutMillis`), then returns the
 * last value, whether or not it held: the caller asserts on it.
 */
export const poll = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  done: (a: A) => boolean,
  timeoutMillis = 5_000
): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMillis
    while (true) {
      const value = yield* effect
      if (done(value) || Date.now() >= deadline) return value
      yield* Effect.sleep(25)
    }
  })

/**
 * The broker's listing of channel `channel` of the connection named `connectionName` (empty when
 * there is none), joined through the connection's pid.
 */
export const brokerChannel = (
  node: Pick<BrokerNode.Control, "listConnections" | "listChannels">,
  connectionName: string | undefined,
  channel: number
) =>
  Effect.gen(function*() {
    const connections = (yield* node.listConnections).filter((c) => c.clientProvidedName === connectionName)
    const channels = yield* node.listChannels
    return channels.filter((c) => c.number === channel && connections.some((conn) => conn.pid === c.connection))
  })

/**
 * After a consumer on channel `consumer` of `connection` ended holding `handled`, unacknowledged,
 * while the rest of `queue`'s messages sat in its buffer: the broker lists no consumer on that
 * channel, the `requeued` buffered messages are back in the queue and the handled ones are still
 * unacknowledged. Then acks the handled ones and returns the requeued bodies, each of which must
 * come back marked redelivered.
 */
export const checkRequeuedAfterEnd = (
  node: Pick<BrokerNode.Control, "listConnections" | "listChannels">,
  connection: AmqpConnection.AmqpConnection,
  channel: AmqpChannel.AmqpChannel,
  consumer: AmqpChannel.AmqpChannel,
  queue: string,
  handled: ReadonlyArray<AmqpChannel.Delivery>,
  requeued: number
) =>
  Effect.gen(function*() {
    const onBroker = yield* brokerChannel(node, connection.name, consumer.id)
    assert.deepStrictEqual(onBroker.map((c) => c.consumerCount), [0])
    const passive = yield* poll(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === requeued)
    assert.deepStrictEqual(passive, { queue, messageCount: requeued, consumerCount: 0 })
    const unacked = yield* brokerChannel(node, connection.name, consumer.id)
    assert.deepStrictEqual(unacked.map((c) => c.messagesUnacknowledged), [handled.length])
    yield* handled[handled.length - 1]!.ack({ multiple: true })
    const rest: Array<string> = []
    for (let i = 0; i < requeued; i++) {
      const got = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
      assert.isTrue(got.redelivered)
      rest.push(text(got.body))
    }
    return rest
  })
