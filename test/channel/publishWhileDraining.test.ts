/**
 * Publishes waiting for a congested socket to drain never left the client. When the channel ends
 * meanwhile (the broker closes it, or the connection is lost) they end at once, each as
 * `Unconfirmed` with `sent: false` and the reason, in confirm mode and out of it: they neither
 * wait for a drain that may never come, nor report a message as published that was dropped.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, openChannel, servedBy } from "../support/scriptedAmqp.ts"

type Mode = "confirm" | "plain"
type Ending = "channel closed with 406" | "connection reset"

/** How a publish ended: "ok", or the error's tag with an `Unconfirmed` reason's details. */
const ending = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = Cause.findErrorOption(exit.cause)
  if (error._tag === "None") return Exit.hasInterrupts(exit) ? "interrupted" : "defect"
  const failure = error.value as {
    readonly _tag: string
    readonly reason?: { readonly _tag: string; readonly sent?: boolean; readonly cause?: { readonly _tag: string } }
  }
  const reason = failure.reason
  if (reason?._tag !== "Unconfirmed") return failure._tag
  return `Unconfirmed(sent: ${reason.sent}, cause: ${reason.cause?._tag})`
}

const run = (mode: Mode, end: Ending) =>
  leakChecked(Effect.gen(function*() {
    const endNow = yield* Deferred.make<void>()
    const peer = yield* servedBy((client) =>
      Effect.gen(function*() {
        yield* openChannel(client)
        if (mode === "confirm") {
          yield* client.expect("confirm.select")
          yield* client.sendMethod(CHANNEL, Methods.confirmSelectOk())
        }
        yield* Deferred.await(endNow)
        if (end === "channel closed with 406") {
          yield* client.sendMethod(
            CHANNEL,
            Methods.channelClose({ replyCode: 406, replyText: "PRECONDITION_FAILED", classId: 60, methodId: 40 })
          )
        }
        yield* client.awaitEnd({ timeoutMillis: 30_000 }).pipe(Effect.ignore)
      })
    )
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: peer.port } })
    const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${proxy.port}`, {
      heartbeat: 0,
      closeTimeout: 300
    })
    const channel = yield* AmqpChannel.make(connection, { maxOutstandingConfirms: 5 })
    if (mode === "confirm") yield* channel.confirmSelect

    // The peer stops reading: a 24 MiB body fills the socket, and three small publishes wait.
    yield* proxy.stopReading("clientToServer")
    yield* channel.publishAsync("", "q", new Uint8Array(24 * 1024 * 1024))
    assert.isTrue(connection.core.transport.congested())
    const waiting = yield* Effect.forEach([0, 1, 2], (i) =>
      Effect.forkChild(Effect.flatten(channel.publishAsync("", "q", Uint8Array.of(i))), { startImmediately: true }))
    yield* Effect.sleep(100)
    assert.deepStrictEqual(
      waiting.map((fiber) =>
        fiber.pollUnsafe()
      ),
      [undefined, undefined, undefined]
    )

    yield* Deferred.succeed(endNow, undefined)
    if (end === "connection reset") yield* proxy.reset()
    // The socket still does not drain: the publishes end with the channel, not with a drain.
    const exits = yield* Effect.forEach(waiting, (fiber) => Fiber.await(fiber).pipe(Effect.timeout("2 seconds")))
    yield* proxy.resumeReading("clientToServer")
    return exits.map(ending)
  }))

describe("publishes waiting for a congested socket", () => {
  for (const mode of ["confirm", "plain"] as const) {
    it.live(
      `${mode}: end as never sent when the broker closes the channel`,
      () =>
        Effect.map(
          run(mode, "channel closed with 406"),
          (endings) =>
            assert.deepStrictEqual(endings, Array(3).fill("Unconfirmed(sent: false, cause: AmqpChannelError)"))
        ),
      60_000
    )

    it.live(
      `${mode}: end as never sent when the connection is lost`,
      () =>
        Effect.map(
          run(mode, "connection reset"),
          (endings) =>
            assert.deepStrictEqual(endings, Array(3).fill("Unconfirmed(sent: false, cause: AmqpConnectionError)"))
        ),
      60_000
    )
  }
})
