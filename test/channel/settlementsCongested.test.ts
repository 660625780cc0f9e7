/**
 * Acknowledgements on a congested socket: they are written at once, in the step that records them
 * as settled, so the broker takes them in the order the application asked, among `tx.commit` and
 * `tx.rollback` (which are written at once too), and the records agree with the broker's own count
 * of unacknowledged messages. A proxy that stops reading from the client and a 24 MiB publish on
 * another channel of the same connection congest the socket.
 */
import { AmqpChannel } from "@effect-amqp/client"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import { brokerChannel, onSharedBroker, queueWithMessages, randomBytes, unique } from "../support/channelKit.ts"
import { outcomeTag } from "../support/Outcome.ts"

const getOne = (channel: AmqpChannel.AmqpChannel, queue: string) => Effect.map(channel.get(queue), Option.getOrThrow)

/** A consumer channel through a proxy on the shared node, a delivery got on it, and a way to congest. */
const setup = (
  connect: Parameters<Parameters<typeof onSharedBroker>[0]>[0],
  amqpPort: number,
  label: string,
  tx: boolean
) =>
  Effect.gen(function*() {
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: amqpPort } })
    const { channel, queue } = yield* queueWithMessages(connect, label, 1)
    const viaProxy = yield* connect({ port: proxy.port })
    const consumer = yield* AmqpChannel.make(viaProxy)
    const bulk = yield* AmqpChannel.make(viaProxy)
    if (tx) yield* consumer.txSelect
    const d1 = yield* getOne(consumer, queue)
    const congest = Effect.gen(function*() {
      yield* proxy.stopReading("clientToServer")
      // Unroutable through the default exchange: the broker drops it.
      const publish = yield* Effect.forkChild(bulk.publish("", unique("nowhere"), randomBytes(24 * 1024 * 1024)), {
        startImmediately: true
      })
      yield* Effect.sleep(200)
      return publish
    })
    const release = (publish: Fiber.Fiber<void, unknown>) =>
      Effect.gen(function*() {
        yield* proxy.resumeReading("clientToServer")
        yield* Fiber.join(publish)
      })
    return { channel, queue, viaProxy, consumer, d1, congest, release }
  })

describe("acknowledgements on a congested socket", () => {
  it.live(
    "an ack before tx.rollback is rolled back with it: the broker and the client hold it unacked",
    () =>
      onSharedBroker((connect, broker) =>
        Effect.gen(function*() {
          const { channel, consumer, d1, congest, release, viaProxy, queue } = yield* setup(
            connect,
            broker.amqpPort,
            "cong-rb",
            true
          )
          const publish = yield* congest
          const ack = yield* Effect.forkChild(d1.ack(), { startImmediately: true })
          const rollback = yield* Effect.forkChild(consumer.txRollback, { startImmediately: true })
          yield* Effect.sleep(100)
          yield* release(publish)
          const first = { ack: yield* outcomeTag(Fiber.join(ack)), rollback: yield* outcomeTag(Fiber.join(rollback)) }
          // The ack went before the rollback, which undid it: d1 is unacknowledged again.
          const unacked = (yield* brokerChannel(broker, viaProxy.name, consumer.id)).map((c) =>
            c.messagesUnacknowledged
          )
          const again = yield* outcomeTag(d1.ack())
          const commit = yield* outcomeTag(consumer.txCommit)
          const open = yield* consumer.isOpen
          assert.deepStrictEqual({ first, unacked, again, commit, open }, {
            first: { ack: "ok", rollback: "ok" },
            unacked: [1],
            again: "ok",
            commit: "ok",
            open: true
          })
          yield* channel.queueDelete(queue)
        })
      ),
    60_000
  )

  it.live(
    "an ack before tx.commit is committed with it: a later rollback leaves it settled",
    () =>
      onSharedBroker((connect, broker) =>
        Effect.gen(function*() {
          const { channel, consumer, d1, congest, release, viaProxy, queue } = yield* setup(
            connect,
            broker.amqpPort,
            "cong-commit",
            true
          )
          const publish = yield* congest
          const ack = yield* Effect.forkChild(d1.ack(), { startImmediately: true })
          const commit = yield* Effect.forkChild(consumer.txCommit, { startImmediately: true })
          yield* Effect.sleep(100)
          yield* release(publish)
          const first = { ack: yield* outcomeTag(Fiber.join(ack)), commit: yield* outcomeTag(Fiber.join(commit)) }
          yield* consumer.txRollback
          // The ack went before the commit: the rollback after it has nothing to undo.
          const unacked = (yield* brokerChannel(broker, viaProxy.name, consumer.id)).map((c) =>
            c.messagesUnacknowledged
          )
          const again = yield* outcomeTag(d1.ack())
          const commit2 = yield* outcomeTag(consumer.txCommit)
          assert.deepStrictEqual({ first, unacked, again, commit2 }, {
            first: { ack: "ok", commit: "ok" },
            unacked: [0],
            again: "AmqpUnknownDeliveryTag(settled)",
            commit2: "ok"
          })
          yield* channel.queueDelete(queue)
        })
      ),
    60_000
  )

  it.live(
    "an ack on a congested socket is written at once: interrupting it after changes nothing",
    () =>
      onSharedBroker((connect, broker) =>
        Effect.gen(function*() {
          const { channel, consumer, d1, congest, release, viaProxy, queue } = yield* setup(
            connect,
            broker.amqpPort,
            "cong-interrupt",
            false
          )
          const publish = yield* congest
          const ack = yield* Effect.forkChild(d1.ack(), { startImmediately: true })
          yield* Effect.sleep(50)
          yield* Fiber.interrupt(ack)
          yield* release(publish)
          const unacked = (yield* brokerChannel(broker, viaProxy.name, consumer.id)).map((c) =>
            c.messagesUnacknowledged
          )
          const again = yield* outcomeTag(d1.ack())
          assert.deepStrictEqual({ unacked, again }, { unacked: [0], again: "AmqpUnknownDeliveryTag(settled)" })
          yield* channel.queueDelete(queue)
        })
      ),
    60_000
  )
})
