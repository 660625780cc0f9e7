/**
 * What recovery brings back when the broker changed during the outage: a consumer whose queue was
 * deleted ends alone with the broker's 404 while the channel and its other consumers go on; an
 * auto-delete queue the broker deleted when the client's last consumer of it ended stays deleted;
 * a server-named queue that outlives the link keeps its name instead of being left behind for a
 * new one. A private node for the file behind a fault proxy; real clock.
 */
import { AmqpChannel, AmqpChannelError, AmqpClient, AmqpConnection } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "./support.ts"

/** A channel straight to the node, beside the client: an operator or another service. */
const operator = (node: BrokerNode.BrokerNode) =>
  Effect.flatMap(
    Effect.flatMap(Support.options(node.amqpPort, "operator"), AmqpConnection.make),
    (connection) => AmqpChannel.make(connection)
  )

/** Takes the link down, runs `meanwhile` while the client cannot get back in, then lets it recover. */
const outage = (env: Support.Probed, log: Support.EventLog, meanwhile: Effect.Effect<unknown, unknown>) =>
  Effect.gen(function*() {
    yield* env.proxy.refuseNew("reset")
    yield* env.proxy.dropAll()
    const disconnected = yield* log.next("Disconnected")
    yield* meanwhile
    yield* env.proxy.acceptNew
    yield* log.next("Recovered", disconnected.index)
  })

const queueNames = (node: BrokerNode.BrokerNode) => Effect.map(node.listQueues(), (all) => all.map((q) => q.name))

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })(
  "recovery after the broker changed",
  (it) => {
    it.effect("a consumer whose queue was deleted meanwhile ends with 404; its channel's other consumer goes on", () =>
      Support.probed((env) =>
        Effect.gen(function*() {
          const side = yield* operator(env.node)
          const deleted = `recovery-deleted-${randomUUID()}`
          const kept = `recovery-kept-${randomUUID()}`
          yield* side.queueDeclare(deleted)
          yield* side.queueDeclare(kept)
          const client = yield* AmqpClient.make(yield* Support.options(env.proxy.port, "deleted-queue"))
          const log = yield* Support.eventLog(client)
          const channel = yield* client.channel()
          const fromDeleted = yield* Support.consumeInto(channel, deleted)
          const fromKept = yield* Support.consumeInto(channel, kept)
          yield* Support.roundTrip(channel, fromDeleted, deleted, "", deleted, "before")

          yield* outage(env, log, side.queueDelete(deleted))

          const ended = yield* Effect.exit(Support.takeDelivery(fromDeleted, "the deleted queue's consumer"))
          const error = Exit.isFailure(ended) ? Exit.findErrorOption(ended) : undefined
          assert.isTrue(error?._tag === "Some" && error.value instanceof AmqpChannelError, String(ended))
          assert.strictEqual((error as { value: AmqpChannelError }).value.replyCode, 404)
          assert.isTrue(yield* channel.isOpen)
          yield* Support.roundTrip(channel, fromKept, kept, "", kept, "after")
          yield* side.queueDelete(kept)
        })
      ))

    it.effect("an auto-delete queue the broker deleted with its last consumer is not declared again", () =>
      Support.probed((env) =>
        Effect.gen(function*() {
          const client = yield* AmqpClient.make(yield* Support.options(env.proxy.port, "auto-delete"))
          const log = yield* Support.eventLog(client)
          const channel = yield* client.channel()
          const exchange = `recovery-auto-delete-x-${randomUUID()}`
          const queue = `recovery-auto-delete-q-${randomUUID()}`
          yield* channel.exchangeDeclare(exchange, "fanout", { autoDelete: false })
          yield* channel.queueDeclare(queue, { autoDelete: true })
          yield* channel.queueBind(queue, exchange, "")
          yield* Effect.scoped(Effect.gen(function*() {
            const inbox = yield* Support.consumeInto(channel, queue)
            yield* Support.roundTrip(channel, inbox, queue, exchange, "", "while consumed")
          }))
          for (let i = 0; i < 50 && (yield* queueNames(env.node)).includes(queue); i++) yield* Support.realDelay(100)
          assert.notInclude(yield* queueNames(env.node), queue, "the broker deleted the queue with its consumer")

          yield* outage(env, log, Effect.void)
          assert.notInclude(yield* queueNames(env.node), queue)
          yield* channel.exchangeDelete(exchange)
        })
      ))

    it.effect("a server-named queue that outlives the link keeps its name and binding across two outages", () =>
      Support.probed((env) =>
        Effect.gen(function*() {
          const client = yield* AmqpClient.make(yield* Support.options(env.proxy.port, "server-named"))
          const log = yield* Support.eventLog(client)
          const channel = yield* client.channel()
          const exchange = `recovery-server-named-x-${randomUUID()}`
          yield* channel.exchangeDeclare(exchange, "fanout", { autoDelete: false })
          const { queue } = yield* channel.queueDeclare("", { exclusive: false, autoDelete: false })
          yield* channel.queueBind(queue, exchange, "")

          yield* outage(env, log, Effect.void)
          yield* outage(env, log, Effect.void)

          const serverNamed = (yield* queueNames(env.node)).filter((name) => name.startsWith("amq.gen-"))
          assert.deepStrictEqual(serverNamed, [queue])
          assert.strictEqual(log.all("QueueRenamed").length, 0)
          const inbox = yield* Support.consumeInto(channel, queue)
          yield* Support.roundTrip(channel, inbox, queue, exchange, "", "through the exchange")
          yield* channel.queueDelete(queue)
          yield* channel.exchangeDelete(exchange)
        })
      ))
  }
)
