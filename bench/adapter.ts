/**
 * The one interface every benchmarked client implements, so each scenario is written once.
 *
 * Operations are coarse (a whole publish run, a whole consume run) so that a client's hot loop
 * stays inside its own idiom: an Effect program for effect-amqp, callbacks or promises for the
 * others. Every operation checks its own counts and rejects when they do not add up; a run that
 * measured a broken client is worthless.
 */

/** Where to connect; `tlsCa` is set for amqps:// targets. */
export interface Target {
  readonly url: string
  readonly tlsCa?: string
}

export interface ConsumeOptions {
  readonly prefetch: number
  /** 1 acks each delivery; k > 1 acks with multiple=true every k deliveries and at the last one. */
  readonly ackEvery: number
  /** Every delivered body must have this length. */
  readonly bodySize: number
}

export interface Session {
  /** Passive `queue.declare`: the broker's count of ready messages. */
  readonly messageCount: (queue: string) => Promise<number>
  /** Publishes `count` copies of `body` to the default exchange without confirms, with the client's backpressure. */
  readonly publish: (queue: string, body: Uint8Array, count: number) => Promise<void>
  /** Confirm mode; at most `window` publishes await their ack at a time. Resolves once all are acked. */
  readonly publishConfirmed: (queue: string, body: Uint8Array, count: number, window: number) => Promise<void>
  /** Consumes exactly `count` messages with acks; resolves once the last ack is sent and the consumer is cancelled. */
  readonly consume: (queue: string, count: number, options: ConsumeOptions) => Promise<void>
  /**
   * Consumes `queue` (acking each) and publishes to it one message at a time, the next one as the
   * previous arrives. Returns each publish-to-delivery time in nanoseconds.
   */
  readonly pingPong: (queue: string, body: Uint8Array, count: number) => Promise<Array<number>>
  readonly close: () => Promise<void>
}

export interface BenchClient {
  readonly name: string
  readonly connect: (target: Target) => Promise<Session>
}

/** Fails loudly: the run stops and says which count was wrong. */
export const check = (ok: boolean, message: string): void => {
  if (!ok) throw new Error(`count check failed: ${message}`)
}

/** The body every client publishes: a recognisable pattern, not zeroes. */
export const makeBody = (size: number): Buffer => {
  const body = Buffer.allocUnsafe(size)
  for (let i = 0; i < size; i++) body[i] = 97 + (i % 26)
  return body
}

export interface Deferred<A> {
  readonly promise: Promise<A>
  readonly resolve: (a: A) => void
  readonly reject: (error: Error) => void
}

/** A promise with its resolvers; an early rejection is held, not reported as unhandled. */
export const deferred = <A = void>(): Deferred<A> => {
  let resolve!: (a: A) => void
  let reject!: (error: Error) => void
  const promise = new Promise<A>((res, rej) => {
    resolve = res
    reject = rej
  })
  promise.catch(() => undefined)
  return { promise, resolve, reject }
}

/**
 * Starts `count` promise-returning operations with at most `window` unsettled at a time; resolves
 * with the number that succeeded (all of them) or rejects with the first failure.
 */
export const inWindow = (count: number, window: number, start: () => Promise<unknown>): Promise<number> =>
  new Promise((resolve, reject) => {
    let started = 0
    let settled = 0
    let failed = false
    const onFailure = (error: unknown) => {
      failed = true
      reject(error)
    }
    const onSuccess = () => {
      settled++
      if (settled === count) resolve(settled)
      else if (!failed) next()
    }
    const next = () => {
      while (started < count && started - settled < window) {
        started++
        start().then(onSuccess, onFailure)
      }
    }
    if (count === 0) resolve(0)
    else next()
  })

/** Publishes without confirms that return a promise (written to the socket) keep this many in flight. */
export const UNCONFIRMED_WINDOW = 1000

/** `url` with a query parameter added. */
export const withQuery = (url: string, key: string, value: string): string => {
  const u = new URL(url)
  u.searchParams.set(key, value)
  return u.toString()
}
