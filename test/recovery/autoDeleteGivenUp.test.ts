/**
 * A consumer of an auto-delete queue that the application ends while recovery runs, after the
 * recorded topology declared the queue again on the new link but before the consumer started
 * there. The broker deletes such a queue only when a consumer of it goes, so recovery deletes it
 * (if nobody else consumes it): nothing the application gave up stays on the broker.
 */
import { AmqpClient, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Schedule, Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"

const spaced = (millis: number) => Schedule.spaced(millis).pipe(Schedule.setInputType<AmqpConnectionError>())

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("auto-delete queues", (it) => {
  it.effect(
    "a consumer ended between the queue's re-declaration and its own restart leaves no queue behind",
    () =>
      Support.probed(({ node, proxy }) =>
        Effect.gen(function*() {
          const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "slow-autodelete"), {
            reconnect: spaced(200),
            linkTimeout: 20_000
          })
          const log = yield* Support.eventLog(client)
          // Channels recovered before the consumer's, to make room between topology and consumer.
          for (let i = 0; i < 5; i++) {
            const other = yield* client.channel()
            yield* other.qos(5)
          }
          const channel = yield* client.channel()
          const queue = `slow-autodelete-${randomUUID()}`
          yield* channel.queueDeclare(queue, { autoDelete: true })
          yield* Effect.addFinalizer(() => Effect.ignore(node.deleteQueue(queue)))
          const consumerScope = yield* Scope.make()
          const inbox = yield* Scope.provide(Support.consumeInto(channel, queue), consumerScope)
          yield* Support.roundTrip(channel, inbox, queue, "", queue, "warm")

          const onBroker = Effect.map(node.listQueues(), (queues) => queues.some((q) => q.name === queue))
          yield* proxy.setLatency(250)
          yield* proxy.dropAll()
          const disconnected = yield* log.next("Disconnected")
          // Gone with its consumer on the lost link, then declared again by recovery's topology step.
          let seen = false
          for (let i = 0; i < 200 && !seen; i++) {
            const connected = log.all("Connected", disconnected.index).length > 0
            seen = connected && (yield* onBroker)
            if (!seen) yield* Support.realDelay(50)
          }
          assert.isTrue(seen, "recovery never declared the queue again")
          assert.strictEqual(log.all("Recovered", disconnected.index).length, 0, "recovery was not slow enough")
          yield* Scope.close(consumerScope, Exit.void)
          yield* log.next("Recovered", disconnected.index, 30_000)
          yield* proxy.clearFaults

          let left = true
          for (let i = 0; i < 20 && left; i++) {
            left = yield* onBroker
            if (left) yield* Support.realDelay(250)
          }
          assert.isFalse(left, "the auto-delete queue the application gave up is still on the broker")
        })
      ),
    { timeout: 90_000 }
  )
})
