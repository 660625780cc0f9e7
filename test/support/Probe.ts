/**
 * The leak check every end-to-end test ends with, and connection names that let it count only the
 * broker connections of one test file (other files share the run's broker node at the same time).
 */
import { type BrokerNode, LeakProbe } from "@effect-amqp/testing"
import { Effect } from "effect"
import type * as Scope from "effect/Scope"

export { LeakProbe }

type Broker = Pick<BrokerNode.Control, "listConnections">

/** Names connections `effect-amqp-test/<file>/<label>/<n>`, and sees only those on a broker. */
export class Names {
  readonly prefix: string
  private count = 0

  constructor(file: string) {
    this.prefix = `effect-amqp-test/${file}/${process.pid}/`
  }

  next(label: string): string {
    return `${this.prefix}${label}/${++this.count}`
  }

  /** The broker's connections named by this file, as the leak probe should count them. */
  own(broker: Broker): Broker {
    return {
      listConnections: broker.listConnections.pipe(
        Effect.map((all) => all.filter((c) => c.clientProvidedName?.startsWith(this.prefix) === true))
      )
    }
  }
}

/**
 * Runs `body` in its own scope between two leak snapshots: afterwards no socket, timer, live
 * fiber or (with `broker`) broker connection of this file may remain.
 */
export const leakChecked = <A, E, R>(
  body: Effect.Effect<A, E, R>,
  broker?: Broker
): Effect.Effect<
  A,
  E | LeakProbe.LeakError | BrokerNode.BrokerNodeError,
  Exclude<R, Scope.Scope>
> =>
  Effect.gen(function*() {
    const before = yield* LeakProbe.snapshot(broker)
    const result = yield* Effect.scoped(body)
    yield* LeakProbe.assertNoLeaks(before, broker === undefined ? {} : { broker })
    return result
  })
