/**
 * RabbitMQ deletes an auto-delete exchange as soon as the last binding from it goes (unbound, or
 * its queue deleted). An `AmqpClient` forgets such an exchange then, so that recovery does not
 * declare it again.
 */
import { AmqpChannel, AmqpChannelError, AmqpClient, AmqpConnection } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"

/** A passive declare of `exchange` on a fresh channel: the 404 when it is missing. */
const lookUp = (connection: AmqpConnection.AmqpConnection, exchange: string) =>
  Effect.gen(function*() {
    const channel = yield* AmqpChannel.make(connection)
    return yield* Effect.exit(channel.exchangeDeclare(exchange, "fanout", { passive: true }))
  })

const expectMissing = (exit: unknown, exchange: string) => {
  const error = exit as { _tag: string; cause: { reasons: ReadonlyArray<{ error?: unknown }> } }
  assert.strictEqual(error._tag, "Failure", `exchange ${exchange} exists`)
  const failure = error.cause.reasons[0]?.error
  assert.instanceOf(failure, AmqpChannelError)
  assert.strictEqual((failure as AmqpChannelError).replyCode, 404)
  assert.strictEqual((failure as AmqpChannelError).method, "exchange.declare")
}

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("AmqpClient auto-delete exchanges", (it) => {
  for (const how of ["queueUnbind", "exchangeUnbind", "queueDelete"] as const) {
    it.effect(`does not bring back an auto-delete exchange the broker deleted after ${how}`, () =>
      Support.probed(({ node, proxy }) =>
        Effect.gen(function*() {
          const options = yield* Support.options(proxy.port, `ad-${how}`)
          const client = yield* AmqpClient.make(options, { reconnect: Schedule.spaced("200 millis") })
          const log = yield* Support.eventLog(client)
          const channel = yield* client.channel()
          const id = randomUUID().slice(0, 8)
          const exchange = `ad-${id}`
          const queue = `ad-q-${id}`
          const target = `ad-x-${id}`
          yield* channel.exchangeDeclare(exchange, "fanout", { autoDelete: true })
          yield* channel.queueDeclare(queue)
          yield* channel.exchangeDeclare(target, "fanout")
          if (how === "exchangeUnbind") yield* channel.exchangeBind(target, exchange, "")
          else yield* channel.queueBind(queue, exchange, "")
          if (how === "queueUnbind") yield* channel.queueUnbind(queue, exchange, "")
          if (how === "exchangeUnbind") yield* channel.exchangeUnbind(target, exchange, "")
          if (how === "queueDelete") assert.strictEqual(yield* channel.queueDelete(queue), 0)

          const observer = yield* AmqpConnection.fromUrl(node.url, { connectionName: `observer-${id}` })
          // The broker deleted it with its last binding.
          expectMissing(yield* lookUp(observer, exchange), exchange)

          yield* proxy.reset()
          const disconnected = yield* log.next("Disconnected", 0, 30_000)
          yield* log.next("Recovered", disconnected.index, 30_000)
          assert.deepStrictEqual(log.all("RecoveryStepFailed"), [])

          const after = yield* lookUp(observer, exchange)
          // Clean up before asserting, so that a failure leaves nothing behind on the node.
          const cleanup = yield* AmqpChannel.make(observer)
          yield* cleanup.exchangeDelete(exchange)
          yield* cleanup.exchangeDelete(target)
          yield* cleanup.queueDelete(queue)
          expectMissing(after, exchange)
        })
      ))
  }
})
