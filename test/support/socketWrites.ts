/**
 * Counts the writes a client's socket hands to the system, by wrapping `Net.Socket`'s one entry
 * for single and gathered writes. Counted on the client's own socket (by its local port), so the
 * peer's reads, which TCP may merge, cannot hide a second write.
 */
import { Effect } from "effect"
import * as Net from "node:net"

interface WritableInternals {
  _writeGeneric: (this: Net.Socket, ...args: Array<unknown>) => unknown
}

/** Counts the writes of sockets bound to `localPort()`, for the scope's lifetime. */
export const countWrites = (localPort: () => number | undefined) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const proto = Net.Socket.prototype as unknown as WritableInternals
      const original = proto._writeGeneric
      const counter = { writes: 0, restore: () => (proto._writeGeneric = original) }
      proto._writeGeneric = function(this: Net.Socket, ...args) {
        if (this.localPort === localPort()) counter.writes++
        return original.apply(this, args)
      }
      return counter
    }),
    (counter) => Effect.sync(counter.restore)
  )
