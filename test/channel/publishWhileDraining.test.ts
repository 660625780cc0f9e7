/**
 * Publishes waiting for a congested socket to drain never left the client. When the channel ends
 * meanwhile (the broker closes it, the connection is lost, or the peer sends FIN without a
 * `connection.close` while it reads no more) they end at once, each as
 * `Unconfirmed` with `sent: false` and the reason, in confirm mode and out of it: they neither
 * wait for a drain that may never come, nor report a message as published that was dropped.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import { publishesWaitingForDrain } from "../support/Congestion.ts"
import { publishEnding } from "../support/Outcome.ts"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, openChannelIn, servedBy } from "../support/scriptedAmqp.ts"

type Mode = "confirm" | "plain"
type Ending = "channel closed with 406" | "connection reset" | "FIN from the peer"

const run = (mode: Mode, end: Ending) =>
  leakChecked(Effect.gen(function*() {
    const endNow = yield* Deferred.make<void>()
    const peer = yield* servedBy((client) =>
      Effect.gen(function*() {
        yield* openChannelIn(mode)(client)
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

    const waiting = yield* publishesWaitingForDrain(channel, proxy)
    assert.isTrue(connection.core.transport.congested())

    yield* Deferred.succeed(endNow, undefined)
    if (end === "connection reset") yield* proxy.reset()
    if (end === "FIN from the peer") yield* proxy.halfClose("serverToClient")
    // The socket still does not drain: the publishes end with the channel, not with a drain.
    const exits = yield* Effect.forEach(waiting, (fiber) => Fiber.await(fiber).pipe(Effect.timeout("2 seconds")))
    yield* proxy.resumeReading("clientToServer")
    return exits.map(publishEnding)
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

    for (const end of ["connection reset", "FIN from the peer"] as const) {
      it.live(
        `${mode}: end as never sent after a ${end}`,
        () =>
          Effect.map(
            run(mode, end),
            (endings) =>
              assert.deepStrictEqual(endings, Array(3).fill("Unconfirmed(sent: false, cause: AmqpConnectionError)"))
          ),
        60_000
      )
    }
  }
})
