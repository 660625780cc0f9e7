/**
 * Soak of AmqpClient recovery on a private node behind a fault proxy: a confirm publisher with a
 * retry schedule, a consumeWith consumer (delivery.ack) on a durable queue, a stream consumer
 * (channel.ack(tag)) on an auto-delete queue, qos changes and short-lived channels/consumers
 * between cycles, over many reconnect cycles (plain drops, resets, slow recoveries, drops again
 * mid-recovery).
 */
import { type AmqpChannel, AmqpClient, type AmqpConnectionError, type AmqpPublishError } from "@effect-amqp/client"
import { BrokerNode, LiveFibers } from "@effect-amqp/testing"
import { assert, layer } from "@effect/vitest"
import { Effect, Fiber, Schedule, Stream } from "effect"
import { randomUUID } from "node:crypto"
import * as Support from "../recovery/support.ts"

const CYCLES = 18

/** Records a delivery's number with its redelivered flag. */
const record = (into: Map<number, Array<boolean>>, d: AmqpChannel.Delivery) => {
  const n = Number(Support.text(d.body))
  const list = into.get(n) ?? []
  list.push(d.redelivered)
  into.set(n, list)
}

const spaced = (millis: number) => Schedule.spaced(millis).pipe(Schedule.setInputType<AmqpConnectionError>())

