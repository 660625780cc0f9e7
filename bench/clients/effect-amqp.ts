/**
 * effect-amqp behind the bench interface. Each operation is one Effect program run with
 * `Effect.runPromise`, so the hot loops are written the way a user of the library writes them:
 * a generator loop of `publish`, `publishAsync` for a confirm window (the API the library offers for
 * one: `Effect.forEach` with a concurrency of 1,000 over `publish` costs a fiber per message, about
 * 15 % more CPU here), and `consumeWith`, a handler per delivery as the other clients' consume
 * callbacks are (the consumer `Stream` costs about 2 µs more per delivery). The connection and its
 * default channel live in a `Scope` that `close` closes.
 *
 * A handler that is a generator is written with `Effect.fnUntraced`, as the README advises: an
 * `Effect.gen(function*() {...})` inside the handler makes a new generator function per delivery,
 * which V8 runs about four times slower, and whose garbage outlives young-generation collections
 * (they then took 2-3 ms each instead of 0.3 ms, which showed in the round trip's p99).
 *
 * Effect's modules are imported one by one, as the client itself imports them. The `effect` barrel
 * would load every module of effect, several MiB of RSS that an application pays by its own choice.
 */
import { AmqpChannel, AmqpConnection, type AmqpPublishError } from "@effect-amqp/client"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { type BenchClient, check, type Session } from "../adapter.ts"

const connect = async (target: { readonly url: string; readonly tlsCa?: string }): Promise<Session> => {
  const scope = await Effect.runPromise(Scope.make())
  const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>): Promise<A> =>
    Effect.runPromise(Scope.provide(effect, scope))
  const connection = await run(
    AmqpConnection.fromUrl(target.url, target.tlsCa !== undefined ? { tls: { ca: target.tlsCa } } : {})
  )
  const channel = await run(AmqpChannel.make(connection))

  return {
    messageCount: (queue) => run(Effect.map(channel.queueDeclare(queue, { passive: true }), (ok) => ok.messageCount)),

    publish: (queue, body, count) =>
      run(Effect.gen(function*() {
        for (let i = 0; i < count; i++) yield* channel.publish("", queue, body)
      })),

    publishConfirmed: (queue, body, count, window) =>
      run(Effect.scoped(Effect.gen(function*() {
        const confirming = yield* AmqpChannel.make(connection, { maxOutstandingConfirms: window })
        yield* confirming.confirmSelect
        let acked = 0
        const publishOne = Effect.map(confirming.publish("", queue, body), () => {
          acked++
        })
        if (window === 1) {
          for (let i = 0; i < count; i++) yield* publishOne
        } else {
          // One fiber keeps the window in flight: `publishAsync` returns once the message is
          // written, with the wait for its confirm, and the oldest wait is taken when the window
          // is full.
          const waits: Array<Effect.Effect<void, AmqpPublishError>> = Array.from({ length: window }, () => Effect.void)
          for (let i = 0; i < count; i++) {
            if (i >= window) {
              yield* waits[i % window]!
              acked++
            }
            waits[i % window] = yield* confirming.publishAsync("", queue, body)
          }
          for (let i = Math.max(0, count - window); i < count; i++) {
            yield* waits[i % window]!
            acked++
          }
        }
        check(acked === count, `effect-amqp confirmed ${acked} of ${count}`)
      }))),

    consume: (queue, count, options) =>
      run(Effect.gen(function*() {
        yield* channel.qos(options.prefetch)
        let received = 0
        const done = Deferred.makeUnsafe<void>()
        const handle = (delivery: AmqpChannel.Delivery) => {
          received++
          check(delivery.body.length === options.bodySize, `body of ${delivery.body.length} bytes`)
          if (received === count) {
            return Effect.andThen(delivery.ack({ multiple: true }), Deferred.done(done, Exit.void))
          }
          if (options.ackEvery === 1) return delivery.ack()
          if (received % options.ackEvery === 0) return delivery.ack({ multiple: true })
          return Effect.void
        }
        yield* Effect.raceFirst(channel.consumeWith(queue, handle), Deferred.await(done))
        check(received === count, `effect-amqp consumed ${received} of ${count}`)
      })),

    pingPong: (queue, body, count) =>
      run(Effect.gen(function*() {
        const times: Array<number> = []
        const done = Deferred.makeUnsafe<void>()
        let sentAt = process.hrtime.bigint()
        yield* channel.publish("", queue, body)
        const handle = Effect.fnUntraced(function*(delivery: AmqpChannel.Delivery) {
          times.push(Number(process.hrtime.bigint() - sentAt))
          check(delivery.body.length === body.length, `body of ${delivery.body.length} bytes`)
          yield* delivery.ack()
          if (times.length === count) {
            yield* Deferred.done(done, Exit.void)
          } else {
            sentAt = process.hrtime.bigint()
            yield* channel.publish("", queue, body)
          }
        })
        yield* Effect.raceFirst(channel.consumeWith(queue, handle), Deferred.await(done))
        check(times.length === count, `effect-amqp got ${times.length} of ${count} round trips`)
        return times
      })),

    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

export const client: BenchClient = { name: "effect-amqp", connect }
