/**
 * An auto-delete queue given up during a recovery whose link is then lost before its deletion:
 * the broker keeps it (it was never consumed on that link), so the deletion stays pending and
 * the next link's recovery deletes it.
 */
import { AmqpClient, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Schedule, Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"

const spaced = (millis: number) => Schedule.spaced(millis).pipe(Schedule.setInputType<AmqpConnectionError>())

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })(
  "given-up queue, link lost",
  (it) => {
    it.effect(
      "a given-up auto-delete queue does not stay when the link is lost before its recovery ends",
      () =>
        Support.probed(({ node, proxy }) =>
          Effect.gen(function*() {
            const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "given-up-lost"), {
              reconnect: spaced(200),
              linkTimeout: 30_000
            })
            const log = yield* Support.eventLog(client)
            for (let i = 0; i < 5; i++) {
              const other = yield* client.channel()
              yield* other.qos(5)
            }
            const channel = yield* client.channel()
            const queue = `given-up-lost-${randomUUID()}`
            yield* channel.queueDeclare(queue, { autoDelete: true })
            yield* Effect.addFinalizer(() => Effect.ignore(node.deleteQueue(queue)))
            const consumerScope = yield* Scope.make()
            const inbox = yield* Scope.provide(Support.consumeInto(channel, queue), consumerScope)
            yield* Support.roundTrip(channel, inbox, queue, "", queue, "warm")

            const onBroker = Effect.map(node.listQueues(), (queues) => queues.some((q) => q.name === queue))
            yield* proxy.setLatency(250)
            yield* proxy.dropAll()
            const disconnected = yield* log.next("Disconnected")
            let seen = false
            for (let i = 0; i < 200 && !seen; i++) {
              const connected = log.all("Connected", disconnected.index).length > 0
              seen = connected && (yield* onBroker)
              if (!seen) yield* Support.realDelay(50)
            }
            assert.isTrue(seen, "recovery never declared the queue again")
            assert.strictEqual(log.all("Recovered", disconnected.index).length, 0, "recovery was not slow enough")
            yield* Scope.close(consumerScope, Exit.void)
            // The link goes before this recovery has finished.
            const lostAt = log.events.length
            yield* proxy.dropAll()
            yield* log.next("Disconnected", lostAt, 30_000)
            assert.strictEqual(log.all("Recovered", disconnected.index).length, 0, "the recovery finished first")
            yield* proxy.clearFaults
            yield* log.next("Recovered", lostAt, 30_000)

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
  }
)
