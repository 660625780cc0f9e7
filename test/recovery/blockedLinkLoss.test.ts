/**
 * A publish held back by `connection.blocked` when its link dies never left the client: it ends as
 * `Unconfirmed{sent: false}` on a connection, and a client sends it again once it has recovered on
 * the next link (private node: these tests set memory alarms).
 */
import {
  AmqpChannel,
  AmqpClient,
  AmqpConnection,
  AmqpPublishError,
  ConnectionConfig,
  Unconfirmed
} from "@effect-amqp/client"
import { BrokerNode, FaultProxy } from "@effect-amqp/testing"
import { assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Schedule } from "effect"
import * as Support from "../recovery/support.ts"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("blocked-link-loss")
let node: BrokerNode.BrokerNode

beforeAll(() => Effect.map(BrokerNode.start({}), (started) => void (node = started)), 90_000)

const utf8 = (s: string) => new Uint8Array(Buffer.from(s))

/** Polls until the connection reports blocked. */
const untilBlocked = (blocked: Effect.Effect<string | undefined>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 300; i++) {
      if ((yield* blocked) !== undefined) return
      yield* Effect.sleep(50)
    }
    return yield* Effect.die(new Error("the connection was never blocked"))
  })

describe("a publish held by connection.blocked when the link dies", () => {
  it.live("ends as Unconfirmed{sent: false} on a confirm channel and fails on a plain one", () =>
    leakChecked(
      Effect.gen(function*() {
        yield* Effect.addFinalizer(() => Effect.ignore(node.clearMemoryAlarm))
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: node.amqpPort } })
        const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${proxy.port}`, {
          connectionName: names.next("held"),
          closeTimeout: 500
        })
        const confirming = yield* AmqpChannel.make(connection)
        yield* confirming.confirmSelect
        const plain = yield* AmqpChannel.make(connection)
        const { queue } = yield* confirming.queueDeclare("", { exclusive: true })

        yield* node.setMemoryAlarm
        yield* plain.publish("", queue, utf8("trigger"))
        yield* untilBlocked(connection.blocked)
        const held = yield* Effect.forkChild(Effect.exit(confirming.publish("", queue, utf8("held"))), {
          startImmediately: true
        })
        const heldPlain = yield* Effect.forkChild(Effect.exit(plain.publish("", queue, utf8("held-plain"))), {
          startImmediately: true
        })
        yield* Effect.sleep(300)
        assert.isUndefined(held.pollUnsafe())
        yield* proxy.reset()
        const cause = yield* connection.closed
        assert.strictEqual(cause.reason._tag, "TransportClosed")
        assert.isUndefined(yield* connection.blocked, "a closed connection still reported blocked")

        // Neither left the client: they were waiting for connection.unblocked.
        assert.deepStrictEqual(
          yield* Fiber.join(held),
          Exit.fail(new AmqpPublishError({ reason: new Unconfirmed({ cause, sent: false }) }))
        )
        assert.isTrue(Exit.isFailure(yield* Fiber.join(heldPlain)), "a plain publish that was never sent succeeded")
        yield* node.clearMemoryAlarm
      }),
      names.own(node)
    ), 60_000)

  it.live("is sent again by an AmqpClient channel on the next link", () =>
    leakChecked(
      Effect.gen(function*() {
        yield* Effect.addFinalizer(() => Effect.ignore(node.clearMemoryAlarm))
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: node.amqpPort } })
        const options = yield* ConnectionConfig.make({
          host: "127.0.0.1",
          port: proxy.port,
          connectionName: names.next("client"),
          closeTimeout: 500
        })
        const client = yield* AmqpClient.make(options, { reconnect: Schedule.spaced("200 millis") })
        const log = yield* Support.eventLog(client)
        const channel = yield* client.channel()
        yield* channel.confirmSelect
        const plain = yield* client.channel()
        const queue = names.next("held-queue")
        yield* channel.queueDeclare(queue)
        yield* Effect.addFinalizer(() => Effect.ignore(node.deleteQueue(queue)))

        yield* node.setMemoryAlarm
        yield* plain.publish("", queue, utf8("trigger"))
        yield* log.next("Blocked")
        const held = yield* Effect.forkChild(Effect.exit(channel.publish("", queue, utf8("held"))), {
          startImmediately: true
        })
        yield* Effect.sleep(300)
        assert.isUndefined(held.pollUnsafe())
        yield* proxy.reset()
        // Recovery finishes under the alarm: the held publish waits for it, rather than going
        // first and making the broker stop reading before the channels are back.
        const recovered = yield* log.next("Recovered")
        yield* node.clearMemoryAlarm
        const blocked = yield* log.next("Blocked")
        const unblocked = yield* log.next("Unblocked", blocked.index)
        const disconnected = yield* log.next("Disconnected")
        assert.isTrue(unblocked.index < disconnected.index, "the lost link's block never ended")
        assert.isTrue(disconnected.index < recovered.index)

        // The held publish never left on the first link: the client publishes it on the second.
        assert.deepStrictEqual(yield* Fiber.join(held).pipe(Effect.timeout("15 seconds")), Exit.void)
        const bodies: Array<string> = []
        while (true) {
          const got = yield* channel.get(queue, { noAck: true })
          if (Option.isNone(got)) break
          bodies.push(Buffer.from(got.value.body).toString())
        }
        assert.deepStrictEqual(bodies.filter((b) => b === "held"), ["held"])
        yield* channel.queueDelete(queue)
      }),
      names.own(node)
    ), 60_000)
})
