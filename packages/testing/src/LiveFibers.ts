/**
 * A process-wide count of long-lived fibers (reader, writer, heartbeat, consumer loops...), kept
 * by label, so a leak probe can see fibers that outlive their connection.
 *
 * The registry is a `Map<string, number>` stored on `globalThis` under
 * `Symbol.for("@effect-amqp/live-fibers")`. Code that must not depend on this package (the
 * client) can keep the count with three lines of its own:
 *
 *   const live = ((globalThis as any)[Symbol.for("@effect-amqp/live-fibers")] ??= new Map())
 *   live.set(label, (live.get(label) ?? 0) + 1)   // when the fiber starts
 *   live.set(label, live.get(label) - 1)          // in its finalizer
 *
 * or wrap the fiber's effect with `track(label)`. Counting costs two map updates per fiber.
 *
 * @since 0.1.0
 */
import { Effect } from "effect"

/**
 * @since 0.1.0
 * @category constants
 */
export const registryKey: unique symbol = Symbol.for("@effect-amqp/live-fibers")

const registry = (): Map<string, number> => {
  const holder = globalThis as { [registryKey]?: Map<string, number> }
  return (holder[registryKey] ??= new Map())
}

/**
 * @since 0.1.0
 * @category counting
 */
export const increment = (label: string): void => {
  const live = registry()
  live.set(label, (live.get(label) ?? 0) + 1)
}

/**
 * @since 0.1.0
 * @category counting
 */
export const decrement = (label: string): void => {
  const live = registry()
  live.set(label, (live.get(label) ?? 0) - 1)
}

/**
 * Count `effect` as a live fiber labelled `label` while it runs (until it ends in any way).
 *
 * @since 0.1.0
 * @category counting
 */
export const track = (label: string) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.acquireUseRelease(
    Effect.sync(() => increment(label)),
    () => effect,
    () => Effect.sync(() => decrement(label))
  )

/**
 * Live fibers by label (labels at zero included).
 *
 * @since 0.1.0
 * @category reading
 */
export const byLabel = (): Readonly<Record<string, number>> => Object.fromEntries(registry())

/**
 * @since 0.1.0
 * @category reading
 */
export const total = (): number => {
  let sum = 0
  for (const count of registry().values()) sum += count
  return sum
}
