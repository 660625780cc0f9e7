import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope } from "effect"
import * as LeakProbe from "../src/LeakProbe.ts"
import * as LiveFibers from "../src/LiveFibers.ts"
import * as SharedBroker from "../src/SharedBroker.ts"
import { handshake, rawClient } from "./rawAmqp.ts"
import { connect, server } from "./support.ts"

const expectLeak = <A, E>(effect: Effect.Effect<A, E | LeakProbe.LeakError>) =>
  Effect.flip(effect).pipe(
    Effect.flatMap((e) => (e instanceof LeakProbe.LeakError ? Effect.succeed(e) : Effect.die(e)))
  )

describe("LeakProbe", () => {
  it.live("reports an open socket as a leak and is clean once it is closed", () =>
    Effect.gen(function*() {
      const peer = yield* server("echo")
      const before = yield* LeakProbe.snapshot()
      const scope = yield* Scope.make()
      const client = yield* Scope.provide(connect(peer.port), scope)
      yield* peer.watch.until(() => peer.connections[0], "accepted")
      const leak = yield* expectLeak(LeakProbe.assertNoLeaks(before, { timeoutMillis: 200 }))
      // Both ends live in this process: the client socket and the accepted one.
      const sockets = before.resources["TCPSocketWrap"] ?? 0
      assert.include(leak.leaks, `TCPSocketWrap: ${sockets} -> ${sockets + 2}`)
      assert.include(leak.message, "TCPSocketWrap")
      yield* Scope.close(scope, Exit.void)
      yield* peer.watch.until(() => (peer.connections[0]!.closed ? true : undefined), "server side closed")
      yield* client.watch.until(() => (client.closed ? true : undefined), "client closed")
      const after = yield* LeakProbe.assertNoLeaks(before)
      assert.strictEqual(after.resources["TCPSocketWrap"] ?? 0, sockets)
    }))

  it.live("reports a timer that was left running", () =>
    Effect.gen(function*() {
      const before = yield* LeakProbe.snapshot()
      const timer = setInterval(() => {}, 1_000)
      const leak = yield* expectLeak(LeakProbe.assertNoLeaks(before, { timeoutMillis: 50 }))
      const timeouts = before.resources["Timeout"] ?? 0
      assert.include(leak.leaks, `Timeout: ${timeouts} -> ${timeouts + 1}`)
      clearInterval(timer)
      yield* LeakProbe.assertNoLeaks(before)
    }))

  it.live("reports fibers counted in LiveFibers until they end", () =>
    Effect.gen(function*() {
      const before = yield* LeakProbe.snapshot()
      const fiber = yield* Effect.forkChild(LiveFibers.track("leak-probe-test")(Effect.never), {
        startImmediately: true
      })
      assert.strictEqual(LiveFibers.byLabel()["leak-probe-test"], (before.fibers["leak-probe-test"] ?? 0) + 1)
      const leak = yield* expectLeak(LeakProbe.assertNoLeaks(before, { timeoutMillis: 50 }))
      assert.include(leak.leaks, "fiber leak-probe-test: 0 -> 1")
      yield* Fiber.interrupt(fiber)
      yield* LeakProbe.assertNoLeaks(before)
      assert.strictEqual(LiveFibers.byLabel()["leak-probe-test"], 0)
    }))

  it.live("counts the broker's connections", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const before = yield* LeakProbe.snapshot(broker)
      const scope = yield* Scope.make()
      const client = yield* Scope.provide(rawClient(broker.amqpPort), scope)
      yield* handshake(client, { connectionName: "leak-probe-broker" })
      const leak = yield* expectLeak(LeakProbe.assertNoLeaks(before, { broker, timeoutMillis: 100 }))
      const count = before.brokerConnections!.length
      assert.include(leak.leaks, `broker connections: ${count} -> ${count + 1} (leak-probe-broker)`)
      yield* Scope.close(scope, Exit.void)
      const after = yield* LeakProbe.assertNoLeaks(before, { broker })
      assert.notInclude(after.brokerConnections!, "leak-probe-broker")
    }), 60_000)
})
