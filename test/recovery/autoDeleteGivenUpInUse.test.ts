/**
 * Auto-delete queues the application gave up during a recovery are deleted one by one, if
 * unused: one that another connection consumes stays (the broker refuses with 406), and the
 * given-up queues after it are still deleted.
 */
import { AmqpChannel, AmqpClient, AmqpConnection, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Schedule, Scope, Stream } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"

const spaced = (millis: number) => Schedule.spaced(millis).pipe(Schedule.setInputType<AmqpConnectionError>())

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })(
  "given-up auto-delete queues",
  (it) => {
    it.effect(
      "a given-up queue another connection consumes does not keep the next given-up queue from being deleted",
      () =>
        Support.probed(({ node, proxy }) =>
          Effect.gen(function*() {
            const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "given-up-inuse"), {
              reconnect: spaced(200),
              linkTimeout: 20_000
            })
            const log = yield* Support.eventLog(client)
            for (let i = 0; i < 5; i++) {
              const other = yield* client.channel()
              yield* other.qos(5)
            }
            const channel = yield* client.channel()
            const id = randomUUID().slice(0, 8)
            const shared = `given-up-shared-${id}` // declared first: its deletion is tried first
            const mine = `given-up-mine-${id}`
            yield* channel.queueDeclare(shared, { autoDelete: true })
            yield* channel.queueDeclare(mine, { autoDelete: true })
            yield* Effect.addFinalizer(() => Effect.ignore(node.deleteQueue(shared)))
            yield* Effect.addFinalizer(() => Effect.ignore(node.deleteQueue(mine)))

            // Another connection consumes `shared` for the whole test.
            const observer = yield* AmqpConnection.fromUrl(node.url, { connectionName: `given-up-observer-${id}` })
            const observerChannel = yield* AmqpChannel.make(observer)
            yield* Effect.forkScoped(Stream.runDrain(observerChannel.consume(shared, { noAck: true })))

            const consumerScope = yield* Scope.make()
            yield* Scope.provide(Support.consumeInto(channel, shared), consumerScope)
            const inbox = yield* Scope.provide(Support.consumeInto(channel, mine), consumerScope)
            yield* Support.roundTrip(channel, inbox, mine, "", mine, "warm")

            const queues = Effect.map(node.listQueues(), (qs) => new Set(qs.map((q) => q.name)))
            yield* proxy.setLatency(250)
            yield* proxy.dropAll()
            const disconnected = yield* log.next("Disconnected")
            let seen = false
            for (let i = 0; i < 200 && !seen; i++) {
              const connected = log.all("Connected", disconnected.index).length > 0
              seen = connected && (yield* queues).has(mine)
              if (!seen) yield* Support.realDelay(50)
            }
            assert.isTrue(seen, "recovery never declared the queue again")
            assert.strictEqual(log.all("Recovered", disconnected.index).length, 0, "recovery was not slow enough")
            yield* Scope.close(consumerScope, Exit.void)
            yield* log.next("Recovered", disconnected.index, 30_000)
            yield* proxy.clearFaults

            let after = yield* queues
            for (let i = 0; i < 20 && after.has(mine); i++) {
              yield* Support.realDelay(250)
              after = yield* queues
            }
            assert.deepStrictEqual(
              { shared: after.has(shared), mine: after.has(mine) },
              { shared: true, mine: false },
              "only the queue nobody consumes goes"
            )
          })
        ),
      { timeout: 90_000 }
    )
  }
)
