/**
 * Every way a link can die ends in recovery: the client reports `Disconnected` with the typed
 * cause, then `Recovered`, and the channel handle it gave out before carries a publish and the
 * consumer it had before gets the message. Each test ends with the leak probe, broker included.
 *
 * Then the same under churn: a publisher with confirms and a consumer with manual acks keep working
 * while the fault proxy drops the link again and again (resets and FINs in turn). Every publish
 * ends confirmed or with a typed error, every confirmed message reaches the consumer at least once,
 * nothing stays in the queue, and after every reconnect the process holds exactly one link: one
 * client socket (plus the proxy's two), one heartbeat fiber, one recovery fiber.
 *
 * One private node for the file; the restart and kill -9 tests stop it, which is why it is not
 * the run's shared node, and the broker-side leak probe counts only this file's clients. The
 * block runs without test services: the clock is the real one.
 */
import { type AmqpChannel, AmqpClient, type AmqpConnectionError } from "@effect-amqp/client"
import { BrokerNode, FaultProxy } from "@effect-amqp/testing"
import { LeakProbe } from "@effect-amqp/testing"
import { assert, describe, layer } from "@effect/vitest"
import { Effect, Exit, Fiber, Schedule, Stream } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "./support.ts"

interface Env {
  readonly node: BrokerNode.BrokerNode
  readonly proxy: FaultProxy.FaultProxy
  readonly connectionName: string
}

interface Scenario {
  readonly label: string
  /** Connect through the fault proxy instead of straight to the node. */
  readonly viaProxy: boolean
  readonly heartbeat?: number
  readonly trigger: (env: Env) => Effect.Effect<void, unknown>
  /** Runs once `Disconnected` was seen, e.g. to lift a fault so that the reconnect can work. */
  readonly afterDisconnect?: (env: Env) => Effect.Effect<void, unknown>
  readonly checkCause: (cause: AmqpConnectionError) => void
  /** How the test's consumer takes its deliveries; the stream by default. */
  readonly via?: "stream" | "handler"
}

/** Retries often enough that a node coming back is found at once. */
const reconnect = Schedule.spaced("200 millis")

const recoversFrom = (scenario: Scenario) =>
  Support.probed(({ node, proxy }) =>
    Effect.gen(function*() {
      const options = yield* Support.options(
        scenario.viaProxy ? proxy.port : node.amqpPort,
        scenario.label,
        scenario.heartbeat !== undefined ? { heartbeat: scenario.heartbeat } : {}
      )
      const env: Env = { node, proxy, connectionName: options.connectionName! }
      const client: AmqpClient.AmqpClient = yield* AmqpClient.make(options, { reconnect })
      const log = yield* Support.eventLog(client)
      const channel = yield* client.channel()
      const queue = `recovery-${scenario.label}-${randomUUID()}`
      yield* channel.queueDeclare(queue)
      const inbox = yield* Support.consumeInto(channel, queue, {}, scenario.via)
      yield* Support.roundTrip(channel, inbox, queue, "", queue, "before")

      yield* scenario.trigger(env)
      const disconnected = yield* log.next("Disconnected", 0, 30_000)
      scenario.checkCause(disconnected.event.cause)
      if (scenario.afterDisconnect !== undefined) yield* scenario.afterDisconnect(env)
      const connected = yield* log.next("Connected", disconnected.index, 30_000)
      const recovered = yield* log.next("Recovered", connected.index, 30_000)
      assert.isAtLeast(recovered.event.durationMillis, 0)

      yield* Support.roundTrip(channel, inbox, queue, "", queue, "after")
      assert.isTrue(yield* channel.isOpen)
      assert.strictEqual(log.all("Disconnected").length, 1)
      assert.strictEqual(log.all("Recovered").length, 1)
      assert.deepStrictEqual(log.all("RecoveryStepFailed"), [])
      const stats = yield* client.stats
      assert.strictEqual(stats.reconnects, 1)
      assert.isTrue(stats.connected)
    })
  )

const isTransportClosed = (...how: ReadonlyArray<"end" | "reset">) => (cause: AmqpConnectionError) => {
  assert.strictEqual(cause.reason._tag, "TransportClosed")
  if (cause.reason._tag === "TransportClosed") assert.include(how, cause.reason.how)
}

const cycles = 20

/**
 * Waits until the process holds one link and nothing more: one heartbeat and one recovery fiber
 * above `base`, the client's socket and the proxy's two sockets of its one open connection.
 */
