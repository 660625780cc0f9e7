/**
 * An AmqpClient channel in tx mode ends with its link. A consumer on such a
 * channel, a tx channel that never published, and a txSelect interrupted after it was sent (the
 * broker's channel is in tx mode, the handle does not know). A private node behind a fault proxy.
 */
import { AmqpClient, AmqpClosedError, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Schedule } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"

const spaced = (millis: number) => Schedule.spaced(millis).pipe(Schedule.setInputType<AmqpConnectionError>())

const failureOf = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.map(Effect.exit(effect), (exit) => Exit.isSuccess(exit) ? "ok" : Cause.squash(exit.cause))

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("AmqpClient channels in tx mode", (it) => {
  it.effect("a consumer on a tx channel ends with the link, and its unacked delivery is back in the queue", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "txm-txc"), { reconnect: spaced(200) })
        const log = yield* Support.eventLog(client)
        const admin = yield* client.channel()
        const queue = `txm-txc-${randomUUID()}`
        yield* admin.queueDeclare(queue)
        const channel = yield* client.channel()
        yield* channel.txSelect
        const inbox = yield* Support.consumeInto(channel, queue)
        yield* admin.publish("", queue, Buffer.from("one"))
        const d = yield* Support.takeDelivery(inbox, "one")
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        yield* log.next("Recovered", disconnected.index)
        const expected = new AmqpClosedError({ what: "channel", cause: disconnected.event.cause })
        const got = {
          closed: yield* channel.closed,
          take: yield* failureOf(Support.takeDelivery(inbox, "after", 2_000)),
          ack: yield* failureOf(d.ack()),
          ready: (yield* admin.queueDeclare(queue, { passive: true })).messageCount
        }
        assert.deepStrictEqual({ ...got, ack: (got.ack as { _tag?: string })._tag }, {
          closed: expected,
          take: expected,
          ack: "AmqpStaleDelivery",
          ready: 1
        })
        yield* admin.queueDelete(queue)
      })
    ))

  it.effect("a tx channel that never published ends with the link too", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "txm-txn"), { reconnect: spaced(200) })
        const log = yield* Support.eventLog(client)
        const other = yield* client.channel()
        const channel = yield* client.channel()
        yield* channel.txSelect
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        yield* log.next("Recovered", disconnected.index)
        const expected = new AmqpClosedError({ what: "channel", cause: disconnected.event.cause })
        assert.deepStrictEqual(yield* channel.closed, expected)
        assert.isTrue(yield* other.isOpen)
      })
    ))

  it.effect("a txSelect interrupted after it was sent: the channel is in tx mode, so it ends with the link", () =>
    Support.probed(({ proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "txm-txi"), { reconnect: spaced(200) })
        const log = yield* Support.eventLog(client)
        const admin = yield* client.channel()
        const queue = `txm-txi-${randomUUID()}`
        yield* admin.queueDeclare(queue)
        const channel = yield* client.channel()
        yield* proxy.pause("serverToClient")
        const select = yield* Effect.forkChild(channel.txSelect, { startImmediately: true })
        yield* Support.realDelay(200)
        yield* Fiber.interrupt(select)
        yield* proxy.resume("serverToClient")
        // The broker took the tx.select: a publish waits for a commit, and the commit works.
        yield* channel.publish("", queue, Buffer.from("held"))
        const heldBeforeCommit = (yield* admin.queueDeclare(queue, { passive: true })).messageCount
        yield* channel.txCommit
        const afterCommit = (yield* admin.queueDeclare(queue, { passive: true })).messageCount
        yield* proxy.dropAll()
        const disconnected = yield* log.next("Disconnected")
        yield* log.next("Recovered", disconnected.index)
        const expected = new AmqpClosedError({ what: "channel", cause: disconnected.event.cause })
        const publishAfter = yield* failureOf(channel.publish("", queue, Buffer.from("after")))
        const ready = (yield* admin.queueDeclare(queue, { passive: true })).messageCount
        assert.deepStrictEqual({ heldBeforeCommit, afterCommit, publishAfter, ready }, {
          heldBeforeCommit: 0,
          afterCommit: 1,
          publishAfter: expected,
          ready: 1
        })
        yield* admin.queueDelete(queue)
      })
    ))
})
