/**
 * Values the encoder refuses: a number outside its field, a short string over 255 bytes, a
 * fractional timestamp, a method or content header that would not fit in one frame. Each fails
 * its one operation with `AmqpEncodeError` before anything is sent or waited for, and the channel
 * and connection go on as if it had never been called: the next method gets its own reply, the
 * confirm slot is free, no frame reached the broker.
 */
import { AmqpChannel, AmqpEncodeError } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { confirmingChannel, onSharedBroker, readyCount, text, unique, utf8 } from "../support/channelKit.ts"

/** Bounded, so that a hang shows as a failed assertion rather than as the test's timeout. */
const within = <A, E>(effect: Effect.Effect<A, E>) => Effect.exit(Effect.timeout(effect, "3 seconds"))

/** The exit failed with exactly an `AmqpEncodeError` whose message names `fragment`. */
const assertEncodeError = <A, E>(exit: Exit.Exit<A, E>, fragment: string) => {
  assert.isTrue(Exit.isFailure(exit), `expected a failure, got ${String(exit)}`)
  const error = Exit.isFailure(exit) ? Exit.findErrorOption(exit) : undefined
  assert.isTrue(error?._tag === "Some" && error.value instanceof AmqpEncodeError, `not an AmqpEncodeError: ${exit}`)
  if (error?._tag === "Some") assert.include((error.value as AmqpEncodeError).message, fragment)
}

describe("values that cannot be encoded", () => {
  it.live("a method refused by the encoder fails alone: the channel's next method gets its reply", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const channel = yield* AmqpChannel.make(yield* connect())

        assertEncodeError(yield* within(channel.qos(70_000)), "70000 is not an unsigned 16-bit integer")
        assertEncodeError(yield* within(channel.queueDeclare("q".repeat(256))), "exceeds 255")
        assertEncodeError(
          yield* within(channel.queueDeclare(unique("q-args"), { arguments: { big: "x".repeat(140_000) } })),
          "over frame_max (131072)"
        )

        const queue = unique("q-encode-next")
        const declared = yield* within(channel.queueDeclare(queue, { autoDelete: true }))
        assert.isTrue(Exit.isSuccess(declared), `the next declare got no reply: ${String(declared)}`)
        assert.strictEqual(Exit.isSuccess(declared) ? declared.value.queue : "", queue)
        assert.isTrue(yield* channel.isOpen)
      })
    ))

  it.live("a confirmed publish refused by the encoder holds no confirm slot and sends nothing", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const { channel, queue } = yield* confirmingChannel(connection, { maxOutstandingConfirms: 1 })

        const tooLongId = channel.publish("", queue, utf8("a"), { properties: { messageId: "m".repeat(256) } })
        const fractional = channel.publish("", queue, utf8("b"), { properties: { timestamp: 1_733_400_000.5 } })
        const hugeHeader = channel.publish("", queue, utf8("c"), {
          properties: { headers: { big: "h".repeat(131_072) } }
        })
        assertEncodeError(yield* within(tooLongId), "exceeds 255")
        assertEncodeError(yield* within(fractional), "1733400000.5 is not an unsigned 64-bit integer")
        assertEncodeError(yield* within(hugeHeader), "content header frame is")

        // With a window of one, a slot left taken would hold this publish forever.
        const good = yield* within(channel.publish("", queue, utf8("d")))
        assert.isTrue(Exit.isSuccess(good), `the valid publish did not complete: ${String(good)}`)
        const got = yield* channel.get(queue, { noAck: true })
        assert.strictEqual(got._tag === "Some" ? text(got.value.body) : "", "d")
        assert.strictEqual(yield* readyCount(channel, queue), 0)
      })
    ))

  it.live("an unconfirmed publish refused by the encoder fails typed; the connection lives on", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        const queue = unique("q-encode-plain")
        yield* channel.queueDeclare(queue, { autoDelete: true })

        const bad = channel.publish("", queue, utf8("x"), { properties: { correlationId: "c".repeat(256) } })
        assertEncodeError(yield* within(bad), "exceeds 255")
        yield* channel.publish("", queue, utf8("y"))
        // A get on the channel that published reaches the queue after the publish did.
        const got = yield* channel.get(queue, { noAck: true })
        assert.deepStrictEqual(got._tag === "Some" ? [text(got.value.body), got.value.messageCount] : [], ["y", 0])
        assert.isTrue(yield* connection.isOpen)
      })
    ))

  it.live("update-secret with a reason over 255 bytes fails typed; a valid one after it completes", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const secret = connection.options.password
        assertEncodeError(yield* within(connection.updateSecret(secret, "r".repeat(300))), "exceeds 255")
        const next = yield* within(connection.updateSecret(secret, "rotation"))
        assert.isTrue(Exit.isSuccess(next), `the valid update-secret did not complete: ${String(next)}`)
      })
    ))
})
