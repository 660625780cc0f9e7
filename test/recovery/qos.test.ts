/**
 * RabbitMQ keeps two prefetch limits per channel: `basic.qos` with `global: false` limits each
 * consumer started after it, with `global: true` the channel as a whole. An `AmqpClient` channel
 * restores both after a reconnect, and each consumer's own (the one in force when it started), and
 * with them a qos or confirm mode whose caller stopped waiting after it went out. A consumer that
 * takes nothing more holds about one prefetch however often its link is lost: what it was delivered
 * on a lost link is dropped as that channel ends (the broker requeues it and delivers it again).
 */
import { AmqpChannel, AmqpClient, AmqpConnection } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Schedule, Stream } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"
import { poll } from "../support/channelKit.ts"
import { liveArrayBufferBytes, MiB } from "../support/Memory.ts"

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("AmqpClient qos", (it) => {
  it.effect("restores both the per-consumer and the channel-wide prefetch after a reconnect", () =>
    Support.probed(({ node, proxy }) =>
      Effect.gen(function*() {
        const options = yield* Support.options(proxy.port, "qos-both")
        const client = yield* AmqpClient.make(options, { reconnect: Schedule.spaced("200 millis") })
        const log = yield* Support.eventLog(client)
        const id = randomUUID().slice(0, 8)
        const queue = `qos-${id}`
        const observer = yield* AmqpConnection.fromUrl(node.url, { connectionName: `observer-${id}` })
        const publisher = yield* AmqpChannel.make(observer)
        yield* publisher.confirmSelect
        yield* publisher.queueDeclare(queue)
        for (let i = 0; i < 10; i++) yield* publisher.publish("", queue, Buffer.from(`m${i}`))

        const channel = yield* client.channel()
        yield* channel.qos(2) // each consumer: 2
        yield* channel.qos(100, { global: true }) // the whole channel: 100
        // Deliveries are taken and never acknowledged: the consumer holds what its prefetch allows.
        const inbox = yield* Support.consumeInto(channel, queue)
        const ready = Effect.map(publisher.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount)
        const settle = Effect.andThen(Effect.sleep(500), ready)
        assert.strictEqual(yield* poll(ready, (n) => n === 8), 8)
        assert.strictEqual(yield* settle, 8, "before the reconnect the consumer holds 2")

        yield* proxy.reset()
        const disconnected = yield* log.next("Disconnected", 0, 30_000)
        yield* log.next("Recovered", disconnected.index, 30_000)
        // The 2 it held come back to the queue with the link; the consumer takes 2 again.
        const after = yield* Effect.andThen(Effect.sleep(1_000), ready)
        yield* publisher.queueDelete(queue)
        void inbox
        assert.strictEqual(after, 8, "after the reconnect the consumer holds 2, not 10")
      })
    ))

  it.effect("restores each consumer's own prefetch (the qos in force when it started) after a reconnect", () =>
    Support.probed(({ node, proxy }) =>
      Effect.gen(function*() {
        const options = yield* Support.options(proxy.port, "qos-each")
        const client = yield* AmqpClient.make(options, { reconnect: Schedule.spaced("200 millis") })
        const log = yield* Support.eventLog(client)
        const id = randomUUID().slice(0, 8)
        const small = `qos-small-${id}`
        const large = `qos-large-${id}`
        const observer = yield* AmqpConnection.fromUrl(node.url, { connectionName: `observer-${id}` })
        const publisher = yield* AmqpChannel.make(observer)
        yield* publisher.confirmSelect
        for (const queue of [small, large]) {
          yield* publisher.queueDeclare(queue)
          for (let i = 0; i < 10; i++) yield* publisher.publish("", queue, Buffer.from(`m${i}`))
        }
        const ready = (queue: string) =>
          Effect.map(publisher.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount)

        const channel = yield* client.channel()
        yield* channel.qos(2)
        yield* Support.consumeInto(channel, small) // holds at most 2
        assert.strictEqual(yield* poll(ready(small), (n) => n === 8), 8)
        yield* channel.qos(5)
        yield* Support.consumeInto(channel, large) // holds at most 5
        assert.strictEqual(yield* poll(ready(large), (n) => n === 5), 5)
        assert.strictEqual(yield* Effect.andThen(Effect.sleep(500), ready(small)), 8)

        yield* proxy.reset()
        const disconnected = yield* log.next("Disconnected", 0, 30_000)
        yield* log.next("Recovered", disconnected.index, 30_000)
        yield* Effect.sleep(1_000)
        const after = { small: yield* ready(small), large: yield* ready(large) }
        yield* publisher.queueDelete(small)
        yield* publisher.queueDelete(large)
        assert.deepStrictEqual(after, { small: 8, large: 5 })
      })
    ))

  it.effect("restores a qos and a confirm mode whose callers gave up after they went out", () =>
    Support.probed(({ node, proxy }) =>
      Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "qos-given-up"), {
          reconnect: Schedule.spaced("200 millis")
        })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        const settings = Effect.map(node.listChannels, (all) =>
          all.map((c) => ({ confirm: c.confirm, prefetch: c.prefetchCount })))
        // Each reply comes 300 ms late, and each caller gives up after 50.
        yield* proxy.setLatency(300, "serverToClient")
        yield* Effect.exit(channel.qos(7).pipe(Effect.timeout("50 millis")))
        // The select would wait behind the qos reply still owed: it goes out once that has come.
        yield* Support.realDelay(500)
        yield* Effect.exit(channel.confirmSelect.pipe(Effect.timeout("50 millis")))
        yield* Support.realDelay(600)
        yield* proxy.setLatency(0, "serverToClient")
        assert.deepStrictEqual(yield* settings, [{ confirm: true, prefetch: 7 }], "the broker applied both")

        yield* proxy.reset()
        const disconnected = yield* log.next("Disconnected", 0, 30_000)
        yield* log.next("Recovered", disconnected.index, 30_000)
        assert.deepStrictEqual(
          yield* poll(settings, (s) =>
            s.length === 1),
          [{ confirm: true, prefetch: 7 }]
        )
      })
    ))

  it.effect("a consumer that takes nothing more holds one prefetch of bodies, not one per link lost", () =>
    Support.probed(({ node, proxy }) =>
      Effect.gen(function*() {
        const prefetch = 4
        const bodySize = 2 * MiB
        const options = yield* Support.options(proxy.port, "qos-stale")
        const client = yield* AmqpClient.make(options, { reconnect: Schedule.spaced("100 millis") })
        const log = yield* Support.eventLog(client)
        const queue = `qos-stale-${randomUUID().slice(0, 8)}`
        const observer = yield* AmqpConnection.fromUrl(node.url, { connectionName: `observer-${queue}` })
        const publisher = yield* AmqpChannel.make(observer)
        yield* publisher.confirmSelect
        yield* publisher.queueDeclare(queue)
        for (let i = 0; i < 2 * prefetch; i++) yield* publisher.publish("", queue, new Uint8Array(bodySize).fill(i))

        const channel = yield* client.channel()
        yield* channel.qos(prefetch)
        // The handler takes the first delivery and never returns: the stream pulls nothing more.
        let taken = 0
        yield* Effect.forkScoped(
          channel.consume(queue).pipe(Stream.runForEach(() => Effect.andThen(Effect.sync(() => taken++), Effect.never)))
        )
        const ready = Effect.map(publisher.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount)
        yield* poll(ready, (n) => n === prefetch)
        const before = yield* Effect.promise(liveArrayBufferBytes)

        for (let loss = 0; loss < 5; loss++) {
          const from = log.events.length
          yield* proxy.reset()
          const disconnected = yield* log.next("Disconnected", from, 20_000)
          yield* log.next("Recovered", disconnected.index, 20_000)
          // The broker requeued the prefetch the lost link held, and delivers it again.
          yield* Support.realDelay(300)
          yield* poll(ready, (n) => n === prefetch)
        }
        const grown = (yield* Effect.promise(liveArrayBufferBytes)) - before
        yield* publisher.queueDelete(queue)
        assert.strictEqual(taken, 1)
        // Five lost links each left a prefetch (8 MiB) of stale bodies behind before.
        assert.isBelow(grown / MiB, 1.5 * prefetch * bodySize / MiB, `the buffers grew by ${grown / MiB} MiB`)
      })
    ))
})
