/**
 * The application closes a connection (its scope; a channel on it lives in an outer scope) while
 * publishes wait for a congested socket. `connection.close` queues behind the backlog; when the
 * socket drains, nothing follows it on the wire (the broker would discard it), and the waiting
 * publishes fail as never sent rather than report success.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Option, Scope } from "effect"
import { publishesWaitingForDrain } from "../support/Congestion.ts"
import { publishEnding } from "../support/Outcome.ts"
import { leakChecked } from "../support/Probe.ts"
import { openChannelIn, servedBy } from "../support/scriptedAmqp.ts"

const ending = (exit: Option.Option<Exit.Exit<unknown, unknown>>): string =>
  Option.isNone(exit) ? "hung" : publishEnding(exit.value)

const run = (mode: "confirm" | "plain") =>
  leakChecked(Effect.gen(function*() {
    const seen: Array<string> = []
    const peer = yield* servedBy((client) =>
      Effect.gen(function*() {
        yield* openChannelIn(mode)(client)
        let closing = false
        while (true) {
          const frame = yield* client.nextFrame({ timeoutMillis: closing ? 700 : 20_000 }).pipe(Effect.option)
          if (Option.isNone(frame)) break
          if (frame.value._tag !== "MethodFrame") continue
          const tag = frame.value.method._tag
          seen.push(tag === "basic.publish" ? (closing ? "publish after close" : "publish") : tag)
          if (tag === "connection.close") closing = true
        }
        yield* client.sendMethod(0, Methods.connectionCloseOk())
        yield* client.close("fin")
      })
    )
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: peer.port } })
    const connectionScope = yield* Scope.make()
    const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${proxy.port}`, {
      heartbeat: 0,
      closeTimeout: 3_000
    }).pipe(Scope.provide(connectionScope))
    const channel = yield* AmqpChannel.make(connection, { maxOutstandingConfirms: 5 })
    if (mode === "confirm") yield* channel.confirmSelect
    const waiting = yield* publishesWaitingForDrain(channel, proxy)
    const closer = yield* Effect.forkChild(Scope.close(connectionScope, Exit.void), { startImmediately: true })
    yield* Effect.sleep(100)
    yield* proxy.resumeReading("clientToServer")
    const endings: Array<string> = []
    for (const fiber of waiting) {
      const exit = yield* Fiber.await(fiber).pipe(Effect.timeoutOption(8_000))
      if (Option.isNone(exit)) yield* Fiber.interrupt(fiber)
      endings.push(ending(exit))
    }
    yield* Fiber.await(closer).pipe(Effect.timeoutOption(8_000))
    yield* Fiber.await(yield* Effect.forkChild(peer.client)).pipe(Effect.timeoutOption(8_000))
    return { endings, wire: seen }
  }))

describe("a connection closed by the application while publishes wait for the socket", () => {
  for (const mode of ["confirm", "plain"] as const) {
    it.live(
      `${mode}: nothing is written after connection.close, and the waiting publishes fail as never sent`,
      () =>
        Effect.map(run(mode), (r) => {
          assert.deepStrictEqual(
            { publishesAfterClose: r.wire.filter((s) => s === "publish after close").length, endings: r.endings },
            {
              publishesAfterClose: 0,
              endings: Array(3).fill("Unconfirmed(sent: false, cause: AmqpConnectionError)")
            }
          )
        }),
      60_000
    )
  }
})
