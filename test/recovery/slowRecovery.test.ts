/**
 * A slow recovery (latency on a private node's fault proxy, several channels to open again):
 * an acknowledgement by tag, from a handler of a consumer recovery has already restarted, goes at
 * once instead of waiting for the rest of the recovery; a `channel()` that gives up waiting for
 * the link leaves no channel open on the broker.
 */
import { AmqpChannel, AmqpClient, AmqpConnection, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Option, Queue, Schedule, Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"
import { outcomeTag } from "../support/Outcome.ts"

const spaced = (millis: number) => Schedule.spaced(millis).pipe(Schedule.setInputType<AmqpConnectionError>())

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("a slow recovery", (it) => {
  it.effect(
    "a consumeWith handler's channel.ack of a delivery on a recovered consumer succeeds while later channels recover",
    () =>
      Support.probed(({ node, proxy }) =>
        Effect.gen(function*() {
          const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "slow-ack"), {
            reconnect: spaced(200),
            linkTimeout: 1_500
          })
          const log = yield* Support.eventLog(client)
          const consuming = yield* client.channel()
          const queue = `slow-ack-${randomUUID()}`
          yield* consuming.queueDeclare(queue)
          yield* Effect.addFinalizer(() => Effect.ignore(node.deleteQueue(queue)))
          yield* consuming.qos(1)
          // Channels recovered after the consumer's: each costs an open and a qos round trip.
          for (let i = 0; i < 6; i++) {
            const other = yield* client.channel()
            yield* other.qos(5)
          }
          const acks = yield* Queue.unbounded<string>()
          const seen = yield* Queue.unbounded<string>()
          const ended = yield* Queue.unbounded<string>()
          yield* Effect.forkScoped(
            consuming.consumeWith(queue, (delivery: AmqpChannel.Delivery) =>
              Effect.gen(function*() {
                yield* Queue.offer(seen, Support.text(delivery.body))
                // By tag, as an application that keeps tags does: this is not a stale delivery.
                const outcome = yield* outcomeTag(consuming.ack(delivery.deliveryTag))
                yield* Queue.offer(acks, `${Support.text(delivery.body)}: ${outcome}`)
              })).pipe(
                Effect.exit,
                Effect.flatMap((exit) => Queue.offer(ended, Exit.isSuccess(exit) ? "ok" : String(exit.cause)))
              )
          )
          yield* consuming.publish("", queue, Buffer.from("before"))
          assert.strictEqual(yield* Queue.take(acks), "before: ok")
          // The broker has the ack once a later method on the channel is answered.
          yield* consuming.queueDeclare(queue, { passive: true })

          // The link goes; the next one is slow, so the recovery after the consumer's takes long.
          yield* proxy.setLatency(250)
          yield* proxy.dropAll()
          const disconnected = yield* log.next("Disconnected")
          // Published straight to the node while the link is down: the recovered consumer gets it
          // as soon as its basic.consume is back, long before the other channels are.
          yield* Effect.scoped(Effect.gen(function*() {
            const direct = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${node.amqpPort}`, {
              connectionName: `slow-direct-${randomUUID()}`
            })
            const channel = yield* AmqpChannel.make(direct)
            yield* channel.confirmSelect
            yield* channel.publish("", queue, Buffer.from("during"))
          }))
          yield* log.next("Recovered", disconnected.index, 30_000)
          yield* proxy.clearFaults
          const during = yield* Queue.take(acks).pipe(Effect.timeoutOption(10_000))
          assert.deepStrictEqual(Option.getOrUndefined(during), "during: ok")
          // The consumer goes on, and the message is not delivered again.
          yield* consuming.publish("", queue, Buffer.from("after"))
          const after = yield* Queue.take(acks).pipe(Effect.timeoutOption(10_000))
          assert.deepStrictEqual(Option.getOrUndefined(after), "after: ok")
          assert.deepStrictEqual(Option.getOrUndefined(yield* Queue.poll(ended)), undefined, "the consumer ended")
          yield* consuming.queueDelete(queue)
        })
      ),
    { timeout: 90_000 }
  )

  it.effect(
    "a channel() that gives up waiting during a slow recovery leaves no channel open on the broker",
    () =>
      Support.probed(({ node, proxy }) =>
        Effect.gen(function*() {
          const name = `slow-zombie-${randomUUID()}`
          const client = yield* AmqpClient.make(
            yield* Support.options(proxy.port, "slow-zombie", { connectionName: name }),
            { reconnect: spaced(200), linkTimeout: 1_000 }
          )
          const log = yield* Support.eventLog(client)
          for (let i = 0; i < 6; i++) {
            const channel = yield* client.channel()
            yield* channel.qos(5)
          }
          yield* proxy.setLatency(250)
          yield* proxy.dropAll()
          const disconnected = yield* log.next("Disconnected")
          yield* log.next("Connected", disconnected.index, 30_000)
          // Asked for while the recovery runs, and given up after linkTimeout: the caller has no
          // handle to close, so nothing may be left of it.
          // In the application's own, long-lived scope, as `yield* client.channel()` would be.
          const appScope = yield* Effect.scope
          const asked = yield* outcomeTag(Scope.provide(client.channel(), appScope))
          assert.strictEqual(asked, "AmqpClosedError")
          yield* log.next("Recovered", disconnected.index, 30_000)
          yield* proxy.clearFaults
          // The application holds six channels on the link, no more.
          let channels: number | undefined
          for (let i = 0; i < 20; i++) {
            const connections = yield* node.listConnections
            channels = connections.find((c) => c.clientProvidedName === name)?.channels
            if (channels !== undefined) break
            yield* Support.realDelay(250)
          }
          assert.strictEqual(channels, 6)
        })
      ),
    { timeout: 90_000 }
  )
})
