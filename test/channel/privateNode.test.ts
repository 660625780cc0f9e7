/**
 * Channel behaviour that needs a broker of its own: a memory alarm (which blocks every publisher
 * of the node, so it must not touch the run's shared node) and a server-side channel_max. One
 * private node serves this file; it starts before the first test and stops after the last.
 */
import {
  AmqpChannel,
  AmqpChannelLimit,
  type AmqpConnection,
  AmqpPublishError,
  BlockedTimeout,
  type Unconfirmed
} from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Queue, Scope, Stream } from "effect"
import { type Connect, text, utf8, withLeakProbe } from "../support/channelKit.ts"

let node: BrokerNode.BrokerNode

beforeAll(
  () =>
    Effect.map(BrokerNode.start({ channelMax: 5 }), (started) => {
      node = started
    }),
  90_000
)

/** Collects the connection's events from now on. */
const recordEvents = (connection: AmqpConnection.AmqpConnection) =>
  Effect.gen(function*() {
    const events = yield* Queue.unbounded<AmqpConnection.ConnectionEvent>()
    yield* connection.events.pipe(
      Stream.runForEach((event) => Queue.offer(events, event)),
      Effect.forkScoped({ startImmediately: true })
    )
    yield* Effect.yieldNow
    return events
  })

/** The number of ready messages in `queue` as the node lists them. */
const messagesIn = (queue: string) =>
  Effect.map(node.listQueues(), (queues) => queues.filter((q) => q.name === queue).map((q) => q.messages))