const holdsOneLink = (base: LeakProbe.Snapshot, proxy: FaultProxy.FaultProxy, cycle: number) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 5_000
    while (true) {
      const now = yield* LeakProbe.snapshot()
      const stats = yield* proxy.stats
      const open = stats.connections.filter((c) => !c.closed).length
      const state = {
        heartbeat: (now.fibers["heartbeat"] ?? 0) - (base.fibers["heartbeat"] ?? 0),
        recovery: (now.fibers["recovery"] ?? 0) - (base.fibers["recovery"] ?? 0),
        sockets: (now.resources["TCPSocketWrap"] ?? 0) - (base.resources["TCPSocketWrap"] ?? 0),
        proxied: open
      }
      const expected = { heartbeat: 1, recovery: 1, sockets: 3, proxied: 1 }
      if (JSON.stringify(state) === JSON.stringify(expected)) return
      if (Date.now() > deadline) {
        assert.deepStrictEqual(state, expected, `after reconnect ${cycle}, the process holds more than one link`)
      }
      yield* Effect.sleep(20)
    }
  })

layer(BrokerNode.layer(), { timeout: 120_000, excludeTestServices: true })("AmqpClient on a failing link", (it) => {
  describe("recovers from", () => {
    it.effect("a reset of the link", () =>
      recoversFrom({
        label: "reset",
        viaProxy: true,
        trigger: ({ proxy }) => proxy.reset(),
        checkCause: isTransportClosed("reset")
      }))

    it.effect("a reset of the link, with a consumer that runs a handler (consumeWith)", () =>
      recoversFrom({
        label: "reset-handler",
        viaProxy: true,
        via: "handler",
        trigger: ({ proxy }) => proxy.reset(),
        checkCause: isTransportClosed("reset")
      }))

    it.effect("a link that goes silent, by a heartbeat timeout", () =>
      recoversFrom({
        label: "blackhole",
        viaProxy: true,
        heartbeat: 1,
        // New connections are reset while the old one is silent, so no reconnect lands in the hole.
        trigger: ({ proxy }) => Effect.andThen(proxy.refuseNew("reset"), proxy.setBlackhole(true)),
        afterDisconnect: ({ proxy }) =>
          Effect.gen(function*() {
            yield* proxy.setBlackhole(false)
            // The silent connection keeps its proxy sockets open; the proxy drops them.
            yield* proxy.reset(0)
            yield* proxy.acceptNew
          }),
        checkCause: (cause) => {
          assert.strictEqual(cause.reason._tag, "HeartbeatTimeout")
          if (cause.reason._tag === "HeartbeatTimeout") {
            assert.strictEqual(cause.reason.heartbeatSeconds, 1)
            assert.isAtLeast(cause.reason.silentMillis, 2_000)
          }
        }
      }))

    it.effect("a FIN from the server side only (half-close towards the client)", () =>
      recoversFrom({
        label: "half-close-to-client",
        viaProxy: true,
        trigger: ({ proxy }) => proxy.halfClose("serverToClient"),
        checkCause: isTransportClosed("end")
      }))

    it.effect("a FIN from the client side only (half-close towards the broker)", () =>
      recoversFrom({
        label: "half-close-to-broker",
        viaProxy: true,
        trigger: ({ proxy }) => proxy.halfClose("clientToServer"),
        // The broker answers the FIN by closing its socket, with a FIN or, with data unread, a reset.
        checkCause: isTransportClosed("end", "reset")
      }))

    it.effect("a connection closed by an operator (rabbitmqctl, 320)", () =>
      recoversFrom({
        label: "closed-by-operator",
        viaProxy: false,
        trigger: ({ connectionName, node }) =>
          Effect.gen(function*() {
            assert.strictEqual(yield* node.closeConnection(connectionName, "recovery test"), 1)
          }),
        checkCause: (cause) => {
          assert.strictEqual(cause.reason._tag, "ServerClosed")
          assert.strictEqual(cause.replyCode, 320)
          if (cause.reason._tag === "ServerClosed") assert.include(cause.reason.replyText, "recovery test")
        }
      }))

    it.effect("a broker restart", () =>
      recoversFrom({
        label: "restart",
        viaProxy: false,
        trigger: ({ node }) => node.restart,
        checkCause: (cause) => {
          // A stopping node says goodbye with 320 CONNECTION_FORCED.
          assert.strictEqual(cause.reason._tag, "ServerClosed")
          assert.strictEqual(cause.replyCode, 320)
        }
      }))

    it.effect("a broker killed with SIGKILL and started again", () =>
      recoversFrom({
        label: "kill9",
        viaProxy: false,
        trigger: ({ node }) => Effect.andThen(node.kill9, node.start),
        // The kernel closes a killed process's sockets: the client sees a FIN or a reset.
        checkCause: isTransportClosed("end", "reset")
      }))
  })

  describe("under a link that keeps dropping", () => {
    it.effect(
      `confirms only what the consumer gets, over ${cycles} drops of the link`,
      () =>
        Support.probed(({ before: base, node, proxy }) =>
          Effect.gen(function*() {
            const queue = `recovery-churn-${randomUUID()}`
            const published: Array<number> = []
            const confirmed = new Set<number>()
            const unconfirmed = new Set<number>()
            const otherPublishFailures: Array<string> = []
            const consumed = new Set<number>()
            const ackFailures: Record<string, number> = {}

            yield* Effect.scoped(Effect.gen(function*() {
              const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "churn", { heartbeat: 5 }))
              const log = yield* Support.eventLog(client)
              const publisher = yield* client.channel()
              yield* publisher.confirmSelect
              const consumer = yield* client.channel()
              yield* consumer.qos(200)
              yield* consumer.queueDeclare(queue)

              const receiving = yield* consumer.consume(queue).pipe(
                Stream.runForEach((delivery: AmqpChannel.Delivery) =>
                  Effect.gen(function*() {
                    consumed.add(Number(Support.text(delivery.body)))
                    const acked = yield* Effect.exit(delivery.ack())
                    if (Exit.isFailure(acked)) {
                      const tag = Exit.findErrorOption(acked)
                      const key = tag._tag === "Some" ? tag.value._tag : "defect"
                      ackFailures[key] = (ackFailures[key] ?? 0) + 1
                    }
                  })
                ),
                Effect.forkScoped
              )

              const publishing = { on: true }
              let next = 0
              const publishOne = (id: number) =>
                Effect.gen(function*() {
                  published.push(id)
                  const exit = yield* Effect.exit(
                    publisher.publish("", queue, Buffer.from(String(id)), { properties: { messageId: String(id) } })
                  )
                  if (Exit.isSuccess(exit)) {
                    confirmed.add(id)
                    return
                  }
                  const error = Exit.findErrorOption(exit)
                  if (
                    error._tag === "Some" && error.value._tag === "AmqpPublishError" &&
                    error.value.reason._tag === "Unconfirmed"
                  ) {
                    unconfirmed.add(id)
                  } else {
                    otherPublishFailures.push(
                      error._tag === "Some" ? `${id}: ${error.value._tag}: ${error.value.message}` : `${id}: defect`
                    )
                  }
                })
              const publisherFiber = yield* Effect.gen(function*() {
                while (publishing.on) {
                  const batch = Array.from({ length: 10 }, () => next++)
                  yield* Effect.forEach(batch, publishOne, { concurrency: "unbounded", discard: true })
                  yield* Effect.sleep(10)
                }
              }).pipe(Effect.forkScoped)

              for (let cycle = 1; cycle <= cycles; cycle++) {
                const from = log.events.length
                yield* Effect.sleep(500 + Math.floor(Math.random() * 500))
                yield* proxy.dropAll(cycle % 2 === 0 ? "fin" : "reset")
                const disconnected = yield* log.next("Disconnected", from)
                assert.strictEqual(disconnected.event.cause.reason._tag, "TransportClosed")
                yield* log.next("Recovered", disconnected.index)
                yield* holdsOneLink(base, proxy, cycle)
              }

              yield* Effect.sleep(300)
              publishing.on = false
              yield* Fiber.join(publisherFiber)
              assert.strictEqual(published.length, next)

              // Every publish ended, and in one way only.
              assert.strictEqual(confirmed.size + unconfirmed.size + otherPublishFailures.length, published.length)
              assert.deepStrictEqual(otherPublishFailures, [])
              assert.isAbove(confirmed.size, 0)

              // Every confirmed message reaches the consumer, redelivered where its ack was lost.
              const deadline = Date.now() + 15_000
              const missing = () => [...confirmed].filter((id) => !consumed.has(id))
              while (missing().length > 0 && Date.now() < deadline) yield* Effect.sleep(50)
              assert.deepStrictEqual(missing(), [], "confirmed but never consumed")

              // Nothing is left behind in the queue: ready or unacknowledged.
              let left = -1
              while (Date.now() < deadline + 5_000) {
                const info = (yield* node.listQueues()).find((q) => q.name === queue)
                left = info?.messages ?? -1
                if (left === 0) break
                yield* Effect.sleep(200)
              }
              assert.strictEqual(left, 0)

              assert.strictEqual(log.all("Disconnected").length, cycles)
              assert.strictEqual(log.all("Recovered").length, cycles)
              assert.deepStrictEqual(log.all("RecoveryStepFailed"), [])
              assert.strictEqual((yield* client.stats).reconnects, cycles)
              yield* Fiber.interrupt(receiving)
              yield* consumer.queueDelete(queue)
            }))

            // An ack that raced a drop is reported stale, never sent to the next channel.
            assert.deepStrictEqual(Object.keys(ackFailures).filter((tag) => tag !== "AmqpStaleDelivery"), [])
          })
        ),
      90_000
    )
  })
})
