/**
 * Helpers for the recovery tests: connection options for a loopback port, a log of a client's
 * lifecycle events that a test can wait on, a consumer whose deliveries land in a queue, a
 * publish-and-consume round trip on a client channel, and a frame that runs a test against the
 * block's node through a fresh fault proxy and ends it with the leak probe.
 *
 * Nothing here points anywhere but the port it is given on 127.0.0.1.
 */
import { type AmqpChannel, AmqpClient, ConnectionConfig } from "@effect-amqp/client"
import { BrokerNode, FaultProxy } from "@effect-amqp/testing"
import { LeakProbe } from "@effect-amqp/testing"
import { assert } from "@effect/vitest"
import { Cause, Effect, PubSub, Queue, type Scope, Stream } from "effect"
import { randomUUID } from "node:crypto"

export type LifecycleEvent = AmqpClient.LifecycleEvent
export type Tag = LifecycleEvent["_tag"]
export type EventOf<T extends Tag> = Extract<LifecycleEvent, { readonly _tag: T }>

/** Client options for a port on 127.0.0.1, with a name unique to this run. */
export const options = (
  port: number,
  label: string,
  overrides: ConnectionConfig.ConnectionOptionsInput = {}
): Effect.Effect<ConnectionConfig.ConnectionOptions> =>
  ConnectionConfig.make({
    host: "127.0.0.1",
    port,
    connectionName: `recovery-${label}-${randomUUID().slice(0, 8)}`,
    heartbeat: 10,
    connectionTimeout: 2_000,
    handshakeTimeout: 5_000,
    closeTimeout: 2_000,
    ...overrides
  }).pipe(Effect.orDie)

/** Every lifecycle event of a client from the moment the log was made, with a way to wait for one. */
export interface EventLog {
  readonly events: ReadonlyArray<LifecycleEvent>
  /** The first event with `tag` at or after index `from`; fails after `timeout` ms listing what came. */
  readonly next: <T extends Tag>(
    tag: T,
    from?: number,
    timeout?: number
  ) => Effect.Effect<{ readonly event: EventOf<T>; readonly index: number }, Error>
  /** Events with `tag` from index `from` on. */
  readonly all: <T extends Tag>(tag: T, from?: number) => ReadonlyArray<EventOf<T>>
}

const describeEvent = (event: LifecycleEvent): string => {
  switch (event._tag) {
    case "Disconnected":
    case "GaveUp":
      return `${event._tag}(${event.cause.reason._tag})`
    case "QueueRenamed":
      return `${event._tag}(${event.from} -> ${event.to})`
    case "RecoveryStepFailed":
      return `${event._tag}(${event.step}: ${event.error._tag})`
    case "Connecting":
      return `${event._tag}(${event.port} #${event.attempt})`
    case "AttemptFailed":
      return `${event._tag}(${event.port} #${event.attempt}: ${event.error.reason._tag})`
    default:
      return event._tag
  }
}

/** Subscribes at once (no event is missed) and records into an array until the scope closes. */
export const eventLog = (client: AmqpClient.AmqpClient): Effect.Effect<EventLog, never, Scope.Scope> =>
  Effect.gen(function*() {
    const events: Array<LifecycleEvent> = []
    const waiters = new Set<() => void>()
    const subscription = yield* client.subscribe
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.flatMap(PubSub.take(subscription), (event) =>
          Effect.sync(() => {
            events.push(event)
            for (const waiter of waiters) waiter()
          }))
      ),
      { startImmediately: true }
    )
    const find = <T extends Tag>(tag: T, from: number) => {
      for (let index = from; index < events.length; index++) {
        const event = events[index]!
        if (event._tag === tag) return { event: event as EventOf<T>, index }
      }
      return undefined
    }
    const next = <T extends Tag>(tag: T, from = 0, timeout = 20_000) =>
      Effect.callback<{ readonly event: EventOf<T>; readonly index: number }>((resume) => {
        const check = () => {
          const found = find(tag, from)
          if (found === undefined) return
          waiters.delete(check)
          resume(Effect.succeed(found))
        }
        waiters.add(check)
        check()
        return Effect.sync(() => waiters.delete(check))
      }).pipe(
        Effect.timeoutOrElse({
          duration: timeout,
          orElse: () =>
            Effect.fail(
              new Error(
                `no ${tag} event from index ${from} within ${timeout} ms; events: ${
                  events.map(describeEvent).join(", ")
                }`
              )
            )
        })
      )
    const all = <T extends Tag>(tag: T, from = 0) =>
      events.slice(from).filter((event): event is EventOf<T> => event._tag === tag)
    return { events, next, all }
  })

