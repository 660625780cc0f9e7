/**
 * A consumer's start, from `basic.consume` to its consume-ok, may be given up (an interrupt, a
 * timeout around it) like any other wait:
 * - against a peer that never answers, the interrupt returns at once, for the stream, for
 *   `consumeWith` and for a recovering client's consumer;
 * - against the broker, a start given up after its `basic.consume` went out is cancelled as its
 *   consume-ok arrives, and what the broker delivered to it until the cancel-ok goes back to the
 *   queue: every message is in the queue again, no consumer is left, and the channel lives on;
 * - the consumer tag of a start given up may be used again at once.
 */
import { AmqpChannel, AmqpClient, AmqpConnection, ConnectionConfig } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Schedule, Stream } from "effect"
import { onQueue } from "../support/channelKit.ts"
import { leakChecked } from "../support/Probe.ts"

/** A peer that opens channels, never answers basic.consume, and answers closes. */
const silentOnConsume = (peer: ScriptedPeer.ScriptedPeer) =>
  Effect.forkChild(
    Effect.flatMap(peer.accept(), (client) =>
      Effect.gen(function*() {
        yield* client.handshake({ tune: { heartbeat: 0 } })
        while (true) {
          const frame = yield* client.nextFrame({ timeoutMillis: 30_000 })
          if (frame._tag !== "MethodFrame") continue
          const m = frame.method
          if (m._tag === "channel.open") yield* client.sendMethod(frame.channel, Methods.channelOpenOk())
          if (m._tag === "channel.close") yield* client.sendMethod(frame.channel, Methods.channelCloseOk())
          if (m._tag === "connection.close") {
            yield* client.sendMethod(0, Methods.connectionCloseOk())
            return yield* client.awaitEnd()
          }
        }
      })),
    { startImmediately: true }
  )

type Via = "consume" | "consumeWith" | "client consume"

const starting = (via: Via, url: string) =>
  Effect.gen(function*() {
    if (via === "client consume") {
      const client = yield* AmqpClient.make(yield* ConnectionConfig.fromUrl(url, { heartbeat: 0, closeTimeout: 500 }))
      const channel = yield* client.channel()
      return channel.consume("q").pipe(Stream.runDrain)
    }
    const connection = yield* AmqpConnection.fromUrl(url, { heartbeat: 0, closeTimeout: 500 })
    const channel = yield* AmqpChannel.make(connection)
    return via === "consume" ? channel.consume("q").pipe(Stream.runDrain) : channel.consumeWith("q", () => Effect.void)
  })

describe("a consumer start given up", () => {
  for (const via of ["consume", "consumeWith", "client consume"] as const) {
    it.live(`(${via}) returns at once against a peer that never answers basic.consume`, () =>
      leakChecked(Effect.gen(function*() {
        const peer = yield* ScriptedPeer.make()
        yield* silentOnConsume(peer)
        const consumer = yield* Effect.forkChild(yield* starting(via, `amqp://guest:guest@127.0.0.1:${peer.port}`), {
          startImmediately: true
        })
        yield* Effect.sleep("100 millis")
        const began = performance.now()
        const interrupted = yield* Fiber.interrupt(consumer).pipe(Effect.timeoutOption("3 seconds"))
        assert.strictEqual(interrupted._tag, "Some", "the interrupt did not return")
        assert.isBelow(performance.now() - began, 1000)
      })))
  }

  it.live("after its basic.consume went out gives back what was delivered, and its tag may be used again", () =>
    Effect.gen(function*() {
      const messages = 50
      const rounds = 20
      const outcome = yield* onQueue("consume-start-given-up", ({ admin, channel, queue }) =>
        Effect.gen(function*() {
          for (let i = 0; i < messages; i++) yield* admin.publish("", queue, Buffer.from(`m${i}`))
          const count = (expected: number) =>
            admin.queueDeclare(queue, { passive: true }).pipe(
              Effect.repeat({
                until: (ok) => ok.messageCount === expected && ok.consumerCount === 0,
                schedule: Schedule.spaced("10 millis"),
                times: 200
              })
            )
          yield* count(messages)
          const exits: Array<Exit.Exit<unknown, unknown>> = []
          for (let i = 0; i < rounds; i++) {
            // Given up after 0 to 1.9 ms: before, around and after the consume-ok. One that has
            // started hands each delivery back.
            const consumer = yield* Effect.forkChild(
              channel.consumeWith(queue, (d) => d.nack({ requeue: true }), { consumerTag: "reused" }),
              { startImmediately: true }
            )
            yield* Effect.sleep(`${(i % 20) / 10} millis`)
            yield* Fiber.interrupt(consumer)
            exits.push(yield* Fiber.await(consumer))
          }
          const settled = yield* count(messages)
          // The tag is free: a consumer with it takes every message.
          const taken = yield* channel.consume(queue, { consumerTag: "reused" }).pipe(
            Stream.mapEffect((d) => Effect.as(d.ack(), d.body.length)),
            Stream.take(messages),
            Stream.runCollect
          )
          const open = yield* channel.isOpen
          yield* admin.queueDelete(queue)
          return { exits, settled, taken: taken.length, open }
        }))
      assert.isTrue(outcome.exits.every((exit) => Exit.hasInterrupts(exit)))
      assert.deepStrictEqual(
        { messages: outcome.settled.messageCount, consumers: outcome.settled.consumerCount },
        { messages, consumers: 0 }
      )
      assert.strictEqual(outcome.taken, messages)
      assert.isTrue(outcome.open)
    }))
})
