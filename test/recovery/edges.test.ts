/**
 * AmqpClient at its edges: settled tags across reconnects with tag offsets, a publish with a retry
 * schedule across an outage longer than linkTimeout, a client closed during a recovery or while
 * operations wait, a consumer ended while recovery's basic.consume is in flight, an operation the
 * broker closes the connection for (it is not sent again on the next link, which would take the
 * client's other channels down each time), a channel a channel error closed (it stays closed, and
 * operations on it fail as on a plain channel). A private node for the file behind a fault proxy;
 * real clock.
 */
import {
  type AmqpChannel,
  AmqpChannelError,
  AmqpClient,
  AmqpClosedError,
  AmqpConnectionError,
  ServerClosed
} from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Option, Queue, Schedule, Scope, Stream } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"
import { outcomeTag } from "../support/Outcome.ts"

const spaced = (millis: number) => Schedule.spaced(millis).pipe(Schedule.setInputType<AmqpConnectionError>())

const within = <A, E>(effect: Effect.Effect<A, E>, millis = 3_000) =>
  Effect.map(Effect.timeoutOption(Effect.exit(effect), millis), Option.getOrUndefined)

const take = (inbox: Queue.Queue<AmqpChannel.Delivery, unknown>) => Support.takeDelivery(inbox, "edge")

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("AmqpClient at its edges", (it) => {
  it.effect("settlements across a reconnect: offsets, nack with requeue, a no-ack consumer on the same channel", () =>
    Support.probed(({ node, proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "edge-settle"), {
          reconnect: spaced(200)
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const queue = `edge-settle-${randomUUID()}`
        const side = `${queue}-noack`
        yield* channel.queueDeclare(queue)
        yield* channel.queueDeclare(side)
        for (const body of ["m0", "m1", "m2"]) yield* channel.publish("", queue, Buffer.from(body))
        const manual = yield* Support.consumeInto(channel, queue)
        const auto = yield* Support.consumeInto(channel, side, { noAck: true })
        const [d1, d2, d3] = [yield* take(manual), yield* take(manual), yield* take(manual)]
        assert.deepStrictEqual([d1, d2, d3].map((d) => [d.deliveryTag, Support.text(d.body)]), [
          [1, "m0"],
          [2, "m1"],
          [3, "m2"]
        ])
        yield* channel.publish("", side, Buffer.from("n0"))
        const n0 = yield* take(auto)
        assert.strictEqual(n0.deliveryTag, 4)
        yield* d1.ack()
        yield* d2.nack({ requeue: true })
        const d2again = yield* take(manual)
        assert.deepStrictEqual([d2again.deliveryTag, Support.text(d2again.body)], [5, "m1"])
        const before = {
          rawNoAck: yield* outcomeTag(channel.ack(4)),
          d1Twice: yield* outcomeTag(d1.ack())
        }
        // Unacked on the broker: m2 (3) and m1 (5). The link goes.
        yield* channel.queueDeclare(queue, { passive: true })
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        yield* log.next("Recovered", disconnected.index)
        const r1 = yield* take(manual)
        const r2 = yield* take(manual)
        const redelivered = [r1, r2].map((d) => [d.deliveryTag, Support.text(d.body), d.redelivered]).toSorted()
        assert.deepStrictEqual(redelivered, [[6, "m1", true], [7, "m2", true]].toSorted())
        yield* channel.publish("", side, Buffer.from("n1"))
        const n1 = yield* take(auto)
        assert.strictEqual(n1.deliveryTag, 8)
        yield* channel.publish("", queue, Buffer.from("m3"))
        // The consumer may take m3 before get sees it: consume it then.
        const d9 = yield* take(manual)
        assert.deepStrictEqual([d9.deliveryTag, Support.text(d9.body)], [9, "m3"])
        const after = {
          oldTag: yield* outcomeTag(channel.ack(3)),
          oldDelivery: yield* outcomeTag(d2again.ack()),
          rawNoAck: yield* outcomeTag(channel.ack(8)),
          ackFirst: yield* outcomeTag(r1.ack()),
          all: yield* outcomeTag(channel.ack(0, true)),
          firstTwice: yield* outcomeTag(r1.ack()),
          lastAfterAll: yield* outcomeTag(d9.reject()),
          neverDelivered: yield* outcomeTag(channel.ack(10)),
          open: yield* outcomeTag(channel.queueDeclare(queue, { passive: true }))
        }
        assert.deepStrictEqual({ before, after }, {
          before: { rawNoAck: "AmqpUnknownDeliveryTag(settled)", d1Twice: "AmqpUnknownDeliveryTag(settled)" },
          after: {
            oldTag: "AmqpStaleDelivery",
            oldDelivery: "AmqpStaleDelivery",
            rawNoAck: "AmqpUnknownDeliveryTag(settled)",
            ackFirst: "ok",
            all: "ok",
            firstTwice: "AmqpUnknownDeliveryTag(settled)",
            lastAfterAll: "AmqpUnknownDeliveryTag(settled)",
            neverDelivered: "AmqpUnknownDeliveryTag(never-delivered)",
            open: "ok"
          }
        })
        const channels = (yield* node.listChannels).filter((c) => c.consumerCount === 2)
        assert.deepStrictEqual(channels.map((c) => c.messagesUnacknowledged), [0])
        assert.strictEqual(yield* channel.queueDelete(queue), 0)
        assert.strictEqual(yield* channel.queueDelete(side), 0)
      })
    ))

  it.effect("a publish with a retry schedule rides out an outage longer than linkTimeout", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "edge-retry"), {
          reconnect: spaced(200),
          linkTimeout: 500
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        yield* channel.confirmSelect
        const queue = `edge-retry-${randomUUID()}`
        yield* channel.queueDeclare(queue)
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        yield* log.next("Disconnected")
        const started = Date.now()
        const publish = yield* Effect.forkScoped(
          Effect.exit(channel.publish("", queue, Buffer.from("x"), {
            retry: Schedule.spaced("200 millis").pipe(Schedule.upTo({ times: 50 }))
          })).pipe(Effect.map((exit) => ({ exit, millis: Date.now() - started }))),
          { startImmediately: true }
        )
        yield* Support.realDelay(2_000)
        yield* proxy.acceptNew
        yield* log.next("Recovered")
        const joined = yield* within(Fiber.join(publish), 10_000)
        const inner = joined !== undefined && Exit.isSuccess(joined) ? joined.value : undefined
        const summary = inner === undefined
          ? "hung"
          : Exit.isSuccess(inner.exit)
          ? "ok"
          : `failed after ${inner.millis < 1_000 ? "< 1 s" : ">= 1 s"}: ${String(Cause.squash(inner.exit.cause))}`
        assert.strictEqual(summary, "ok")
        assert.strictEqual(yield* channel.queueDelete(queue), 1)
      })
    ))

  it.effect("a client closed while it recovers (after Connected, before Recovered) leaves no link behind", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const client = yield* Scope.provide(
          AmqpClient.make(yield* Support.options(proxy.port, "edge-close-recovering"), { reconnect: spaced(200) }),
          scope
        )
        const log = yield* Scope.provide(Support.eventLog(client), scope)
        const channel = yield* Scope.provide(client.channel(), scope)
        const queue = `edge-close-recovering-${randomUUID()}`
        yield* channel.queueDeclare(queue, { autoDelete: true })
        yield* channel.qos(5)
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        // Recovery re-declares the queue and re-opens the channel: slow it down.
        yield* proxy.setLatency(400, "clientToServer")
        yield* log.next("Connected", disconnected.index)
        yield* Support.realDelay(200)
        const recovered = log.all("Recovered", disconnected.index).length
        const closing = Date.now()
        yield* Scope.close(scope, Exit.void)
        const closeMillis = Date.now() - closing
        yield* proxy.setLatency(0, "clientToServer")
        assert.deepStrictEqual({ recovered, closedQuickly: closeMillis < 5_000 }, { recovered: 0, closedQuickly: true })
      })
    ))

  it.effect("a client closed while an operation and a retrying publish wait: both end at once", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const client = yield* Scope.provide(
          AmqpClient.make(yield* Support.options(proxy.port, "edge-close-waiting"), {
            reconnect: spaced(200),
            linkTimeout: 20_000
          }),
          scope
        )
        const log = yield* Scope.provide(Support.eventLog(client), scope)
        const channel = yield* Scope.provide(client.channel(), scope)
        yield* channel.confirmSelect
        const queue = `edge-close-waiting-${randomUUID()}`
        yield* channel.queueDeclare(queue, { autoDelete: true })
        const inbox = yield* Support.consumeInto(channel, queue)
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        yield* log.next("Disconnected")
        const op = yield* Effect.forkScoped(Effect.flip(channel.queueDeclare(queue, { passive: true })), {
          startImmediately: true
        })
        const pub = yield* Effect.forkScoped(
          Effect.flip(channel.publish("", queue, Buffer.from("x"), { retry: Schedule.spaced("100 millis") })),
          { startImmediately: true }
        )
        yield* Support.realDelay(300)
        yield* Scope.close(scope, Exit.void)
        const expected = new AmqpClosedError({ what: "channel", cause: undefined })
        const ended = {
          op: yield* within(Fiber.join(op)),
          pub: yield* within(Fiber.join(pub)),
          stream: yield* within(Effect.flip(Queue.take(inbox)))
        }
        yield* proxy.acceptNew
        assert.deepStrictEqual(ended.op, Exit.succeed(expected))
        assert.deepStrictEqual(ended.pub, Exit.succeed(expected))
        assert.isTrue(ended.stream !== undefined)
      })
    ))

  it.effect("a consumer ended while recovery's basic.consume is in flight leaves no consumer on the broker", () =>
    Support.probed(({ node, proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "edge-end-in-flight"), {
          reconnect: spaced(200)
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const queue = `edge-end-in-flight-${randomUUID()}`
        yield* channel.queueDeclare(queue)
        const consumer = yield* Effect.forkScoped(Stream.runDrain(channel.consume(queue)), { startImmediately: true })
        yield* channel.publish("", queue, Buffer.from("warm"))
        const consumersOf = Effect.map(node.listQueues(), (qs) => qs.filter((q) => q.name === queue))
        const waitFor = (consumers: number) =>
          Effect.gen(function*() {
            for (let i = 0; i < 60; i++) {
              const listed = yield* consumersOf
              if (listed.length === 1 && listed[0]!.consumers === consumers) return listed[0]!
              yield* Support.realDelay(100)
            }
            return (yield* consumersOf)[0]
          })
        assert.strictEqual((yield* waitFor(1))?.consumers, 1)
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        yield* proxy.setLatency(300, "clientToServer")
        yield* log.next("Connected", disconnected.index)
        // channel.open reaches the broker after 300 ms; basic.consume leaves then, arrives at 600.
        yield* Support.realDelay(450)
        yield* Fiber.interrupt(consumer)
        yield* log.next("Recovered", disconnected.index)
        yield* proxy.setLatency(0, "clientToServer")
        yield* Support.realDelay(1_500)
        const left = yield* waitFor(0)
        assert.deepStrictEqual([left?.consumers, left?.messages], [0, 1])
        assert.strictEqual(yield* channel.queueDelete(queue), 1)
      })
    ))

  it.effect("an operation the broker closes the connection for fails once, with one reconnect", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "edge-refused"), {
          reconnect: spaced(100)
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const other = yield* client.channel()
        const exchange = `edge-refused-${randomUUID().slice(0, 8)}`
        // An unknown exchange type: RabbitMQ closes the whole connection with 503.
        const refused = yield* channel.exchangeDeclare(exchange, "fanot").pipe(Effect.flip)
        yield* log.next("Recovered", 0, 10_000)
        yield* Effect.sleep(500)
        const declared = yield* other.queueDeclare("", { exclusive: true })

        assert.instanceOf(refused, AmqpConnectionError)
        const reason = (refused as AmqpConnectionError).reason
        assert.instanceOf(reason, ServerClosed)
        assert.deepInclude(reason, { replyCode: 503, method: "exchange.declare" })
        assert.strictEqual(log.all("Disconnected").length, 1)
        assert.isTrue(declared.queue.startsWith("amq.gen-"))
      })
    ))

  it.effect("a channel closed by a channel error stays closed; operations on it fail as on a plain channel", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "edge-closed"), {
          reconnect: spaced(100)
        })
        const channel = yield* client.channel()
        const other = yield* client.channel()
        const missing = `edge-missing-${randomUUID().slice(0, 8)}`
        const caused = yield* channel.queueDeclare(missing, { passive: true }).pipe(Effect.flip)
        const after = yield* channel.queueDeclare("", { exclusive: true }).pipe(Effect.flip)
        const why = yield* channel.closed

        assert.instanceOf(caused, AmqpChannelError)
        assert.deepInclude(caused, { replyCode: 404, method: "queue.declare" })
        assert.deepStrictEqual(after, new AmqpClosedError({ what: "channel", cause: caused as AmqpChannelError }))
        assert.strictEqual(why, caused)
        assert.isFalse(yield* channel.isOpen)
        assert.isTrue((yield* other.queueDeclare("", { exclusive: true })).queue.startsWith("amq.gen-"))
      })
    ))
})
