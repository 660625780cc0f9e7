/**
 * The messages the command line tool publishes: deterministic bodies that carry their id, so that a
 * consumer (or the demo) can tell which message it got and whether the bytes arrived intact.
 *
 * A body of `size` bytes is the first `size` bytes of `"<id>:"` followed by an endless run of the
 * alphabet that starts at letter `id mod 26`. Bodies shorter than their id prefix carry no id.
 * This module does no I/O.
 *
 * @since 0.1.0
 */
import type { BasicProperties } from "@effect-amqp/protocol"
import { Effect } from "effect"

const alphabet = "abcdefghijklmnopqrstuvwxyz"
const colon = 0x3a

/**
 * The body of message `id`, `size` bytes long.
 *
 * @since 0.1.0
 * @category constructors
 */
export const body = (id: number, size: number): Uint8Array => make(id, size)

const make = (id: number, size: number): Buffer => {
  const bytes = Buffer.alloc(size)
  const prefix = `${id}:`
  const written = bytes.write(prefix, 0, "latin1")
  for (let i = written; i < size; i++) bytes[i] = alphabet.charCodeAt((id + i) % 26)
  return bytes
}

/**
 * The id at the start of a body made by `body`, or undefined when the body does not start with
 * `"<digits>:"`.
 *
 * @since 0.1.0
 * @category decoding
 */
export const idOf = (bytes: Uint8Array): number | undefined => {
  let id = 0
  for (let i = 0; i < bytes.length && i < 16; i++) {
    const byte = bytes[i]!
    if (byte === colon) return i === 0 ? undefined : id
    if (byte < 0x30 || byte > 0x39) return undefined
    id = id * 10 + (byte - 0x30)
  }
  return undefined
}

/**
 * True when `bytes` is exactly the body of message `id` of that length.
 *
 * @since 0.1.0
 * @category decoding
 */
export const isIntact = (id: number, bytes: Uint8Array): boolean => make(id, bytes.length).equals(bytes)

/**
 * The properties published with message `id`: transient, a message id and two headers.
 *
 * @since 0.1.0
 * @category constructors
 */
export const properties = (id: number): BasicProperties => ({
  contentType: "text/plain",
  deliveryMode: 1,
  messageId: String(id),
  appId: "effect-amqp",
  headers: { "x-index": id, "x-source": "effect-amqp" }
})

/**
 * The ids `0` to `count - 1`, lazily.
 *
 * @since 0.1.0
 * @category constructors
 */
export const ids = (count: number): Iterable<number> => ({
  *[Symbol.iterator]() {
    for (let id = 0; id < count; id++) yield id
  }
})

/**
 * Runs `f` for the ids `0` to `count - 1`, started in order, at most `concurrency` at once. The ids
 * are taken one at a time by that many fibers, so a count of millions starts at once and holds no
 * list of them (`Effect.forEach` with a concurrency collects its input first).
 *
 * @since 0.1.0
 * @category combinators
 */
export const forEachId = <E, R>(
  count: number,
  concurrency: number,
  f: (id: number) => Effect.Effect<void, E, R>
): Effect.Effect<void, E, R> => {
  let next = 0
  const worker = Effect.gen(function*() {
    while (next < count) yield* f(next++)
  })
  return Effect.forEach(ids(Math.min(concurrency, count)), () => worker, { concurrency: "unbounded", discard: true })
}
