/**
 * The confirm window against a scripted broker that acks out of order, acks multiple, nacks and
 * settles late, while four publishers give up at random moments (timeouts around `publishAsync`
 * and around the wait for a confirm), for several seeds and window sizes. The broker never sees
 * more unsettled publishes than the window, every admitted publish ends as the broker settled it,
 * none given up reaches the broker, nothing arrives twice, and the window is whole at the end.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { CHANNEL, openChannelIn, servedBy } from "../support/scriptedAmqp.ts"

/** "nack" for a publish the broker nacked, else the whole exit as text. */
const nackedOrElse = (exit: Exit.Exit<void, unknown>): string => {
  const error = Exit.findErrorOption(exit)
  const reason = error._tag === "Some"
    ? (error.value as { readonly reason?: { readonly _tag: string } }).reason
    : undefined
  return reason?._tag === "Nacked" ? "nack" : String(exit)
}

/** A small deterministic PRNG. */
const rng = (seed: number) => () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed / 0x7fffffff
}

const run = (seed: number, window: number) =>
  leakChecked(Effect.gen(function*() {
    const random = rng(seed)
    const peerState = {
      /** Cleared for the last check: the publishes after it stay unsettled. */
      settling: true,
      maxUnsettled: 0,
      byBody: new Map<string, "ack" | "nack">(),
      seen: new Set<string>(),
      duplicates: 0
    }
    const peerDone = yield* Deferred.make<void>()
    const peer = yield* servedBy((client) =>
      Effect.gen(function*() {
        yield* openChannelIn("confirm")(client)
        const id = CHANNEL
        let nextTag = 1
        const unsettled = new Map<number, string>() // tag -> body
        const settle = (tag: number, how: "ack" | "nack", multiple: boolean) =>
          Effect.gen(function*() {
            const tags = multiple ? [...unsettled.keys()].filter((t) => t <= tag) : [tag]
            for (const t of tags) {
              peerState.byBody.set(unsettled.get(t)!, how)
              unsettled.delete(t)
            }
            yield* client.sendMethod(
              id,
              how === "ack"
                ? Methods.basicAck({ deliveryTag: tag, multiple })
                : Methods.basicNack({ deliveryTag: tag, multiple, requeue: false })
            )
          })
        const settleSome = Effect.gen(function*() {
          const tags = [...unsettled.keys()]
          if (tags.length === 0) return
          const r = random()
          const pick = tags[Math.floor(random() * tags.length)]!
          if (r < 0.45) yield* settle(pick, "ack", false)
          else if (r < 0.7) yield* settle(pick, "ack", true)
          else if (r < 0.9) yield* settle(pick, "nack", false)
          else yield* settle(pick, "nack", true)
        })
        while (true) {
          const next = yield* Effect.exit(client.nextFrame({ timeoutMillis: 30 }))
          if (Exit.isFailure(next)) {
            // idle: settle everything outstanding
            const tags = [...unsettled.keys()]
            if (tags.length > 0 && peerState.settling) yield* settle(Math.max(...tags), "ack", true)
            continue
          }
          const frame = next.value
          if (frame._tag === "BodyFrame") {
            const text = Buffer.from(frame.payload).toString()
            const tag = nextTag++
            if (peerState.seen.has(text)) peerState.duplicates++
            peerState.seen.add(text)
            unsettled.set(tag, text)
            peerState.maxUnsettled = Math.max(peerState.maxUnsettled, unsettled.size)
            if (random() < 0.3) yield* Effect.sleep(Math.floor(random() * 3))
            if (peerState.settling && (unsettled.size >= window || random() < 0.4)) yield* settleSome
            continue
          }
          if (frame._tag !== "MethodFrame") continue
          const m = frame.method
          if (m._tag === "channel.close") {
            yield* client.sendMethod(id, Methods.channelCloseOk())
          } else if (m._tag === "connection.close") {
            yield* client.sendMethod(0, Methods.connectionCloseOk())
            yield* Deferred.succeed(peerDone, undefined)
            return
          }
        }
      })
    )
    const result = yield* Effect.scoped(Effect.gen(function*() {
      const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`, {
        heartbeat: 0,
        closeTimeout: 300
      })
      const channel = yield* AmqpChannel.make(connection, { maxOutstandingConfirms: window })
      yield* channel.confirmSelect
      const admitted = new Map<string, Effect.Effect<void, unknown>>()
      const givenUp = new Set<string>()
      const publisher = (f: number) =>
        Effect.gen(function*() {
          const r = rng(seed * 31 + f)
          for (let i = 0; i < 60; i++) {
            const name = `f${f}-m${i}`
            const publish = channel.publishAsync("", "q", Buffer.from(name))
            const choice = r()
            const exit = yield* Effect.exit(
              choice < 0.3 ? publish.pipe(Effect.timeout(`${Math.floor(r() * 3)} millis`)) : publish
            )
            if (Exit.isSuccess(exit)) admitted.set(name, exit.value)
            else givenUp.add(name)
            // Sometimes wait for this one's confirm, and give up on the wait after 1 ms.
            if (Exit.isSuccess(exit) && r() < 0.2) yield* Effect.exit(exit.value.pipe(Effect.timeout("1 millis")))
          }
        })
      const fibers = yield* Effect.forEach([0, 1, 2, 3], (f) => Effect.forkChild(publisher(f)))
      yield* Effect.forEach(fibers, (f) => Fiber.join(f)).pipe(Effect.timeout("60 seconds"))
      const outcomes = new Map<string, string>()
      for (const [name, wait] of admitted) {
        const exit = yield* Effect.exit(wait.pipe(Effect.timeout("5 seconds")))
        outcomes.set(name, Exit.isSuccess(exit) ? "ack" : nackedOrElse(exit))
      }
      // The window is whole: `window` more are admitted while the peer settles nothing, which a
      // slot lost on the way would not allow.
      peerState.settling = false
      const again = []
      for (let i = 0; i < window; i++) {
        again.push(
          yield* channel.publishAsync("", "q", Buffer.from(`final${i}`)).pipe(Effect.timeout("5 seconds"), Effect.exit)
        )
      }
      return { outcomes, givenUp, again: again.map(Exit.isSuccess) }
    }))
    yield* Deferred.await(peerDone).pipe(Effect.timeout("5 seconds"))
    assert.isAtMost(peerState.maxUnsettled, window, "peer saw more unsettled publishes than the window")
    assert.strictEqual(peerState.duplicates, 0)
    const expected = new Map<string, string>()
    for (const [name] of result.outcomes) expected.set(name, peerState.byBody.get(name) ?? "never settled")
    assert.deepStrictEqual([...result.outcomes.entries()], [...expected.entries()])
    for (const name of result.givenUp) assert.isFalse(peerState.seen.has(name), `${name} was given up but sent`)
    assert.deepStrictEqual(result.again, Array.from({ length: window }, () => true))
    assert.strictEqual(peerState.seen.size, result.outcomes.size + window)
    return { admitted: result.outcomes.size, givenUp: result.givenUp.size, max: peerState.maxUnsettled }
  }))

describe("the confirm window under a broker that settles at random", () => {
  for (const [seed, window] of [[1, 2], [2, 3], [3, 1], [4, 5], [5, 2], [6, 3]] as const) {
    it.live(
      `seed ${seed}, window ${window}: bounded, every outcome as settled, nothing given up sent`,
      () =>
        Effect.map(run(seed, window), ({ admitted, givenUp }) => {
          // Both kinds happened: the run exercised giving up as well as settling.
          assert.isAbove(admitted, 0)
          assert.isAbove(givenUp, 0)
        }),
      60_000
    )
  }
})
