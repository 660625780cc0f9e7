/**
 * A client that gives up: every failed attempt is reported, and what waits on its channels (an
 * operation, a consumer stream, `closed`) ends with the cause. While the link is down, an
 * operation waits `linkTimeout` once, and a consumer stream waiting to start can be interrupted at
 * once. A broker that drops every link as it is made is retried at the policy's pace, not in a
 * tight loop; a vhost at its connection limit is waited out. A private node for the file behind a
 * fault proxy; real clock.
 */
import { AmqpClient, AmqpClosedError, AmqpConnection, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Queue, Schedule, Scope, Stream } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"

const upTo = (times: number) =>
  Schedule.spaced("100 millis").pipe(Schedule.upTo({ times }), Schedule.setInputType<AmqpConnectionError>())

/** How `effect` ended, if it did within 3 s. */
const within = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.map(Effect.timeoutOption(Effect.exit(effect), "3 seconds"), Option.getOrUndefined)

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("AmqpClient giving up", (it) => {
  it.effect("reports every failed attempt in order, and GaveUp with the last one's error", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "attempts"), { reconnect: upTo(2) })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        const gaveUp = yield* log.next("GaveUp", disconnected.index)
        const failed = log.all("AttemptFailed", disconnected.index)
        const connecting = log.all("Connecting", disconnected.index)
        assert.deepStrictEqual(failed.map((e) => [e.port, e.attempt]), connecting.map((e) => [e.port, e.attempt]))
        assert.deepStrictEqual(failed.map((e) => e.attempt), [2, 3, 4])
        assert.deepStrictEqual(failed.map((e) => e.error.reason._tag), [
          "ConnectFailed",
          "ConnectFailed",
          "ConnectFailed"
        ])
        assert.strictEqual(failed[2]!.error, gaveUp.event.cause)
        const declare = yield* Effect.flip(channel.queueDeclare("", { exclusive: true }))
        assert.deepStrictEqual(declare, new AmqpClosedError({ what: "channel", cause: gaveUp.event.cause }))
        yield* proxy.acceptNew
      })
    ))

  it.effect("once it gives up, a waiting operation, a consumer stream and channel.closed end with the cause", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "gave-up-waiting"), {
          reconnect: upTo(2),
          linkTimeout: 20_000
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const queue = (yield* channel.queueDeclare("", { exclusive: true })).queue
        const inbox = yield* Support.consumeInto(channel, queue)
        // The consumer is running on the broker before the link goes.
        yield* Support.roundTrip(channel, inbox, queue, "", queue, "before")
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        // Made while the link is down: it waits for the next link, which never comes.
        const pending = yield* Effect.forkScoped(Effect.flip(channel.queueDeclare(queue, { passive: true })))
        const gaveUp = yield* log.next("GaveUp", disconnected.index)
        const expected = new AmqpClosedError({ what: "channel", cause: gaveUp.event.cause })
        const ended = {
          pendingOperation: yield* within(Fiber.join(pending)),
          consumerStream: yield* within(Effect.flip(Queue.take(inbox))),
          channelClosed: yield* within(channel.closed),
          isOpen: yield* channel.isOpen
        }
        assert.deepStrictEqual(ended, {
          pendingOperation: Exit.succeed(expected),
          consumerStream: Exit.succeed(expected),
          channelClosed: Exit.succeed(expected),
          isOpen: false
        })
        yield* proxy.acceptNew
      })
    ))

  it.effect("an operation made while the link is down fails after linkTimeout, not four times it", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "link-timeout"), {
          reconnect: Schedule.spaced("200 millis").pipe(Schedule.setInputType<AmqpConnectionError>()),
          linkTimeout: 1_000
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        yield* log.next("Disconnected")
        const started = Date.now()
        const error = yield* Effect.flip(channel.queueDeclare("", { exclusive: true }))
        const elapsed = Date.now() - started
        assert.instanceOf(error, AmqpClosedError)
        const reason = error.cause?._tag === "AmqpConnectionError" ? error.cause.reason._tag : undefined
        assert.deepStrictEqual([error.what, reason], ["connection", "ConnectFailed"])
        assert.isBelow(elapsed, 2_000)
        yield* proxy.acceptNew
      })
    ))

  it.effect("a consumer stream that is waiting for the link to start can be interrupted at once", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "interrupt-waiting"), {
          reconnect: Schedule.spaced("200 millis").pipe(Schedule.setInputType<AmqpConnectionError>()),
          linkTimeout: 10_000
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const queue = (yield* channel.queueDeclare("", { exclusive: true })).queue
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll()
        yield* log.next("Disconnected")
        const consumer = yield* Effect.forkScoped(Stream.runDrain(channel.consume(queue)), { startImmediately: true })
        yield* Effect.sleep(200)
        const started = Date.now()
        yield* Fiber.interrupt(consumer)
        const elapsed = Date.now() - started
        assert.isBelow(elapsed, 1_000)
        yield* proxy.acceptNew
        yield* log.next("Recovered")
      })
    ))

  it.effect("a broker that drops every new link right after the handshake is retried at the policy's pace", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const spacing = 400
        const reconnect = Schedule.spaced(spacing).pipe(
          Schedule.upTo({ times: 3 }),
          Schedule.setInputType<AmqpConnectionError>()
        )
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "flapping"), { reconnect })
        const log = yield* Support.eventLog(client)
        yield* client.channel()
        // From now on each new connection gets its handshake's replies, then a FIN.
        const handshake = (yield* proxy.stats).connections[0]!.forwarded.serverToClient
        yield* proxy.closeAfter(handshake, "serverToClient", "fin")
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        const began = Date.now()
        const gaveUp = yield* log.next("GaveUp", disconnected.index, 10_000)
        const took = Date.now() - began
        yield* proxy.closeAfter(undefined, "serverToClient")

        // The first reconnect is at once; each link lost as it went live counts as a failed attempt,
        // and the policy spaces its three retries, then gives up.
        assert.strictEqual(log.all("Connecting", disconnected.index).length, 4)
        assert.strictEqual(log.all("Connected", disconnected.index).length, 4)
        assert.strictEqual(log.all("Disconnected", disconnected.index).length, 5)
        assert.strictEqual(gaveUp.event.cause.reason._tag, "TransportClosed")
        assert.isAtLeast(took, 3 * spacing - 50)
      })
    ))

  it.effect("a vhost at its connection limit is retried by the default policy until a slot frees up", () =>
    Support.probed(({ node, proxy }) =>
      Effect.gen(function*() {
        const vhost = `limited-${randomUUID().slice(0, 8)}`
        yield* node.rabbitmqctl(["add_vhost", vhost])
        yield* node.rabbitmqctl(["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"])
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "limited", { vhost }))
        const log = yield* Support.eventLog(client)
        // Another connection takes the only slot while this client's link is down.
        yield* node.rabbitmqctl(["set_vhost_limits", "-p", vhost, "{\"max-connections\": 1}"])
        yield* proxy.refuseNew("reset")
        yield* proxy.dropAll()
        yield* log.next("Disconnected")
        const other = yield* Scope.make()
        yield* Scope.provide(AmqpConnection.make(yield* Support.options(node.amqpPort, "other", { vhost })), other)
        const accepting = log.events.length
        yield* proxy.acceptNew

        const refused = yield* log.next("AttemptFailed", accepting)
        const error = refused.event.error
        assert.strictEqual(error.reason._tag, "ServerClosed")
        assert.include(error.reason._tag === "ServerClosed" ? error.reason : {}, {
          replyCode: 530,
          duringHandshake: true
        })
        assert.include(error.message, "limit (1) is reached")
        assert.isFalse(error.isPermanent)

        yield* Scope.close(other, Exit.void)
        yield* log.next("Recovered", refused.index, 10_000)
        assert.strictEqual(log.all("GaveUp").length, 0)
        yield* node.rabbitmqctl(["delete_vhost", vhost])
      })
    ))
})
