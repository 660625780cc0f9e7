/**
 * A process-wide count of the long-lived fibers the client starts (each connection's heartbeat,
 * each recovering client's supervisor), kept under a global symbol so that leak probes in other
 * packages can read it without depending on the client.
 */
import * as Effect from "effect/Effect"

const key = Symbol.for("@effect-amqp/live-fibers")

type Registry = Map<string, number>

const registry: Registry = ((globalThis as Record<symbol, unknown>)[key] as Registry | undefined) ??
  ((globalThis as Record<symbol, unknown>)[key] = new Map<string, number>()) as Registry

const add = (name: string, delta: number) => {
  const next = (registry.get(name) ?? 0) + delta
  if (next === 0) registry.delete(name)
  else registry.set(name, next)
}

/** Runs `effect` counted as one live fiber of kind `name` until it ends, however it ends. */
export const tracked = <A, E, R>(name: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.acquireUseRelease(
    Effect.sync(() => add(name, 1)),
    () => effect,
    () => Effect.sync(() => add(name, -1))
  )
