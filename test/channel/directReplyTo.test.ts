/**
 * RabbitMQ's direct reply-to: a requester consumes the pseudo-queue `amq.rabbitmq.reply-to`
 * (no-ack) and publishes requests naming it as `replyTo` on the same channel; the broker rewrites
 * that to a name routed straight back to this channel. Every reply arrives once, matched by its
 * correlation id; a request naming it on a channel that does not consume it is refused with a
 * typed channel error, and the connection carries on.
 */
import { AmqpChannel, AmqpChannelError, AmqpPublishError, Unconfirmed } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import { onSharedBroker, poll, randomBytes, sha256, unique } from "../support/channelKit.ts"

const DIRECT = "amq.rabbitmq.reply-to"

describe("direct reply-to", () => {
  it.live("delivers each reply to the requesting channel, matched by correlation id", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const server = yield* AmqpChannel.make(connection)
        const queue = unique("q-rpc")
        yield* server.queueDeclare(queue)
        // The server answers each request with the SHA-256 of its body, to whatever `replyTo` says.
        yield* Effect.forkScoped(server.consumeWith(queue, (request) =>
          Effect.andThen(
            server.publish("", request.properties.replyTo!, Buffer.from(sha256(request.body)), {
              properties: { correlationId: request.properties.correlationId! }
            }),
            request.ack()
          )))

        const requester = yield* AmqpChannel.make(connection)
        const total = 50
        const replies = yield* requester.consume(DIRECT, { noAck: true }).pipe(
          Stream.take(total),
          Stream.runCollect,
          // Started at once, the consumer's basic.consume is written before any request, so the
          // broker has it when the first request names the pseudo-queue.
          (collect) => Effect.forkScoped(collect, { startImmediately: true })
        )
        const requests = Array.from({ length: total }, (_, i) => ({ id: `call-${i}`, body: randomBytes(1 + i * 97) }))
        for (const { body, id } of requests) {
          yield* requester.publish("", queue, body, { properties: { replyTo: DIRECT, correlationId: id } })
        }
        const received = yield* Fiber.join(replies).pipe(Effect.timeout("10 seconds"))

        const byId = new Map(received.map((reply) => [reply.properties.correlationId, reply]))
        assert.strictEqual(byId.size, total)
        for (const { body, id } of requests) {
          const reply = byId.get(id)
          assert.isDefined(reply, id)
          assert.strictEqual(Buffer.from(reply!.body).toString(), sha256(body))
          // Routed through the default exchange to the name the broker gave the requester.
          assert.strictEqual(reply!.exchange, "")
          assert.match(reply!.routingKey, /^amq\.rabbitmq\.reply-to\.\S+$/)
        }
        const left = yield* poll(server.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount === 0)
        assert.strictEqual(left.messageCount, 0)
        assert.strictEqual(yield* server.queueDelete(queue), 0)
      })
    ))

  it.live("a request naming it from a channel that does not consume it fails the channel with 406", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const admin = yield* AmqpChannel.make(connection)
        const queue = unique("q-rpc-refused")
        yield* admin.queueDeclare(queue)
        const requester = yield* AmqpChannel.make(connection)
        yield* requester.confirmSelect
        const error = yield* Effect.flip(
          requester.publish("", queue, Buffer.from("no reply consumer"), {
            properties: { replyTo: DIRECT, correlationId: "lost" }
          })
        )
        // Confirmed publishing: the publish ends unconfirmed, with the channel's error as why.
        assert.instanceOf(error, AmqpPublishError)
        const reason = (error as AmqpPublishError).reason
        assert.instanceOf(reason, Unconfirmed)
        assert.isTrue((reason as Unconfirmed).sent)
        const closed = yield* requester.closed
        assert.strictEqual((reason as Unconfirmed).cause, closed)
        assert.instanceOf(closed, AmqpChannelError)
        assert.strictEqual((closed as AmqpChannelError).replyCode, 406)
        assert.isTrue(yield* admin.isOpen)
        assert.strictEqual(yield* admin.queueDelete(queue), 0)
      })
    ))
})
