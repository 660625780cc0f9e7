/**
 * A consumer's buffer against a scripted peer, where what arrives in one socket read is exact:
 * a broker cancel behind deliveries to acknowledge hands them over (and their acks go out) before
 * the consumer ends, and a consumer interrupted between a delivery's arrival and its wake (by
 * another consumer's handler, woken earlier by the same read) leaves that delivery buffered, and
 * it is rejected with requeue after the cancel-ok. A `consumeWith` interrupted while its handler
 * runs rejects that handler's delivery with requeue, unless the handler had settled it.
 */
import { AmqpChannel, AmqpConnection, AmqpConsumerCancelled } from "@effect-amqp/client"
import { encodeMethod, Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, Stream } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, delivery, peerUrl, recordUntilEnd, servedBy } from "../support/scriptedAmqp.ts"

/** Handshake, channel.open, and one consume-ok per expected consume. */
const openAndConsume = (connection: ScriptedPeer.PeerConnection, tags: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    yield* connection.handshake({ tune: { heartbeat: 0 } })
    yield* connection.expect("channel.open")
    yield* connection.sendMethod(CHANNEL, Methods.channelOpenOk())
    for (const tag of tags) {
      const consume = yield* connection.expect("basic.consume")
      assert.strictEqual(consume.consumerTag, tag)
      yield* connection.sendMethod(CHANNEL, Methods.basicConsumeOk({ consumerTag: tag }))
    }
  })

describe("a consumer's buffer, one read at a time", () => {
  it.live("a broker cancel behind deliveries to acknowledge: all three handled and acked, then the cancel", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      const served = yield* Effect.forkScoped(
        Effect.flatMap(peer.accept(), (connection) =>
          Effect.gen(function*() {
            yield* openAndConsume(connection, ["ctag"])
            yield* connection.sendRaw(Buffer.concat([
              delivery("ctag", 1, "one"),
              delivery("ctag", 2, "two"),
              delivery("ctag", 3, "three"),
              encodeMethod(CHANNEL, Methods.basicCancel({ consumerTag: "ctag", nowait: false }))
            ]))
            return yield* recordUntilEnd(connection)
          })),
        { startImmediately: true }
      )
      const outcome = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`)
        const channel = yield* AmqpChannel.make(connection)
        const seen: Array<string> = []
        const ended = yield* Effect.flip(
          channel.consumeWith("q", (d) =>
            Effect.andThen(
              Effect.sync(() => seen.push(new TextDecoder().decode(d.body))),
              d.ack()
            ), { consumerTag: "ctag" })
        ).pipe(Effect.timeout("5 seconds"))
        return { seen, ended }
      }))
      const sent = yield* Fiber.join(served)
      assert.deepStrictEqual(outcome.seen, ["one", "two", "three"])
      assert.deepStrictEqual(outcome.ended, new AmqpConsumerCancelled({ consumerTag: "ctag", queue: "q" }))
      assert.deepStrictEqual(sent, [
        "cancel-ok ctag",
        // One frame: each ack covered every tag below it, so each raised the tag of the one before.
        "ack 3 multiple",
        "channel.close",
        "connection.close"
      ])
    })))

  for (const how of ["consumeWith", "consume"] as const) {
    it.live(`a ${how} consumer interrupted while its wake is queued: its delivery is rejected with requeue`, () =>
      leakChecked(Effect.gen(function*() {
        const peer = yield* ScriptedPeer.make()
        const served = yield* Effect.forkScoped(
          Effect.flatMap(peer.accept(), (connection) =>
            Effect.gen(function*() {
              yield* openAndConsume(connection, ["ctag-a", "ctag-b"])
              // Both consumers are waiting on empty buffers by now.
              yield* Effect.sleep("100 millis")
              // One read: a's delivery first, so a is woken first, and its handler interrupts b
              // before b's wake runs.
              yield* connection.sendRaw(Buffer.concat([delivery("ctag-a", 1, "a1"), delivery("ctag-b", 2, "b1")]))
              return yield* recordUntilEnd(connection)
            })),
          { startImmediately: true }
        )
        const result = yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`)
          const channel = yield* AmqpChannel.make(connection)
          const seenA: Array<string> = []
          const seenB: Array<string> = []
          const fiberB = yield* Deferred.make<Fiber.Fiber<unknown, unknown>>()
          const handledA = yield* Deferred.make<void>()
          const fiberA = yield* Effect.forkChild(
            channel.consumeWith("q", (d) =>
              Effect.gen(function*() {
                seenA.push(new TextDecoder().decode(d.body))
                yield* Fiber.interrupt(yield* Deferred.await(fiberB))
                yield* d.ack()
                yield* Deferred.succeed(handledA, undefined)
              }), { consumerTag: "ctag-a" }),
            { startImmediately: true }
          )
          const recordB = (d: AmqpChannel.Delivery) => Effect.sync(() => seenB.push(new TextDecoder().decode(d.body)))
          const b = how === "consumeWith"
            ? channel.consumeWith("q", recordB, { consumerTag: "ctag-b" })
            : Stream.runForEach(channel.consume("q", { consumerTag: "ctag-b" }), recordB)
          const forkedB = yield* Effect.forkChild(b, { startImmediately: true })
          yield* Deferred.succeed(fiberB, forkedB)
          yield* Deferred.await(handledA).pipe(Effect.timeout("5 seconds"))
          const exitB = yield* Fiber.await(forkedB)
          yield* Fiber.interrupt(fiberA)
          return { seenA, seenB, exitB }
        }))
        const sent = yield* Fiber.join(served)
        assert.deepStrictEqual(result.seenA, ["a1"])
        assert.deepStrictEqual(result.seenB, [])
        assert.isTrue(result.exitB._tag === "Failure")
        assert.deepStrictEqual(sent, [
          "cancel ctag-b",
          "reject 2 requeue",
          "ack 1 multiple",
          "cancel ctag-a",
          "channel.close",
          "connection.close"
        ])
      })))
  }

  for (const settles of [false, true]) {
    it.live(`consumeWith interrupted in a handler that ${settles ? "acked" : "did not settle"} its delivery`, () =>
      leakChecked(Effect.gen(function*() {
        const sent: Array<string> = []
        const peer = yield* servedBy((client) =>
          Effect.gen(function*() {
            yield* openAndConsume(client, ["held"])
            yield* client.sendRaw(Buffer.concat([delivery("held", 1, "one"), delivery("held", 2, "two")]))
            yield* recordUntilEnd(client, sent)
          })
        )
        yield* Effect.scoped(Effect.gen(function*() {
          const connection = yield* AmqpConnection.fromUrl(peerUrl(peer.port))
          const channel = yield* AmqpChannel.make(connection)
          const running = yield* Deferred.make<void>()
          const consumer = yield* Effect.forkChild(
            channel.consumeWith("q", (d) =>
              Effect.andThen(
                settles ? d.ack() : Effect.void,
                Effect.andThen(Deferred.succeed(running, undefined), Effect.never)
              ), { consumerTag: "held" }),
            { startImmediately: true }
          )
          yield* Deferred.await(running)
          // The ack leaves on the next tick: it is out before the interruption.
          yield* Effect.sleep(20)
          yield* Fiber.interrupt(consumer)
        }))
        yield* peer.client
        // Delivery 2 was buffered, and goes back after the cancel-ok either way.
        assert.deepStrictEqual(
          sent,
          settles
            ? ["ack 1 multiple", "cancel held", "reject 2 requeue", "channel.close", "connection.close"]
            : ["reject 1 requeue", "cancel held", "reject 2 requeue", "channel.close", "connection.close"]
        )
      })))
  }
})
