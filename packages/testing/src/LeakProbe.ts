/**
 * Before/after snapshots of what a test may leak: the process's active handles and requests by
 * type (`process.getActiveResourcesInfo()`: TCPSocketWrap, TLSWrap, Timeout, ...), fibers counted
 * in `LiveFibers`, and, when given a broker node, its AMQP connections.
 *
 * The test runner holds handles of its own, so only growth counts: `assertNoLeaks` polls (bounded)
 * until nothing is above the `before` snapshot, and otherwise fails with a diff. It cannot tell
 * whose handle a new one is: take the snapshots around the code under test, nothing else running.
 *
 * @since 0.1.0
 */
import { Data, Effect } from "effect"
import type * as BrokerNode from "./BrokerNode.ts"
import * as LiveFibers from "./LiveFibers.ts"

/**
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  /** Active handles and requests by type. */
  readonly resources: Readonly<Record<string, number>>
  /** `LiveFibers` by label. */
  readonly fibers: Readonly<Record<string, number>>
  /** AMQP connections on the broker node, when one was given. */
  readonly brokerConnections: ReadonlyArray<string> | undefined
}

/**
 * @since 0.1.0
 * @category errors
 */
export class LeakError extends Data.TaggedError("LeakError")<{
  readonly message: string
  readonly leaks: ReadonlyArray<string>
  readonly before: Snapshot
  readonly after: Snapshot
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Also count this node's connections. */
  readonly broker?: Pick<BrokerNode.Control, "listConnections">
  /** How long to wait for things to close. Default 5 s. */
  readonly timeoutMillis?: number
  /** Resource types to leave out, e.g. ["Timeout"]. */
  readonly ignore?: ReadonlyArray<string>
}

const countResources = (): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1
  return counts
}

/**
 * @since 0.1.0
 * @category snapshots
 */
export const snapshot = (
  broker?: Pick<BrokerNode.Control, "listConnections">
): Effect.Effect<Snapshot, BrokerNode.BrokerNodeError> =>
  Effect.gen(function*() {
    // A timer whose callback resumed us still counts as active until this turn ends: count in a fresh one.
    yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    // Local handles first: the `rabbitmqctl` child that lists the broker's connections would
    // otherwise be counted while it is still closing.
    const resources = countResources()
    const fibers = LiveFibers.byLabel()
    const brokerConnections = broker === undefined
      ? undefined
      : (yield* broker.listConnections).map((c) => c.clientProvidedName ?? c.name)
    return { resources, fibers, brokerConnections }
  })

/**
 * What grew from `before` to `after`, one line per kind, e.g. "TCPSocketWrap: 1 -> 2".
 *
 * @since 0.1.0
 * @category snapshots
 */
export const diff = (before: Snapshot, after: Snapshot, ignore: ReadonlyArray<string> = []): Array<string> => {
  const grown: Array<string> = []
  const compare = (kind: string, was: Readonly<Record<string, number>>, now: Readonly<Record<string, number>>) => {
    for (const [key, count] of Object.entries(now)) {
      if (ignore.includes(key)) continue
      const previous = was[key] ?? 0
      if (count > previous) grown.push(`${kind}${key}: ${previous} -> ${count}`)
    }
  }
  compare("", before.resources, after.resources)
  compare("fiber ", before.fibers, after.fibers)
  if (before.brokerConnections !== undefined && after.brokerConnections !== undefined) {
    const extra = after.brokerConnections.filter((name) => !before.brokerConnections!.includes(name))
    if (after.brokerConnections.length > before.brokerConnections.length) {
      grown.push(
        `broker connections: ${before.brokerConnections.length} -> ${after.brokerConnections.length} (${
          extra.join(", ")
        })`
      )
    }
  }
  return grown
}

/**
 * Poll until nothing has grown since `before`, for at most `timeoutMillis`; then fail with the
 * diff.
 *
 * @since 0.1.0
 * @category assertions
 */
export const assertNoLeaks = (
  before: Snapshot,
  options: Options = {}
): Effect.Effect<Snapshot, LeakError | BrokerNode.BrokerNodeError> =>
  Effect.gen(function*() {
    const deadline = Date.now() + (options.timeoutMillis ?? 5_000)
    let interval = 10
    while (true) {
      const after = yield* snapshot(options.broker)
      const leaks = diff(before, after, options.ignore)
      if (leaks.length === 0) return after
      if (Date.now() >= deadline) {
        return yield* new LeakError({ message: `leaked:\n  ${leaks.join("\n  ")}`, leaks, before, after })
      }
      yield* Effect.sleep(interval)
      interval = Math.min(interval * 2, options.broker === undefined ? 100 : 500)
    }
  })
