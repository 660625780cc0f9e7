/**
 * Two private nodes given as two hosts. They are separate nodes, not a cluster: when the first
 * stops, the client moves to the second, and what it declared exists there only because recovery
 * declares it again. A publish through the client then reaches the recovered consumer on the
 * second node.
 */
import { AmqpClient } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { LeakProbe } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "./support.ts"

describe("AmqpClient with two hosts", () => {
  it.live(
    "moves to the second host when the first stops, topology and consumers included",
    () =>
      Effect.gen(function*() {
        const [first, second] = yield* Effect.all([BrokerNode.start(), BrokerNode.start()], { concurrency: 2 })
        const before = yield* LeakProbe.snapshot(second)
        const exchange = `recovery-failover-${randomUUID()}`
        const queue = `recovery-failover-${randomUUID()}`
        yield* Effect.scoped(Effect.gen(function*() {
          const client = yield* AmqpClient.make(yield* Support.options(first.amqpPort, "failover"), {
            hosts: [{ host: "127.0.0.1", port: first.amqpPort }, { host: "127.0.0.1", port: second.amqpPort }],
            reconnect: Schedule.spaced("200 millis")
          })
          const log = yield* Support.eventLog(client)
          const channel = yield* client.channel()
          yield* channel.exchangeDeclare(exchange, "direct")
          yield* channel.queueDeclare(queue)
          yield* channel.queueBind(queue, exchange, "orders")
          const inbox = yield* Support.consumeInto(channel, queue)
          yield* Support.roundTrip(channel, inbox, queue, exchange, "orders", "on the first node")
          assert.notInclude((yield* second.listQueues()).map((q) => q.name), queue)

          yield* first.stop
          const disconnected = yield* log.next("Disconnected")
          assert.strictEqual(disconnected.event.cause.replyCode, 320)
          const connecting = yield* log.next("Connecting", disconnected.index)
          assert.strictEqual(connecting.event.port, second.amqpPort)
          const connected = yield* log.next("Connected", connecting.index)
          assert.strictEqual(connected.event.port, second.amqpPort)
          yield* log.next("Recovered", connected.index)
          assert.deepStrictEqual(log.all("RecoveryStepFailed"), [])

          yield* Support.roundTrip(channel, inbox, queue, exchange, "orders", "on the second node")
          const declared = (yield* second.listQueues()).find((q) => q.name === queue)
          assert.strictEqual(declared?.consumers, 1)
          const bindings = yield* second.rabbitmqctl([
            "-q",
            "list_bindings",
            "source_name",
            "destination_name",
            "routing_key",
            "--formatter",
            "json"
          ])
          assert.deepInclude(JSON.parse(bindings) as Array<unknown>, {
            source_name: exchange,
            destination_name: queue,
            routing_key: "orders"
          })
        }))
        yield* LeakProbe.assertNoLeaks(before, { broker: second, timeoutMillis: 10_000 })
      }),
    90_000
  )
})
