/**
 * Channels as units of failure and as numbered resources: a channel error ends only its channel,
 * a closed channel refuses further work with `AmqpClosedError`, channel ids stop at channel_max
 * and are reused once freed, and concurrent methods on one channel get their own replies.
 */
import { AmqpChannel, AmqpChannelError, AmqpChannelLimit, AmqpClosedError, ServerClosed } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Option, Scope } from "effect"
import { onSharedBroker, poll, type SharedBroker, text, unique, utf8 } from "../support/channelKit.ts"

/** The ids of this connection's channels as the broker lists them. */
const brokerChannelIds = (broker: SharedBroker, connectionName: string | undefined) =>
  Effect.gen(function*() {
    const pids = (yield* broker.listConnections).filter((c) => c.clientProvidedName === connectionName)
      .map((c) => c.pid)
    return (yield* broker.listChannels).filter((c) => pids.includes(c.connection)).map((c) => c.number).toSorted((
      a,
      b
    ) => a - b)
  })

describe("channel errors", () => {
  it.live("a 404 on one channel closes only that channel; the connection and other channels work on", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const healthy = yield* AmqpChannel.make(connection)
        const failing = yield* AmqpChannel.make(connection)
        const missing = unique("q-missing")
        const error = yield* Effect.flip(failing.queueDeclare(missing, { passive: true }))
        assert.instanceOf(error, AmqpChannelError)
        const expected = {
          _tag: "AmqpChannelError",
          channel: failing.id,
          replyCode: 404,
          replyText: `NOT_FOUND - no queue '${missing}' in vhost '/'`,
          classId: 50,
          methodId: 10,
          method: "queue.declare"
        }
        assert.deepStrictEqual<unknown>({ ...error }, expected)

        // The failed channel reports why it ended, and refuses everything after.
        assert.isFalse(yield* failing.isOpen)
        assert.strictEqual(yield* failing.closed, error)
        const declare = yield* Effect.flip(failing.queueDeclare("", { exclusive: true }))
        const publish = yield* Effect.flip(failing.publish("", "anything", utf8("x")))
        const get = yield* Effect.flip(failing.get("anything"))
        for (const later of [declare, publish, get]) {
          assert.instanceOf(later, AmqpClosedError)
          assert.strictEqual((later as AmqpClosedError).what, "channel")
          assert.strictEqual((later as AmqpClosedError).cause, error)
        }

        assert.isTrue(yield* connection.isOpen)
        assert.isTrue(yield* healthy.isOpen)
        yield* healthy.confirmSelect
        const queue = (yield* healthy.queueDeclare("", { exclusive: true })).queue
        yield* healthy.publish("", queue, utf8("still here"))
        assert.strictEqual(text(Option.getOrThrow(yield* healthy.get(queue, { noAck: true })).body), "still here")
        const fresh = yield* AmqpChannel.make(connection)
        assert.strictEqual((yield* fresh.queueDeclare(queue, { passive: true })).messageCount, 0)
      })
    ))

  it.live("operations on the channels of a connection the broker closed fail with AmqpClosedError", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        assert.strictEqual(yield* broker.closeConnection(connection.name!, "channel test"), 1)
        const cause = yield* channel.closed
        assert.strictEqual(cause, yield* connection.closed)
        assert.strictEqual(cause._tag, "AmqpConnectionError")
        assert.deepStrictEqual(
          (cause as { reason: unknown }).reason,
          new ServerClosed({
            replyCode: 320,
            replyText: "CONNECTION_FORCED - channel test",
            classId: 0,
            methodId: 0,
            method: undefined,
            duringHandshake: false
          })
        )
        const later = yield* Effect.flip(channel.queueDeclare("", { exclusive: true }))
        assert.instanceOf(later, AmqpClosedError)
        assert.strictEqual((later as AmqpClosedError).what, "channel")
        assert.strictEqual((later as AmqpClosedError).cause, cause)
        const another = yield* Effect.flip(AmqpChannel.make(connection))
        assert.instanceOf(another, AmqpClosedError)
        assert.strictEqual((another as AmqpClosedError).what, "connection")
        assert.strictEqual((another as AmqpClosedError).cause, cause)
      })
    ))
})

