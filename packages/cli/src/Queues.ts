/**
 * The queues the commands make for themselves: a unique name, a declaration that is undone when
 * the scope closes (also on failure or interruption), and a wait until a queue's consumers are in
 * place. Each operation runs on a channel of its own on the connection given, so a channel error
 * (a 404, a 406) spoils nothing else.
 *
 * @since 0.1.0
 */
import { AmqpChannel, type AmqpConnection } from "@effect-amqp/client"
import { Console, Effect, type Scope } from "effect"
import { CommandFailed } from "./Report.ts"

/**
 * `effect-amqp-<what>-<time>-<pid>-<random>`: unique enough for a shared broker.
 *
 * @since 0.1.0
 * @category constructors
 */
export const uniqueName = (what: string): string =>
  `effect-amqp-${what}-${Date.now().toString(36)}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`

/**
 * Runs `f` on a fresh channel of `connection` that closes afterwards.
 *
 * @since 0.1.0
 * @category channels
 */
export const withChannel = <A, E>(
  connection: AmqpConnection.AmqpConnection,
  f: (channel: AmqpChannel.AmqpChannel) => Effect.Effect<A, E>
): Effect.Effect<A, E | AmqpChannel.ChannelError> => Effect.scoped(Effect.flatMap(AmqpChannel.make(connection), f))

/**
 * Declares `queue` and deletes it when the scope closes. A failed delete is reported on stderr and
 * otherwise ignored.
 *
 * @since 0.1.0
 * @category constructors
 */
export const temporary = (
  connection: AmqpConnection.AmqpConnection,
  queue: string,
  options: AmqpChannel.QueueDeclareOptions = {}
): Effect.Effect<AmqpChannel.QueueDeclareOk, AmqpChannel.ChannelError, Scope.Scope> =>
  Effect.acquireRelease(
    withChannel(connection, (channel) => channel.queueDeclare(queue, options)),
    () =>
      withChannel(connection, (channel) => channel.queueDelete(queue)).pipe(
        Effect.tapError((error) => Console.error(`effect-amqp: could not delete queue ${queue}: ${error.message}`)),
        Effect.ignore
      )
  )

/**
 * Waits, polling with passive declares, until `queue` has at least `count` consumers; fails after
 * 10 s. Streams always report 0 consumers, so this is for classic and quorum queues.
 *
 * @since 0.1.0
 * @category consumers
 */
export const awaitConsumers = (
  connection: AmqpConnection.AmqpConnection,
  queue: string,
  count: number
): Effect.Effect<void, AmqpChannel.ChannelError | CommandFailed> =>
  withChannel(connection, (channel) =>
    Effect.gen(function*() {
      const deadline = performance.now() + 10_000
      while ((yield* channel.queueDeclare(queue, { passive: true })).consumerCount < count) {
        if (performance.now() > deadline) {
          return yield* new CommandFailed({ message: `the ${count} consumers of ${queue} did not start within 10 s` })
        }
        yield* Effect.sleep("10 millis")
      }
    }))