/**
 * Consumes `queue` on `channel` (manual acks unless `noAck`) into an unbounded queue, through the
 * consumer stream or, with `via: "handler"`, through `consumeWith`; the consumer's failure fails
 * the queue, so a waiting `take` sees it.
 */
export const consumeInto = (
  channel: AmqpClient.ClientChannel,
  queue: string,
  consumeOptions: AmqpChannel.ConsumeOptions = {},
  via: "stream" | "handler" = "stream"
): Effect.Effect<Queue.Queue<AmqpChannel.Delivery, unknown>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const inbox = yield* Queue.unbounded<AmqpChannel.Delivery, unknown>()
    const deliver = (delivery: AmqpChannel.Delivery) => Queue.offer(inbox, delivery)
    yield* Effect.forkScoped(
      (via === "stream"
        ? channel.consume(queue, consumeOptions).pipe(Stream.runForEach(deliver))
        : channel.consumeWith(queue, deliver, consumeOptions)).pipe(
          Effect.catchCause((cause) => Queue.failCause(inbox, cause)),
          Effect.andThen(Queue.failCause(inbox, Cause.fail(new Error(`the consumer of ${queue} ended`))))
        )
    )
    return inbox
  })

export const text = (body: Uint8Array): string => Buffer.from(body).toString("utf8")

/** Takes the next delivery, failing with a readable error after `timeout` ms. */
export const takeDelivery = (
  inbox: Queue.Queue<AmqpChannel.Delivery, unknown>,
  label: string,
  timeout = 10_000
): Effect.Effect<AmqpChannel.Delivery, unknown> =>
  Queue.take(inbox).pipe(
    Effect.timeoutOrElse({
      duration: timeout,
      orElse: () => Effect.fail(new Error(`no delivery for ${label} within ${timeout} ms`))
    })
  )

/**
 * Publishes a fresh body through `channel` and checks that the consumer behind `inbox` gets exactly
 * it next; acknowledges it. A passive `queue.declare` behind the ack makes sure the broker has
 * processed the ack (a channel handles its methods in order), so a link dropped right after the
 * round trip cannot bring the message back.
 */
export const roundTrip = (
  channel: AmqpClient.ClientChannel,
  inbox: Queue.Queue<AmqpChannel.Delivery, unknown>,
  queue: string,
  exchange: string,
  routingKey: string,
  label: string
): Effect.Effect<void, unknown> =>
  Effect.gen(function*() {
    const body = `${label}-${randomUUID()}`
    yield* channel.publish(exchange, routingKey, Buffer.from(body))
    const delivery = yield* takeDelivery(inbox, label)
    assert.strictEqual(text(delivery.body), body)
    yield* delivery.ack()
    yield* channel.queueDeclare(queue, { passive: true })
  })

/** Waits real time, also under `TestClock` (whose `Effect.sleep` is virtual). */
export const realDelay = (millis: number): Effect.Effect<void> =>
  Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, millis)))

/** What a test run by `probed` gets: the block's node, a fault proxy in front of it, the snapshot. */
export interface Probed {
  readonly node: BrokerNode.BrokerNode
  readonly proxy: FaultProxy.FaultProxy
  readonly before: LeakProbe.Snapshot
}

/**
 * Runs `body` in a scope of its own against the node of the enclosing block, with a fault proxy in
 * front of it; once the scope has closed, nothing may be left over: sockets, timers, client fibers
 * and broker connections as before `body`.
 */
export const probed = <A, E>(
  body: (env: Probed) => Effect.Effect<A, E, Scope.Scope>
): Effect.Effect<A, unknown, BrokerNode.BrokerNode | Scope.Scope> =>
  Effect.gen(function*() {
    const node = yield* BrokerNode.BrokerNode
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: node.amqpPort } })
    const before = yield* LeakProbe.snapshot(node)
    const result = yield* Effect.scoped(body({ node, proxy, before }))
    yield* LeakProbe.assertNoLeaks(before, { broker: node, timeoutMillis: 10_000 })
    return result
  })

/** Options for a client of a scripted peer on `port`: no heartbeats, short closes, user guest. */
export const scriptedPeerOptions = (port: number, password: string) =>
  ConnectionConfig.make({
    host: "127.0.0.1",
    port,
    heartbeat: 0,
    username: "guest",
    password,
    closeTimeout: 300
  })