describe("channel ids", () => {
  it.live("stops at the negotiated channel_max with AmqpChannelLimit and reuses freed ids", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect({ channelMax: 5 })
        assert.strictEqual(connection.tuned.channelMax, 5)
        const scopes = yield* Effect.forEach([1, 2, 3, 4, 5], () => Scope.make())
        const channels = yield* Effect.forEach(
          scopes,
          (scope) => Scope.provide(AmqpChannel.make(connection), scope)
        )
        assert.deepStrictEqual(channels.map((c) => c.id), [1, 2, 3, 4, 5])
        const limit = yield* Effect.flip(AmqpChannel.make(connection))
        assert.instanceOf(limit, AmqpChannelLimit)
        assert.deepStrictEqual({ ...limit }, { _tag: "AmqpChannelLimit", channelMax: 5 })
        assert.deepStrictEqual(yield* brokerChannelIds(broker, connection.name), [1, 2, 3, 4, 5])

        // Closing channel 3 frees its id, and the next channel gets it.
        yield* Scope.close(scopes[2]!, Exit.void)
        assert.isFalse(yield* channels[2]!.isOpen)
        const reopened = yield* AmqpChannel.make(connection)
        assert.strictEqual(reopened.id, 3)
        yield* reopened.queueDeclare("", { exclusive: true })

        assert.deepStrictEqual(
          yield* poll(brokerChannelIds(broker, connection.name), (ids) => ids.includes(3)),
          [1, 2, 3, 4, 5]
        )
        assert.isTrue(yield* connection.isOpen)
        for (const scope of scopes) yield* Scope.close(scope, Exit.void)
      })
    ))

  it.live("frees the id of a channel the broker closed by the time its failed method returns", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect({ channelMax: 2 })
        assert.strictEqual(connection.tuned.channelMax, 2)
        const first = yield* AmqpChannel.make(connection)
        const second = yield* AmqpChannel.make(connection)
        assert.deepStrictEqual([first.id, second.id], [1, 2])
        const error = yield* Effect.flip(first.queueDeclare(unique("q-missing"), { passive: true }))
        assert.instanceOf(error, AmqpChannelError)
        assert.isFalse(yield* first.isOpen)
        // The broker has closed channel 1 and the client has answered close-ok: the id is free.
        const replacement = yield* AmqpChannel.make(connection)
        assert.strictEqual(replacement.id, 1)
        yield* replacement.queueDeclare("", { exclusive: true })
        assert.deepStrictEqual(yield* brokerChannelIds(broker, connection.name), [1, 2])
      })
    ))

  it.live("answers concurrent methods on one channel each with its own reply", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const channel = yield* AmqpChannel.make(yield* connect())
        yield* channel.confirmSelect
        const names = Array.from({ length: 50 }, (_, i) => unique(`q-concurrent-${i}`))
        const declared = yield* Effect.forEach(
          names,
          (name, i) =>
            Effect.andThen(
              channel.queueDeclare(name, { exclusive: true }),
              Effect.andThen(
                Effect.forEach(Array.from({ length: i % 4 }), () => channel.publish("", name, utf8("x")), {
                  discard: true
                }),
                channel.queueDeclare(name, { passive: true })
              )
            ),
          { concurrency: "unbounded" }
        )
        assert.deepStrictEqual(
          declared,
          names.map((queue, i) => ({ queue, messageCount: i % 4, consumerCount: 0 }))
        )
        const deleted = yield* Effect.forEach(names, (name) => channel.queueDelete(name), {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(deleted, names.map((_, i) => i % 4))
      })
    ))
})