describe("memory alarm", () => {
  it.live(
    "blocks publishers while the alarm is on and lets them finish when it clears",
    () =>
      withLeakProbe(node, (connect) =>
        Effect.gen(function*() {
          const connection = yield* connect()
          const events = yield* recordEvents(connection)
          const confirming = yield* AmqpChannel.make(connection)
          yield* confirming.confirmSelect
          const plain = yield* AmqpChannel.make(connection)
          const queue = "blocked-publishes"
          yield* confirming.queueDeclare(queue)
          assert.strictEqual(yield* connection.blocked, undefined)

          // RabbitMQ 3.10 blocks a connection when it publishes under an alarm: that first publish
          // leaves before the client knows, and the broker leaves it unread. The client holds back
          // every publish after connection.blocked.
          yield* node.setMemoryAlarm
          yield* Effect.addFinalizer(() => Effect.ignore(node.clearMemoryAlarm))
          const done = { trigger: false, confirmed: false, plain: false }
          const trigger = yield* confirming.publish("", queue, utf8("trigger")).pipe(
            Effect.andThen(Effect.sync(() => void (done.trigger = true))),
            Effect.forkScoped({ startImmediately: true })
          )
          const blocked = yield* Queue.take(events).pipe(Effect.timeout("15 seconds"))
          assert.deepStrictEqual(blocked, { _tag: "Blocked", reason: "low on memory" })
          assert.strictEqual(yield* connection.blocked, "low on memory")

          const confirmed = yield* confirming.publish("", queue, utf8("confirmed")).pipe(
            Effect.andThen(Effect.sync(() => void (done.confirmed = true))),
            Effect.forkScoped({ startImmediately: true })
          )
          const unconfirmed = yield* plain.publish("", queue, utf8("plain")).pipe(
            Effect.andThen(Effect.sync(() => void (done.plain = true))),
            Effect.forkScoped({ startImmediately: true })
          )
          yield* Effect.sleep(1000)
          assert.deepStrictEqual(done, { trigger: false, confirmed: false, plain: false })
          assert.deepStrictEqual(yield* messagesIn(queue), [0])

          yield* node.clearMemoryAlarm
          const unblocked = yield* Queue.take(events).pipe(Effect.timeout("15 seconds"))
          assert.deepStrictEqual(unblocked, { _tag: "Unblocked" })
          assert.strictEqual(yield* connection.blocked, undefined)
          yield* Effect.forEach(
            [trigger, confirmed, unconfirmed],
            (fiber) => Fiber.join(fiber).pipe(Effect.timeout("10 seconds"))
          )
          assert.deepStrictEqual(done, { trigger: true, confirmed: true, plain: true })
          const bodies: Array<string> = []
          for (let i = 0; i < 3; i++) {
            bodies.push(text(Option.getOrThrow(yield* confirming.get(queue, { noAck: true })).body))
          }
          assert.deepStrictEqual(bodies.toSorted(), ["confirmed", "plain", "trigger"])
          assert.strictEqual(yield* confirming.queueDelete(queue), 0)
        })),
    60_000
  )

  it.live(
    "fails a publish that stays blocked past blockedTimeout with BlockedTimeout",
    () =>
      withLeakProbe(node, (connect) =>
        Effect.gen(function*() {
          const connection = yield* connect()
          const events = yield* recordEvents(connection)
          const channel = yield* AmqpChannel.make(connection, { blockedTimeout: 300 })
          yield* channel.confirmSelect
          const queue = "blocked-timeout"
          yield* channel.queueDeclare(queue)

          // A publish without confirms gets the connection blocked (see above) and returns at once.
          yield* node.setMemoryAlarm
          yield* Effect.addFinalizer(() => Effect.ignore(node.clearMemoryAlarm))
          const plain = yield* AmqpChannel.make(connection)
          yield* plain.publish("", queue, utf8("trigger"))
          assert.deepStrictEqual(
            yield* Queue.take(events).pipe(Effect.timeout("15 seconds")),
            { _tag: "Blocked", reason: "low on memory" }
          )
          const started = Date.now()
          const error = yield* Effect.flip(channel.publish("", queue, utf8("too late")))
          const waited = Date.now() - started
          assert.instanceOf(error, AmqpPublishError)
          assert.deepStrictEqual(
            (error as AmqpPublishError).reason,
            new BlockedTimeout({ reason: "low on memory", afterMillis: 300 })
          )
          assert.isAtLeast(waited, 290)
          assert.isBelow(waited, 2000)

          yield* node.clearMemoryAlarm
          assert.deepStrictEqual(yield* Queue.take(events).pipe(Effect.timeout("15 seconds")), { _tag: "Unblocked" })
          // The timed-out publish was never sent; the trigger and the next one are in the queue.
          yield* channel.publish("", queue, utf8("after"))
          const bodies: Array<string> = []
          for (let i = 0; i < 2; i++) {
            bodies.push(text(Option.getOrThrow(yield* channel.get(queue, { noAck: true })).body))
          }
          assert.deepStrictEqual(bodies, ["trigger", "after"])
          assert.strictEqual(yield* channel.queueDelete(queue), 0)
        })),
    60_000
  )
})

/**
 * A connection in a scope of its own whose confirm channel published under the memory alarm: the
 * publish gets the connection blocked, and its confirm cannot come.
 */
const stuckPublish = (connect: Connect, queue: string) =>
  Effect.gen(function*() {
    const links = yield* Scope.make()
    const connection = yield* Scope.provide(connect({ closeTimeout: 1500 }), links)
    const events = yield* Scope.provide(recordEvents(connection), links)
    const channel = yield* Scope.provide(AmqpChannel.make(connection), links)
    yield* channel.confirmSelect
    yield* channel.queueDeclare(queue)
    yield* node.setMemoryAlarm
    yield* Effect.addFinalizer(() => Effect.ignore(node.clearMemoryAlarm))
    const publish = yield* channel.publish("", queue, utf8("stuck")).pipe(
      Effect.flip,
      Effect.forkScoped({ startImmediately: true })
    )
    return { links, connection, events, publish }
  })

/**
 * Closes the stuck publish's connection, which waiting for the confirm, the channel's close-ok and
 * the connection's would make take a closeTimeout each (4.5 s); checks that it took less than two,
 * and that the publish ended unconfirmed. Then clears the alarm and deletes `queue`.
 */
