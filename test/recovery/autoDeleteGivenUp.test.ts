/**
 * Auto-delete queues the application gives up while a recovery runs: after the recorded topology
 * declared the queue again on the new link, before its consumer started there. The broker deletes
 * such a queue only when a consumer of it goes, so the client deletes it (if unused) as the
 * consumer ends, one queue at a time, and on the next link when this one is lost first: nothing
 * the application gave up stays on the broker, and a queue another connection consumes, or that
 * another party declared instead (the recovery's declare refused), stays.
 */
import { AmqpChannel, AmqpClient, AmqpConnection, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit, Schedule, Scope, Stream } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"

const spaced = (millis: number) => Schedule.spaced(millis).pipe(Schedule.setInputType<AmqpConnectionError>())

/**
 * A client whose recovery is slow: five channels to open again before the one returned, on a
 * link that will have 250 ms of latency.
 */
const slowlyRecovering = (env: Support.Probed, name: string) =>
  Effect.gen(function*() {
    const client = yield* AmqpClient.make(yield* Support.options(env.proxy.port, name), {
      reconnect: spaced(200),
      linkTimeout: 30_000
    })
    const log = yield* Support.eventLog(client)
    for (let i = 0; i < 5; i++) {
      const other = yield* client.channel()
      yield* other.qos(5)
    }
    return { log, channel: yield* client.channel() }
  })

/** The queue names on the node. */
const queuesOn = (node: BrokerNode.BrokerNode) => Effect.map(node.listQueues(), (qs) => new Set(qs.map((q) => q.name)))

/**
 * Drops the link and waits until the recovery has declared `queue` again, before it has finished.
 * Returns the index of the `Disconnected` event.
 */
const lostUntilRedeclared = (env: Support.Probed, log: Support.EventLog, queue: string) =>
  Effect.gen(function*() {
    yield* env.proxy.setLatency(250)
    yield* env.proxy.dropAll()
    const disconnected = yield* log.next("Disconnected")
    let seen = false
    for (let i = 0; i < 200 && !seen; i++) {
      const connected = log.all("Connected", disconnected.index).length > 0
      seen = connected && (yield* queuesOn(env.node)).has(queue)
      if (!seen) yield* Support.realDelay(50)
    }
    assert.isTrue(seen, "recovery never declared the queue again")
    assert.strictEqual(log.all("Recovered", disconnected.index).length, 0, "recovery was not slow enough")
    return disconnected.index
  })

/** The queue names on the node once `queue` has gone, or after 5 s. */
const afterGone = (node: BrokerNode.BrokerNode, queue: string) =>
  Effect.gen(function*() {
    let names = yield* queuesOn(node)
    for (let i = 0; i < 20 && names.has(queue); i++) {
      yield* Support.realDelay(250)
      names = yield* queuesOn(node)
    }
    return names
  })