layer(BrokerNode.layer(), { timeout: 300_000, excludeTestServices: true })("recovery soak", (it) => {
  it.effect(
    "soak: recovery cycles keep every confirmed message, no stray duplicates, no state left behind",
    () =>
      Support.probed(({ node, proxy }) =>
        Effect.gen(function*() {
          const started = Date.now()
          const name = `soak-soak-${randomUUID()}`
          const client = yield* AmqpClient.make(
            yield* Support.options(proxy.port, "soak", { connectionName: name }),
            { reconnect: spaced(100), linkTimeout: 5_000 }
          )
          const log = yield* Support.eventLog(client)
          const durable = `soak-durable-${randomUUID()}`
          const autoDel = `soak-autodel-${randomUUID()}`
          yield* Effect.addFinalizer(() =>
            Effect.ignore(node.deleteQueue(durable)).pipe(Effect.andThen(Effect.ignore(node.deleteQueue(autoDel))))
          )

          const pub = yield* client.channel()
          yield* pub.confirmSelect
          yield* pub.queueDeclare(durable, { durable: true })
          yield* pub.queueDeclare(autoDel, { autoDelete: true })

          // Received: number -> list of redelivered flags.
          const receivedD = new Map<number, Array<boolean>>()
          const receivedA = new Map<number, Array<boolean>>()
          const ackErrors: Array<string> = []

          // Consumer 1: consumeWith, delivery.ack.
          const chA = yield* client.channel()
          yield* chA.qos(10)
          yield* Effect.forkScoped(
            chA.consumeWith(durable, (d) =>
              Effect.suspend(() => {
                record(receivedD, d)
                return d.ack()
              }))
          )
          // Consumer 2: stream, channel.ack(deliveryTag).
          const chB = yield* client.channel()
          yield* chB.qos(5)
          yield* Effect.forkScoped(
            chB.consume(autoDel).pipe(
              Stream.runForEach((d) =>
                Effect.suspend(() => {
                  record(receivedA, d)
                  return chB.ack(d.deliveryTag).pipe(
                    Effect.catchTag("AmqpStaleDelivery", () => Effect.void),
                    Effect.catch((e) => Effect.sync(() => void ackErrors.push(String(e))))
                  )
                })
              )
            )
          )

          // Publisher: numbered messages, even to the durable queue, odd to the auto-delete one.
          const confirmed = new Set<number>()
          const failed = new Map<number, string>()
          const retried = new Set<number>()
          let next = 0
          const publishing = { running: true }
          const publisher = yield* Effect.forkScoped(
            Effect.gen(function*() {
              while (publishing.running) {
                const n = next++
                const queue = n % 2 === 0 ? durable : autoDel
                const retry = Schedule.spaced("100 millis").pipe(
                  Schedule.upTo({ times: 200 }),
                  Schedule.setInputType<AmqpPublishError | AmqpChannel.ChannelError>(),
                  Schedule.while(() => {
                    retried.add(n)
                    return true
                  })
                )
                const exit = yield* Effect.exit(pub.publish("", queue, Buffer.from(String(n)), { retry }))
                if (exit._tag === "Success") confirmed.add(n)
                else failed.set(n, String(exit.cause))
                yield* Support.realDelay(3)
              }
            })
          )

          const brokerChannels = (): Effect.Effect<number | undefined, unknown> =>
            Effect.map(node.listConnections, (cs) => cs.find((c) => c.clientProvidedName === name)?.channels)

          const perCycle: Array<{ cycle: number; channels: number | undefined; fibers: number; reconnects: number }> =
            []
          let cycleDropsMidRecovery = 0
          for (let cycle = 0; cycle < CYCLES; cycle++) {
            const from = log.events.length
            const kind = cycle % 4
            if (kind === 1 || kind === 3) yield* proxy.setLatency(kind === 1 ? 120 : 60)
            if (kind === 2) yield* proxy.reset()
            else yield* proxy.dropAll(cycle % 2 === 0 ? "fin" : "reset")
            const lost = yield* log.next("Disconnected", from, 20_000)
            if (kind === 3) {
              // Dropped again while the recovery goes on.
              const connected = yield* log.next("Connected", lost.index, 20_000)
              yield* Support.realDelay(40)
              yield* proxy.dropAll("reset")
              cycleDropsMidRecovery++
              void connected
            }
            yield* log.next("Recovered", lost.index, 40_000)
            yield* proxy.clearFaults

            // Application churn between cycles.
            yield* chA.qos(5 + (cycle % 7))
            yield* Effect.scoped(Effect.gen(function*() {
              const temp = yield* client.channel()
              yield* temp.qos(3)
              // A short-lived consumer of the durable queue that takes nothing (prefetch 0 is not
              // set; it nacks with requeue whatever it gets).
              const f = yield* Effect.forkScoped(
                temp.consumeWith(durable, (d) => d.nack({ requeue: true }))
              )
              yield* Support.realDelay(80)
              yield* Fiber.interrupt(f)
              yield* temp.queueDeclare(durable, { passive: true, durable: true })
            }))
            yield* Support.realDelay(150)
            const stats = yield* client.stats
            perCycle.push({
              cycle,
              channels: yield* brokerChannels(),
              fibers: LiveFibers.total(),
              reconnects: stats.reconnects
            })
          }

          publishing.running = false
          yield* Fiber.join(publisher)

          // Wait for every confirmed durable message.
          const deadline = Date.now() + 30_000
          const missing = () => [...confirmed].filter((n) => n % 2 === 0 && !receivedD.has(n))
          while (missing().length > 0 && Date.now() < deadline) yield* Support.realDelay(200)

          const durationMs = Date.now() - started
          const summary = {
            cycles: CYCLES,
            cycleDropsMidRecovery,
            published: next,
            confirmed: confirmed.size,
            failed: failed.size,
            retried: retried.size,
            receivedDurable: receivedD.size,
            receivedAutoDelete: receivedA.size,
            durationMs,
            perCycle,
            ackErrors: ackErrors.slice(0, 5),
            failures: [...failed.entries()].slice(0, 5)
          }
          console.log("SOAK", JSON.stringify(summary))

          // 1. Every confirmed durable message received.
          assert.deepStrictEqual(missing(), [])
          // 2. Nothing unconfirmed without an error: every number is confirmed or failed.
          for (let n = 0; n < next; n++) assert.isTrue(confirmed.has(n) || failed.has(n), `number ${n} not settled`)
          // 3. Duplicates only as flagged redeliveries, or republishes of a retried publish.
          const strayDup = (m: Map<number, Array<boolean>>) =>
            [...m.entries()].filter(([n, flags]) => flags.filter((r) => !r).length > 1 && !retried.has(n)).map(([n]) =>
              n
            )
          assert.deepStrictEqual(strayDup(receivedD), [], "stray duplicates on the durable queue")
          assert.deepStrictEqual(strayDup(receivedA), [], "stray duplicates on the auto-delete queue")
          // Nothing received that was never published.
          for (const n of [...receivedD.keys(), ...receivedA.keys()]) assert.isTrue(n < next)
          assert.deepStrictEqual(ackErrors, [])

          // 4. The broker's view: 3 channels, each queue with its one consumer and nothing left.
          let view: unknown
          for (let i = 0; i < 40; i++) {
            const queues = yield* node.listQueues()
            const d = queues.find((q) => q.name === durable)
            const a = queues.find((q) => q.name === autoDel)
            view = {
              channels: yield* brokerChannels(),
              durable: d && { messages: d.messages, consumers: d.consumers },
              autoDelete: a && { messages: a.messages, consumers: a.consumers }
            }
            if (
              JSON.stringify(view) ===
                JSON.stringify({
                  channels: 3,
                  durable: { messages: 0, consumers: 1 },
                  autoDelete: { messages: 0, consumers: 1 }
                })
            ) break
            yield* Support.realDelay(250)
          }
          assert.deepStrictEqual(view, {
            channels: 3,
            durable: { messages: 0, consumers: 1 },
            autoDelete: { messages: 0, consumers: 1 }
          })
          // 5. Per-cycle state does not grow.
          const stable = perCycle.slice(1)
          for (const c of stable) {
            assert.strictEqual(c.channels, 3, `broker channels at cycle ${c.cycle}`)
            assert.strictEqual(c.fibers, perCycle[0]!.fibers, `client fibers at cycle ${c.cycle}`)
          }
          assert.isAtLeast((yield* client.stats).reconnects, CYCLES)
        })
      ),
    { timeout: 280_000 }
  )
})
