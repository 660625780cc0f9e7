/**
 * What recovery brings back when the broker changed during the outage: a consumer whose queue was
 * deleted ends alone with the broker's 404 while the channel and its other consumers go on; a
 * channel the application closes while recovery opens it again does not stay open; an
 * auto-delete queue the broker deleted when the client's last consumer of it ended stays deleted;
 * a server-named queue that outlives the link keeps its name instead of being left behind for a
 * new one; what the broker did for an operation whose caller stopped waiting (a delete, an unbind,
 * an exclusive queue's declare, a consumer start that deleted its auto-delete queue when it was
 * cancelled) is what recovery keeps. A private node for the file behind a fault
 * proxy; real clock.
 */
import { AmqpChannel, AmqpChannelError, AmqpClient, AmqpConnection, AmqpConsumerTagInUse } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope, Stream } from "effect"
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

const privateNode = layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })

privateNode("recovery after the broker changed", (it) => {
  it.effect("a consumer whose queue was deleted meanwhile ends with 404; the channel's other consumers go on", () =>
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
        // Started before and after it: the broker's close of the channel for it ends neither.
        const fromKeptBefore = yield* Support.consumeInto(channel, kept)
        const fromDeleted = yield* Support.consumeInto(channel, deleted)
        const fromKeptAfter = yield* Support.consumeInto(channel, kept)
        yield* Support.roundTrip(channel, fromDeleted, deleted, "", deleted, "before")

        yield* outage(env, log, side.queueDelete(deleted))

        const ended = yield* Effect.exit(Support.takeDelivery(fromDeleted, "the deleted queue's consumer"))
        const error = Exit.isFailure(ended) ? Exit.findErrorOption(ended) : undefined
        assert.isTrue(error?._tag === "Some" && error.value instanceof AmqpChannelError, String(ended))
        assert.strictEqual((error as { value: AmqpChannelError }).value.replyCode, 404)
        assert.isTrue(yield* channel.isOpen)
        // Two consumers of one queue take turns: one message each.
        yield* channel.publish("", kept, Buffer.from("one"))
        yield* channel.publish("", kept, Buffer.from("two"))
        const got = [
          yield* Support.takeDelivery(fromKeptBefore, "the first consumer of the kept queue"),
          yield* Support.takeDelivery(fromKeptAfter, "the last consumer of the kept queue")
        ]
        assert.sameMembers(got.map((d) => Support.text(d.body)), ["one", "two"])
        yield* side.queueDelete(kept)
      })
    ))

  it.effect("a channel the application closes while recovery opens it again is closed on the broker too", () =>
    Support.probed((env) =>
      Effect.gen(function*() {
        const options = yield* Support.options(env.proxy.port, "closed-while-opening")
        const handle = yield* Scope.make()
        let links = 0
        const client = yield* AmqpClient.make(options, {
          onEvent: (event) => {
            // On the second link, recovery's channel.open waits 400 ms for its open-ok: the
            // application closes the channel 150 ms in.
            if (event._tag === "Connected" && ++links === 2) {
              setTimeout(() => Effect.runFork(Scope.close(handle, Exit.void)), 150)
            }
          }
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* Scope.provide(client.channel(), handle)
        yield* env.proxy.refuseNew("reset")
        yield* env.proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        yield* env.proxy.setLatency(400, "serverToClient")
        yield* env.proxy.acceptNew
        yield* log.next("Recovered", disconnected.index)
        yield* env.proxy.setLatency(0, "serverToClient")
        assert.isFalse(yield* channel.isOpen)

        const open = Effect.map(
          env.node.listConnections,
          (all) => all.find((c) => c.clientProvidedName === options.connectionName)?.channels
        )
        let channels = yield* open
        for (let i = 0; i < 40 && channels !== 0; i++) {
          yield* Support.realDelay(50)
          channels = yield* open
        }
        assert.strictEqual(channels, 0, "channels left open on the client's connection")
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

  it.effect("a consume refused before it reached the broker leaves its auto-delete queue recorded", () =>
    Support.probed((env) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(env.proxy.port, "refused-consume"))
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const other = `recovery-other-${randomUUID()}`
        const queue = `recovery-auto-delete-${randomUUID()}`
        yield* channel.queueDeclare(other)
        yield* channel.queueDeclare(queue, { autoDelete: true })
        const fromOther = yield* Support.consumeInto(channel, other, { consumerTag: "taken" })
        yield* Support.roundTrip(channel, fromOther, other, "", other, "the tag is taken")
        const refused = yield* Effect.flip(Stream.runDrain(channel.consume(queue, { consumerTag: "taken" })))
        assert.instanceOf(refused, AmqpConsumerTagInUse)

        // The queue's one real consumer goes with the link, and so does the queue: it is declared again.
        const inbox = yield* Support.consumeInto(channel, queue, { consumerTag: "fine" })
        yield* outage(env, log, Effect.void)
        assert.deepStrictEqual(log.all("RecoveryStepFailed"), [])
        yield* Support.roundTrip(channel, inbox, queue, "", queue, "after")
        yield* channel.queueDelete(other)
      })
    ))

  it.effect("a consume with a tag in use, started during an outage, fails as it does with the link up", () =>
    Support.probed((env) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(env.proxy.port, "tag-in-outage"))
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const queue = `recovery-tag-in-outage-${randomUUID()}`
        yield* channel.queueDeclare(queue)
        const inbox = yield* Support.consumeInto(channel, queue, { consumerTag: "same" })
        const second = Effect.flip(Stream.runDrain(channel.consume(queue, { consumerTag: "same" })))

        const started = yield* Effect.forkScoped(Effect.andThen(Support.realDelay(100), second))
        yield* outage(env, log, Support.realDelay(300))
        const refused = yield* Fiber.join(started).pipe(Effect.timeout("5 seconds"))
        assert.instanceOf(refused, AmqpConsumerTagInUse)
        yield* Support.roundTrip(channel, inbox, queue, "", queue, "the first goes on")
        yield* channel.queueDelete(queue)
      })
    ))

  it.effect("operations given up after they went out are recorded as the broker carried them out", () =>
    Support.probed((env) =>
      Effect.gen(function*() {
        const side = yield* operator(env.node)
        const id = randomUUID()
        const [deleted, exclusive, kept, exchange] = ["deleted", "exclusive", "kept", "exchange"].map((name) =>
          `recovery-given-up-${name}-${id}`
        ) as [string, string, string, string]
        const client = yield* AmqpClient.make(yield* Support.options(env.proxy.port, "given-up"))
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        yield* channel.queueDeclare(deleted)
        yield* channel.queueDeclare(kept)
        yield* channel.exchangeDeclare(exchange, "direct", { autoDelete: false })
        yield* channel.queueBind(kept, exchange, "k")
        // Each goes out as it starts and is given up at once; the broker carries it out all the same.
        const givenUp = (operation: Effect.Effect<unknown, unknown>) =>
          Effect.gen(function*() {
            yield* Fiber.interrupt(yield* Effect.forkChild(operation, { startImmediately: true }))
            // The channel's next method waits for the reply still owed: it has been routed by then.
            yield* channel.queueDeclare(kept, { passive: true })
          })
        yield* givenUp(channel.queueDelete(deleted))
        yield* givenUp(channel.queueDeclare(exclusive, { exclusive: true }))
        yield* givenUp(channel.queueUnbind(kept, exchange, "k"))

        yield* outage(env, log, Effect.void)

        const names = yield* queueNames(env.node)
        // Deleted stays deleted; the exclusive queue went with the old link and is declared again.
        assert.isFalse(names.includes(deleted))
        assert.isTrue(names.includes(exclusive))
        // The binding stays removed: a message to it reaches no queue.
        yield* side.publish(exchange, "k", Buffer.from("unrouted"))
        yield* Support.realDelay(100)
        assert.strictEqual((yield* side.queueDeclare(kept, { passive: true })).messageCount, 0)
        yield* channel.queueDelete(kept)
        yield* channel.queueDelete(exclusive)
        yield* channel.exchangeDelete(exchange)
      })
    ))

  it.effect("an auto-delete queue whose only consumer started after its start was given up is not declared again", () =>
    Support.probed((env) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(env.proxy.port, "start-given-up"))
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const queue = `recovery-start-given-up-${randomUUID()}`
        yield* channel.queueDeclare(queue, { autoDelete: true })
        // The consume-ok comes 400 ms late; the start is given up after 50.
        yield* env.proxy.setLatency(400, "serverToClient")
        const start = yield* Effect.exit(Stream.runDrain(channel.consume(queue)).pipe(Effect.timeout("50 millis")))
        assert.isTrue(Exit.isFailure(start))
        // The consume-ok arrives, the channel cancels the consumer, the broker deletes the queue.
        yield* Support.realDelay(800)
        yield* env.proxy.setLatency(0, "serverToClient")
        yield* channel.queueDeclare(`${queue}-probe`, { exclusive: true })
        assert.isFalse((yield* queueNames(env.node)).includes(queue))

        yield* outage(env, log, Effect.void)

        assert.isFalse((yield* queueNames(env.node)).includes(queue))
      })
    ))
})