/** An auto-delete queue with a consumer of `channel` in a scope of its own, that round trips once. */
const consumed = (env: Support.Probed, channel: AmqpClient.ClientChannel, queue: string) =>
  Effect.gen(function*() {
    yield* channel.queueDeclare(queue, { autoDelete: true })
    yield* Effect.addFinalizer(() => Effect.ignore(env.node.deleteQueue(queue)))
    const consumerScope = yield* Scope.make()
    const inbox = yield* Scope.provide(Support.consumeInto(channel, queue), consumerScope)
    yield* Support.roundTrip(channel, inbox, queue, "", queue, "warm")
    return consumerScope
  })

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("given-up auto-delete queues", (it) => {
  it.effect(
    "a consumer ended between the queue's re-declaration and its own restart leaves no queue behind",
    () =>
      Support.probed((env) =>
        Effect.gen(function*() {
          const { channel, log } = yield* slowlyRecovering(env, "given-up")
          const queue = `given-up-${randomUUID()}`
          const consumerScope = yield* consumed(env, channel, queue)

          const disconnected = yield* lostUntilRedeclared(env, log, queue)
          yield* Scope.close(consumerScope, Exit.void)
          yield* log.next("Recovered", disconnected, 30_000)
          yield* env.proxy.clearFaults

          assert.isFalse((yield* afterGone(env.node, queue)).has(queue), "the queue given up is still on the broker")
        })
      ),
    { timeout: 90_000 }
  )

  it.effect(
    "one another connection consumes stays, and does not keep the next from being deleted",
    () =>
      Support.probed((env) =>
        Effect.gen(function*() {
          const { channel, log } = yield* slowlyRecovering(env, "given-up-in-use")
          const id = randomUUID().slice(0, 8)
          // Declared first: its deletion is tried first.
          const shared = `given-up-shared-${id}`
          const mine = `given-up-mine-${id}`
          const sharedScope = yield* consumed(env, channel, shared)
          const consumerScope = yield* consumed(env, channel, mine)
          const observer = yield* AmqpConnection.fromUrl(env.node.url, { connectionName: `given-up-observer-${id}` })
          const observerChannel = yield* AmqpChannel.make(observer)
          yield* Effect.forkScoped(Stream.runDrain(observerChannel.consume(shared, { noAck: true })))
          // Both consumers there before the drop, or the broker deletes `shared` itself with ours.
          let consumers = 0
          for (let i = 0; i < 100 && consumers < 2; i++) {
            consumers = (yield* env.node.listQueues()).find((q) => q.name === shared)?.consumers ?? 0
            if (consumers < 2) yield* Support.realDelay(50)
          }
          assert.strictEqual(consumers, 2)

          const disconnected = yield* lostUntilRedeclared(env, log, mine)
          yield* Scope.close(sharedScope, Exit.void)
          yield* Scope.close(consumerScope, Exit.void)
          yield* log.next("Recovered", disconnected, 30_000)
          yield* env.proxy.clearFaults

          const after = yield* afterGone(env.node, mine)
          assert.deepStrictEqual({ shared: after.has(shared), mine: after.has(mine) }, { shared: true, mine: false })
        })
      ),
    { timeout: 90_000 }
  )

  it.effect(
    "one whose link is lost before its deletion is deleted on the next link",
    () =>
      Support.probed((env) =>
        Effect.gen(function*() {
          const { channel, log } = yield* slowlyRecovering(env, "given-up-lost")
          const queue = `given-up-lost-${randomUUID()}`
          const consumerScope = yield* consumed(env, channel, queue)

          const disconnected = yield* lostUntilRedeclared(env, log, queue)
          yield* Scope.close(consumerScope, Exit.void)
          // The link goes before this recovery has finished.
          const lostAt = log.events.length
          yield* env.proxy.dropAll()
          yield* log.next("Disconnected", lostAt, 30_000)
          assert.strictEqual(log.all("Recovered", disconnected).length, 0, "the recovery finished first")
          yield* env.proxy.clearFaults
          yield* log.next("Recovered", lostAt, 30_000)

          assert.isFalse((yield* afterGone(env.node, queue)).has(queue), "the queue given up is still on the broker")
        })
      ),
    { timeout: 90_000 }
  )
  it.effect(
    "one whose re-declaration the broker refused (another party's queue now) is not deleted",
    () =>
      Support.probed((env) =>
        Effect.gen(function*() {
          const { channel, log } = yield* slowlyRecovering(env, "given-up-foreign")
          const queue = `given-up-foreign-${randomUUID()}`
          const consumerScope = yield* consumed(env, channel, queue)

          // The link goes, the broker deletes the auto-delete queue with its consumer, and another
          // party declares a durable queue of that name, with a message in it.
          yield* env.proxy.refuseNew("reset")
          yield* env.proxy.dropAll()
          const disconnected = yield* log.next("Disconnected")
          for (let i = 0; i < 100 && (yield* queuesOn(env.node)).has(queue); i++) yield* Support.realDelay(100)
          const operator = yield* AmqpConnection.fromUrl(env.node.url, { connectionName: `given-up-operator-${queue}` })
          const side = yield* AmqpChannel.make(operator)
          yield* side.queueDeclare(queue, { durable: true, autoDelete: false })
          yield* side.publish("", queue, Buffer.from("theirs"))
          yield* side.queueDeclare(queue, { passive: true })

          // A slow recovery, whose declare of the queue is refused (406, other arguments).
          yield* env.proxy.setLatency(250)
          yield* env.proxy.acceptNew
          const failed = yield* log.next("RecoveryStepFailed", disconnected.index, 30_000)
          assert.strictEqual(failed.event.step, `queue ${queue}`)
          assert.strictEqual(log.all("Recovered", disconnected.index).length, 0, "recovery was not slow enough")
          yield* Scope.close(consumerScope, Exit.void)
          yield* log.next("Recovered", disconnected.index, 30_000)
          yield* env.proxy.clearFaults
          yield* Support.realDelay(1_500)

          const theirs = (yield* env.node.listQueues()).find((q) => q.name === queue)
          assert.deepStrictEqual(
            theirs === undefined ? undefined : { messages: theirs.messages, durable: theirs.durable },
            { messages: 1, durable: true }
          )
        })
      ),
    { timeout: 90_000 }
  )
})
