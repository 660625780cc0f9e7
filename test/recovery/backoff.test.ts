/**
 * The default reconnect policy, in virtual time: against a port that refuses, attempts follow an
 * exponential backoff from 100 ms with jitter (each gap within 0.8x-1.2x of 100, 200, 400 ms ...);
 * against bad credentials there is one attempt and a typed error, however long one waits.
 *
 * The connection attempts are real I/O on loopback, so the test waits real time (a timer, not
 * `Effect.sleep`, which is virtual here) after each step of the `TestClock`. The first link goes
 * through a fault proxy to the run's shared node; only the proxy is faulted.
 */
import { AmqpClient, AmqpConnectionError } from "@effect-amqp/client"
import { FaultProxy, LeakProbe, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber, PubSub } from "effect"
import { TestClock } from "effect/testing"
import * as Support from "./support.ts"

/** How many backoff gaps are measured: 100, 200, 400, 800, 1600 and 3200 ms before jitter. */
const gaps = 6

describe("AmqpClient.defaultReconnect", () => {
  it.effect("backs off exponentially from 100 ms, with jitter, while the port refuses", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
      const before = yield* TestClock.withLive(LeakProbe.snapshot())
      yield* Effect.scoped(Effect.gen(function*() {
        const client = yield* AmqpClient.make(yield* Support.options(proxy.port, "backoff"))
        // Each event with the virtual time it was published at.
        const stamped: Array<{ readonly at: number; readonly event: AmqpClient.LifecycleEvent }> = []
        const subscription = yield* client.subscribe
        yield* Effect.forkScoped(
          Effect.forever(
            Effect.flatMap(
              PubSub.take(subscription),
              (event) => Effect.map(Clock.currentTimeMillis, (at) => stamped.push({ at, event }))
            )
          ),
          { startImmediately: true }
        )
        const attempts = () => stamped.filter((s) => s.event._tag === "Connecting")
        const waitReal = Effect.fnUntraced(function*(what: string, done: () => boolean) {
          const deadline = Date.now() + 5_000
          while (!done()) {
            if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
            yield* Support.realDelay(5)
          }
        })

        // From now on nothing listens on the proxy's port: every attempt is refused.
        yield* proxy.refuseNew("unlisten")
        yield* proxy.dropAll("reset")
        yield* waitReal("the first attempt", () => attempts().length >= 1)
        const disconnected = stamped.find((s) => s.event._tag === "Disconnected")
        assert.isDefined(disconnected)
        assert.strictEqual(attempts()[0]!.at, disconnected!.at)

        const measured: Array<number> = []
        for (let k = 0; k < gaps; k++) {
          const nominal = 100 * 2 ** k
          const seen = attempts().length
          // Let the refusal land, so the backoff sleep is registered at the current virtual time.
          yield* Support.realDelay(100)
          const base = yield* Clock.currentTimeMillis
          assert.strictEqual(attempts().length, seen)
          // Nothing before 0.8x ...
          yield* TestClock.adjust(Math.floor(0.8 * nominal) - 1)
          yield* Support.realDelay(20)
          assert.strictEqual(attempts().length, seen, `attempt ${seen + 1} came before 0.8 x ${nominal} ms`)
          // ... and the attempt by 1.2x, found in steps of 1% of the nominal delay.
          const step = nominal / 100
          while (attempts().length === seen && (yield* Clock.currentTimeMillis) - base <= 1.2 * nominal) {
            yield* TestClock.adjust(step)
            yield* Support.realDelay(3)
          }
          yield* waitReal(`attempt ${seen + 1}`, () => attempts().length > seen)
          const gap = attempts()[seen]!.at - base
          assert.isAtLeast(gap, 0.8 * nominal - 1e-6, `gap ${k + 1}`)
          assert.isAtMost(gap, 1.2 * nominal + 1e-6, `gap ${k + 1}`)
          measured.push(gap)
        }
        // Jitter: the gaps are not exactly the nominal delays.
        assert.isTrue(measured.some((gap, k) => gap !== 100 * 2 ** k))
        assert.strictEqual(attempts().length, gaps + 1)
        assert.deepStrictEqual(stamped.filter((s) => s.event._tag === "GaveUp"), [])
        // Each refused attempt was reported, with its number and the refusal.
        const failures = () => stamped.flatMap((s) => s.event._tag === "AttemptFailed" ? [s.event] : [])
        yield* waitReal("the last refusal", () => failures().length === gaps + 1)
        assert.deepStrictEqual(
          failures().map((event) => [event.attempt, event.port, event.error.reason._tag]),
          attempts().map((s) => [(s.event as { readonly attempt: number }).attempt, proxy.port, "ConnectFailed"])
        )

        // The port listens again: the next attempt (after 6.4 s, jittered) recovers the link.
        yield* proxy.acceptNew
        yield* Support.realDelay(100)
        const seen = attempts().length
        while (attempts().length === seen) {
          yield* TestClock.adjust(64)
          yield* Support.realDelay(3)
        }
        yield* waitReal("recovery", () => stamped.some((s) => s.event._tag === "Recovered"))
        assert.isTrue((yield* client.stats).connected)
      }))
      yield* TestClock.withLive(LeakProbe.assertNoLeaks(before))
    }), 60_000)

  it.effect("makes one attempt and fails with 403 when the password is wrong", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
      const before = yield* TestClock.withLive(LeakProbe.snapshot())
      const options = yield* Support.options(proxy.port, "wrong-password", { password: "not-the-password" })
      const events: Array<AmqpClient.LifecycleEvent> = []
      const making = yield* Effect.forkChild(
        // The callback throws after recording: that must not stop the client from giving up.
        Effect.scoped(AmqpClient.make(options, {
          onEvent: (event) => {
            events.push(event)
            throw new Error(`callback failed on ${event._tag}`)
          }
        })),
        { startImmediately: true }
      )
      // The clock stands still until the broker has refused the login and closed the connection:
      // moving it during the handshake would time the handshake out (a failure worth a retry).
      yield* TestClock.withLive(proxy.awaitClosed(0))
      // Then a minute of virtual time, a second at a time: time enough for many retries, were there any.
      for (let second = 0; second < 60; second++) {
        yield* Support.realDelay(10)
        yield* TestClock.adjust("1 second")
      }
      yield* Support.realDelay(100)
      const exit = making.pollUnsafe()
      if (exit === undefined) yield* Fiber.interrupt(making)
      assert.isDefined(exit, "AmqpClient.make is still trying after a minute")
      assert.isTrue(Exit.isFailure(exit!))
      const error = Exit.findErrorOption(exit!)
      assert.isTrue(error._tag === "Some")
      if (error._tag === "Some") {
        assert.instanceOf(error.value, AmqpConnectionError)
        const refused = error.value as AmqpConnectionError
        assert.strictEqual(refused.reason._tag, "ServerClosed")
        assert.strictEqual(refused.replyCode, 403)
        assert.isTrue(refused.isPermanent)
      }
      assert.strictEqual((yield* proxy.stats).accepted, 1)
      // The failed first connect is seen through onEvent: one attempt, then GaveUp with the 403.
      assert.deepStrictEqual(
        events.map((event) =>
          event._tag === "GaveUp"
            ? [event._tag, event.cause.replyCode]
            : event._tag === "AttemptFailed"
            ? [event._tag, event.attempt, event.error.replyCode]
            : event._tag === "Connecting"
            ? [event._tag, event.attempt]
            : [event._tag]
        ),
        [["Connecting", 1], ["AttemptFailed", 1, 403], ["GaveUp", 403]]
      )
      yield* TestClock.withLive(LeakProbe.assertNoLeaks(before))
    }))
})
