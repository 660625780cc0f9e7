/**
 * Wait for a condition on state that callbacks change: the callbacks call `notify`, waiters
 * re-check their condition then. No polling, no sleeps. Internal to the testing package.
 */
import { Effect } from "effect"

export interface Notifier {
  readonly notify: () => void
  /** Resolves with the first defined value of `check`; fails with `onTimeout()` after `timeoutMillis`. */
  readonly until: <A, E>(
    check: () => A | undefined,
    timeoutMillis: number,
    onTimeout: () => E
  ) => Effect.Effect<A, E>
  /** Drop every waiter (they stay pending until interrupted). */
  readonly clear: () => void
}

export const makeNotifier = (): Notifier => {
  const waiters = new Set<() => void>()
  return {
    notify: () => {
      for (const waiter of waiters) waiter()
    },
    until: <A, E>(check: () => A | undefined, timeoutMillis: number, onTimeout: () => E) =>
      Effect.callback<A>((resume) => {
        const run = () => {
          const value = check()
          if (value !== undefined) {
            waiters.delete(run)
            resume(Effect.succeed(value))
          }
        }
        waiters.add(run)
        run()
        return Effect.sync(() => waiters.delete(run))
      }).pipe(Effect.timeoutOrElse({ duration: timeoutMillis, orElse: () => Effect.fail(onTimeout()) })),
    clear: () => waiters.clear()
  }
}
