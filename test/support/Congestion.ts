/**
 * A socket that does not drain: the proxy's peer stops reading, a 24 MiB publish fills the socket,
 * and small publishes queue behind it, each in a fiber of its own.
 */
import type { AmqpChannel } from "@effect-amqp/client"
import type { FaultProxy } from "@effect-amqp/testing"
import { assert } from "@effect/vitest"
import { Effect } from "effect"

/** Three publishes waiting for the socket to drain, checked to be still waiting after 100 ms. */
export const publishesWaitingForDrain = (channel: AmqpChannel.AmqpChannel, proxy: FaultProxy.FaultProxy) =>
  Effect.gen(function*() {
    yield* proxy.stopReading("clientToServer")
    yield* channel.publishAsync("", "q", new Uint8Array(24 * 1024 * 1024))
    const waiting = yield* Effect.forEach(
      [0, 1, 2],
      (i) =>
        Effect.forkChild(Effect.flatten(channel.publishAsync("", "q", Uint8Array.of(i))), { startImmediately: true })
    )
    yield* Effect.sleep(100)
    assert.deepStrictEqual(waiting.map((fiber) => fiber.pollUnsafe()), [undefined, undefined, undefined])
    return waiting
  })
