/**
 * Returned messages: a mandatory publish the broker could not route comes back as `basic.return`
 * with the message itself. Each channel hands every return to the listeners registered with it,
 * in confirm mode or not; `returnsStream` turns a set of listeners into a stream per subscriber.
 */
import type { BasicProperties } from "@effect-amqp/protocol"
import type * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"

/**
 * A message the broker sent back because it could not route it (a mandatory publish).
 *
 * @since 0.1.0
 * @category models
 */
export interface ReturnedMessage {
  /** 312 NO_ROUTE, or 313 NO_CONSUMERS. */
  readonly replyCode: number
  readonly replyText: string
  readonly exchange: string
  readonly routingKey: string
  readonly properties: BasicProperties
  readonly body: Uint8Array
}

/** Where a channel's returns go: `returned` for each, `ended` once when the channel has ended. */
export interface ReturnListener {
  readonly returned: (message: ReturnedMessage) => void
  readonly ended: () => void
}

/** The listeners of one channel (or of a recovering channel across its incarnations). */
export class ReturnListeners {
  private readonly listeners = new Set<ReturnListener>()
  private over = false

  add(listener: ReturnListener): void {
    if (this.over) listener.ended()
    else this.listeners.add(listener)
  }

  remove(listener: ReturnListener): void {
    this.listeners.delete(listener)
  }

  returned(message: ReturnedMessage): void {
    for (const listener of this.listeners) listener.returned(message)
  }

  /** The channel has ended for good: every stream ends, and later ones end at once. */
  end(): void {
    this.over = true
    for (const listener of this.listeners) listener.ended()
    this.listeners.clear()
  }
}

/**
 * The returns that arrive while the stream runs, in order; it ends when the channel has ended.
 * Returns that arrive while no stream runs are not kept.
 */
export const returnsStream = (listeners: ReturnListeners): Stream.Stream<ReturnedMessage> =>
  Stream.unwrap(Effect.gen(function*() {
    const queue = yield* Queue.unbounded<ReturnedMessage, Cause.Done>()
    const listener: ReturnListener = {
      returned: (message) => Queue.offerUnsafe(queue, message),
      ended: () => Queue.endUnsafe(queue)
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => listeners.add(listener)),
      () => Effect.sync(() => listeners.remove(listener))
    )
    return Stream.fromQueue(queue)
  }))
