/**
 * Settled tags in tx mode against the broker's own bookkeeping. RabbitMQ treats a second
 * tx.select as a no-op (the transaction goes on), basic.recover requeues only what is unacked
 * outside the transaction, and an ack that reaches the broker after tx.commit belongs to the next
 * transaction. After a tx.rollback, the client must accept an ack for every tag the broker holds
 * unacknowledged again.
 */
import { AmqpChannel } from "@effect-amqp/client"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import { brokerChannel, onSharedBroker, poll, queueWithMessages, readyCount } from "../support/channelKit.ts"
import { outcomeTag } from "../support/Outcome.ts"

const getOne = (channel: AmqpChannel.AmqpChannel, queue: string, noAck = false) =>
  Effect.map(channel.get(queue, { noAck }), Option.getOrThrow)

describe("settled tags in transactions", () => {
  it.live("tx.select twice: the transaction goes on, so a rollback makes the first ack outstanding again", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, queue, consumer } = yield* queueWithMessages(connect, "tx-select-twice", 1)
        yield* consumer.txSelect
        const d1 = yield* getOne(consumer, queue)
        yield* d1.ack()
        yield* consumer.txSelect
        yield* consumer.txRollback
        const unacked = (yield* brokerChannel(broker, connection.name, consumer.id)).map((c) =>
          c.messagesUnacknowledged
        )
        const ackAgain = yield* outcomeTag(d1.ack())
        const commit = yield* outcomeTag(consumer.txCommit)
        assert.deepStrictEqual({ unacked, ackAgain, commit }, { unacked: [1], ackAgain: "ok", commit: "ok" })
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))

  it.live("basic.recover inside a transaction, then rollback: the tx-acked delivery is unacked again", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, queue, consumer } = yield* queueWithMessages(connect, "tx-recover-rb", 2)
        yield* consumer.txSelect
        const d1 = yield* getOne(consumer, queue)
        yield* getOne(consumer, queue)
        yield* d1.ack()
        yield* consumer.recover(true)
        yield* consumer.txRollback
        const unacked = (yield* brokerChannel(broker, connection.name, consumer.id)).map((c) =>
          c.messagesUnacknowledged
        )
        const ackAgain = yield* outcomeTag(d1.ack())
        const commit = yield* outcomeTag(consumer.txCommit)
        const ready = yield* readyCount(channel, queue)
        assert.deepStrictEqual({ unacked, ackAgain, commit, ready }, {
          unacked: [1],
          ackAgain: "ok",
          commit: "ok",
          ready: 1
        })
        assert.strictEqual(yield* channel.queueDelete(queue), 1)
      })
    ))

  it.live("an ack sent after tx.commit but before commit-ok belongs to the next transaction", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
        const { queue } = yield* queueWithMessages(connect, "tx-ack-in-commit", 2)
        const viaProxy = yield* connect({ port: proxy.port })
        const consumer = yield* AmqpChannel.make(viaProxy)
        yield* consumer.txSelect
        yield* getOne(consumer, queue)
        const d2 = yield* getOne(consumer, queue)
        yield* proxy.pause("serverToClient")
        const commit = yield* Effect.forkChild(consumer.txCommit, { startImmediately: true })
        yield* Effect.sleep(100)
        yield* d2.ack()
        yield* Effect.sleep(100)
        yield* proxy.resume("serverToClient")
        yield* Fiber.join(commit)
        yield* consumer.txRollback
        const unacked = (yield* brokerChannel(broker, viaProxy.name, consumer.id)).map((c) => c.messagesUnacknowledged)
        const ackAgain = yield* outcomeTag(d2.ack())
        const commit2 = yield* outcomeTag(consumer.txCommit)
        assert.deepStrictEqual({ unacked, ackAgain, commit2 }, { unacked: [2], ackAgain: "ok", commit2: "ok" })
      })
    ))

  it.live("nack(multiple) and reject inside a transaction, rolled back, may be sent again; commit settles", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const { channel, connection, queue, consumer } = yield* queueWithMessages(connect, "tx-nack-multi", 3)
        yield* consumer.txSelect
        const d1 = yield* getOne(consumer, queue)
        const d2 = yield* getOne(consumer, queue)
        const d3 = yield* getOne(consumer, queue)
        const first = {
          nack: yield* outcomeTag(d2.nack({ multiple: true, requeue: false })),
          reject: yield* outcomeTag(d3.reject({ requeue: false })),
          d1Twice: yield* outcomeTag(d1.ack()),
          d3Twice: yield* outcomeTag(d3.ack())
        }
        yield* consumer.txRollback
        const second = {
          d1: yield* outcomeTag(d1.ack()),
          all: yield* outcomeTag(consumer.nack(0, true, true)),
          d3: yield* outcomeTag(d3.ack()),
          commit: yield* outcomeTag(consumer.txCommit),
          afterCommit: yield* outcomeTag(d2.ack())
        }
        yield* consumer.txRollback
        const third = { d2: yield* outcomeTag(d2.ack()) }
        assert.deepStrictEqual({ first, second, third }, {
          first: {
            nack: "ok",
            reject: "ok",
            d1Twice: "AmqpUnknownDeliveryTag(settled)",
            d3Twice: "AmqpUnknownDeliveryTag(settled)"
          },
          second: {
            d1: "ok",
            all: "ok",
            d3: "AmqpUnknownDeliveryTag(settled)",
            commit: "ok",
            afterCommit: "AmqpUnknownDeliveryTag(settled)"
          },
          third: { d2: "AmqpUnknownDeliveryTag(settled)" }
        })
        const unacked = (yield* brokerChannel(broker, connection.name, consumer.id)).map((c) =>
          c.messagesUnacknowledged
        )
        assert.deepStrictEqual(unacked, [0])
        // d2 and d3 were requeued by the committed nack(0, multiple).
        assert.strictEqual(yield* poll(readyCount(channel, queue), (n) => n === 2), 2)
        assert.strictEqual(yield* channel.queueDelete(queue), 2)
      })
    ))

  it.live("a no-ack get inside a transaction stays settled across a rollback", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, queue, consumer } = yield* queueWithMessages(connect, "tx-noack-rb", 2)
        yield* consumer.txSelect
        const d1 = yield* getOne(consumer, queue)
        const n2 = yield* getOne(consumer, queue, true)
        yield* d1.ack()
        yield* consumer.txRollback
        const got = {
          raw: yield* outcomeTag(consumer.ack(n2.deliveryTag)),
          d1: yield* outcomeTag(d1.ack()),
          all: yield* outcomeTag(consumer.ack(0, true)),
          commit: yield* outcomeTag(consumer.txCommit),
          open: yield* consumer.isOpen
        }
        assert.deepStrictEqual(got, {
          raw: "AmqpUnknownDeliveryTag(settled)",
          d1: "ok",
          all: "ok",
          commit: "ok",
          open: true
        })
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
      })
    ))
})
