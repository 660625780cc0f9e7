/**
 * AmqpClient with a tx-mode channel across a reconnect (the transaction is lost with the link, so
 * the handle ends), and a client closed while a reconnect's handshake is in flight. A private node
 * for the file behind a fault proxy.
 */
import { AmqpClient, AmqpClosedError, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"

const spaced = (millis: number) => Schedule.spaced(millis).pipe(Schedule.setInputType<AmqpConnectionError>())

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })(
  "AmqpClient, transactions and closing",
  (it) => {
    it.effect("a channel in tx mode ends with the link: what the lost transaction held is neither sent nor kept", () =>
      Support.probed(({ proxy }) =>
        Effect.gen(function*() {
          const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "tx"), { reconnect: spaced(200) })
          const log = yield* Support.eventLog(client)
          const admin = yield* client.channel()
          const queue = `tx-${randomUUID()}`
          yield* admin.queueDeclare(queue)
          const channel = yield* client.channel()
          yield* channel.txSelect
          yield* channel.publish("", queue, Buffer.from("uncommitted"))
          yield* proxy.dropAll()
          const disconnected = yield* log.next("Disconnected")
          yield* log.next("Recovered", disconnected.index)
          const expected = new AmqpClosedError({ what: "channel", cause: disconnected.event.cause })
          assert.deepStrictEqual(yield* channel.closed, expected)
          assert.deepStrictEqual(yield* Effect.flip(channel.publish("", queue, Buffer.from("after"))), expected)
          assert.deepStrictEqual(yield* Effect.flip(channel.txCommit), expected)
          assert.isFalse(yield* channel.isOpen)
          // The other channel recovered, and the queue holds nothing of the lost transaction.
          assert.strictEqual((yield* admin.queueDeclare(queue, { passive: true })).messageCount, 0)
          yield* admin.queueDelete(queue)
        })
      ))

    it.effect("a client closed while a reconnect's handshake is in flight leaves nothing open", () =>
      Support.probed(({ proxy }) =>
        Effect.gen(function*() {
          yield* Effect.scoped(Effect.gen(function*() {
            const client = yield* AmqpClient.make(
              yield* Support.options(proxy.port, "close-handshake", { handshakeTimeout: 20_000 }),
              { reconnect: spaced(100) }
            )
            const log = yield* Support.eventLog(client)
            yield* proxy.pause("serverToClient")
            yield* proxy.dropAll()
            const disconnected = yield* log.next("Disconnected")
            yield* log.next("Connecting", disconnected.index)
            yield* proxy.awaitUntil((s) => s.accepted >= 2, { timeout: 5_000 })
            yield* Support.realDelay(300)
            // The handshake is held up: the client closes before it connects again.
            assert.deepStrictEqual(log.all("Connected", disconnected.index), [])
          }))
          yield* proxy.clearFaults
          // probed's leak check follows: sockets, timers, client fibers and broker connections.
        })
      ))
  }
)