const closeStuck = (connect: Connect, queue: string, stuck: Effect.Success<ReturnType<typeof stuckPublish>>) =>
  Effect.gen(function*() {
    const started = Date.now()
    yield* Scope.close(stuck.links, Exit.void)
    const took = Date.now() - started
    assert.isBelow(took, 2500)
    const error = yield* Fiber.join(stuck.publish)
    assert.instanceOf(error, AmqpPublishError)
    assert.strictEqual(error.reason._tag, "Unconfirmed")
    assert.isTrue((error.reason as Unconfirmed).sent)

    yield* node.clearMemoryAlarm
    const admin = yield* AmqpChannel.make(yield* connect())
    yield* admin.queueDelete(queue)
  })

describe("closing while blocked", () => {
  it.live(
    "waits for no confirm and no close-ok, which the blocking broker would not send, and fails the confirm",
    () =>
      withLeakProbe(node, (connect) =>
        Effect.gen(function*() {
          const stuck = yield* stuckPublish(connect, "blocked-close")
          assert.deepStrictEqual(
            yield* Queue.take(stuck.events).pipe(Effect.timeout("15 seconds")),
            { _tag: "Blocked", reason: "low on memory" }
          )
          yield* closeStuck(connect, "blocked-close", stuck)
        })),
    60_000
  )

  it.live(
    "a close that began just before connection.blocked came stops waiting for its confirm then",
    () =>
      withLeakProbe(node, (connect) =>
        Effect.gen(function*() {
          const stuck = yield* stuckPublish(connect, "blocked-close-race")
          assert.isUndefined(yield* stuck.connection.blocked)
          yield* closeStuck(connect, "blocked-close-race", stuck)
        })),
    60_000
  )

  it.live(
    "a channel.close left unread behind the publish that got the connection blocked returns at once",
    () =>
      withLeakProbe(node, (connect) =>
        Effect.gen(function*() {
          const queue = "blocked-channel-close"
          const connection = yield* connect({ closeTimeout: 1500 })
          const events = yield* recordEvents(connection)
          const admin = yield* AmqpChannel.make(connection)
          yield* admin.queueDeclare(queue)
          const scope = yield* Scope.make()
          const plain = yield* Scope.provide(AmqpChannel.make(connection), scope)
          yield* node.setMemoryAlarm
          yield* Effect.addFinalizer(() => Effect.ignore(node.clearMemoryAlarm))
          yield* plain.publish("", queue, utf8("trigger"))
          const started = Date.now()
          yield* Scope.close(scope, Exit.void)
          const took = Date.now() - started
          assert.strictEqual(yield* connection.blocked, "low on memory")
          assert.isBelow(took, 1000)

          // The broker was blocking, not hung: the connection carries on once the alarm clears.
          yield* node.clearMemoryAlarm
          while ((yield* Queue.take(events).pipe(Effect.timeout("15 seconds")))._tag !== "Unblocked") continue
          const next = yield* AmqpChannel.make(connection)
          yield* next.confirmSelect
          yield* next.publish("", queue, utf8("after"))
          assert.strictEqual(yield* admin.queueDelete(queue), 2)
        })),
    60_000
  )
})

describe("server channel_max", () => {
  it.live(
    "stops at the channel_max the server proposes",
    () =>
      withLeakProbe(node, (connect) =>
        Effect.gen(function*() {
          const connection = yield* connect()
          assert.strictEqual(connection.tuned.channelMax, 5)
          const channels = yield* Effect.forEach([1, 2, 3, 4, 5], () => AmqpChannel.make(connection))
          assert.deepStrictEqual(channels.map((c) => c.id), [1, 2, 3, 4, 5])
          const limit = yield* Effect.flip(AmqpChannel.make(connection))
          assert.instanceOf(limit, AmqpChannelLimit)
          assert.strictEqual((limit as AmqpChannelLimit).channelMax, 5)
          const listed = yield* node.listConnections
          assert.deepStrictEqual(
            listed.filter((c) => c.clientProvidedName === connection.name).map((c) => c.channels),
            [5]
          )
          assert.isTrue(yield* connection.isOpen)
        })),
    60_000
  )
})
