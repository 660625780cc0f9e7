/**
 * Channel options that cannot work fail with `AmqpConfigError` before anything reaches the broker:
 * a confirm window of no publish at all (0, negative, fractional, NaN) would hold every publish in
 * confirm mode forever, and a negative or NaN `blockedTimeout` is no duration. The smallest
 * window that works, 1, confirms publish after publish.
 */
import { AmqpChannel, AmqpClient, AmqpConfigError, type AmqpConnection, ConnectionConfig } from "@effect-amqp/client"
import { SharedBroker as Shared } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { onSharedBroker, unique } from "../support/channelKit.ts"
import { leakChecked, Names } from "../support/Probe.ts"

const unusable: ReadonlyArray<readonly [AmqpChannel.ChannelOptions, string]> = [
  [{ maxOutstandingConfirms: 0 }, "maxOutstandingConfirms must be a whole number of at least 1, got 0"],
  [{ maxOutstandingConfirms: -1 }, "got -1"],
  [{ maxOutstandingConfirms: 2.5 }, "got 2.5"],
  [{ maxOutstandingConfirms: Number.NaN }, "got NaN"],
  [{ blockedTimeout: -1 }, "blockedTimeout must be 0 or more milliseconds, got -1"],
  [{ blockedTimeout: Number.NaN }, "got NaN"]
]

/** The message of the `AmqpConfigError` the exit failed with, or what it was instead. */
const configErrorOf = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return "opened"
  const error = Exit.findErrorOption(exit)
  return error._tag === "Some" && error.value instanceof AmqpConfigError ? error.value.message : String(exit)
}

const assertRefused = (exit: Exit.Exit<unknown, unknown>, fragment: string) => {
  const message = configErrorOf(exit)
  assert.include(message, "invalid channel options: ")
  assert.include(message, fragment)
}

/** Three publishes confirmed one after the other through `channel`, and counted in the queue. */
const confirmThree = (channel: AmqpChannel.AmqpChannel | AmqpClient.ClientChannel) =>
  Effect.gen(function*() {
    const queue = unique("channel-options")
    yield* channel.queueDeclare(queue, { autoDelete: true })
    yield* channel.confirmSelect
    for (const body of ["a", "b", "c"]) yield* channel.publish("", queue, Buffer.from(body))
    const declared = yield* channel.queueDeclare(queue, { passive: true })
    yield* channel.queueDelete(queue)
    return declared.messageCount
  })

describe("channel options that cannot work", () => {
  it.live("AmqpChannel.make refuses them, and opens no channel for them", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection: AmqpConnection.AmqpConnection = yield* connect()
        for (const [options, fragment] of unusable) {
          assertRefused(yield* Effect.exit(AmqpChannel.make(connection, options)), fragment)
        }

        // The first channel id was never taken: the refused ones sent no channel.open.
        const channel = yield* AmqpChannel.make(connection, { maxOutstandingConfirms: 1, blockedTimeout: 0 })
        assert.strictEqual(channel.id, 1)
        assert.strictEqual(yield* confirmThree(channel), 3)
      })
    ))

  it.live("a recovering client's channel refuses them too", () =>
    Effect.flatMap(Shared.acquire, (broker) => {
      const names = new Names("channelOptions")
      return leakChecked(
        Effect.gen(function*() {
          const options = yield* ConnectionConfig.make({
            host: "127.0.0.1",
            port: broker.amqpPort,
            connectionName: names.next("client"),
            closeTimeout: 2_000
          })
          const client = yield* AmqpClient.make(options)
          for (const [channelOptions, fragment] of unusable) {
            assertRefused(yield* Effect.exit(client.channel(channelOptions)), fragment)
          }
          assert.strictEqual(yield* confirmThree(yield* client.channel({ maxOutstandingConfirms: 1 })), 3)
        }),
        names.own(broker)
      )
    }))
})
