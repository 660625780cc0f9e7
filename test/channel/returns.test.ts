/**
 * `returns`: unroutable mandatory publishes come back on the channel's returns stream with their
 * body and properties, outside confirm mode (where nothing else would hear of them) and in it
 * (where the publish also fails as `Returned`); the stream ends when its channel does.
 */
import { AmqpChannel, AmqpPublishError, Returned } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Scope, Stream } from "effect"
import { onSharedBroker, randomBytes, sha256, unique } from "../support/channelKit.ts"

/** Collects the channel's next `count` returns in a fiber that has subscribed before this returns. */
const collectReturns = (channel: AmqpChannel.AmqpChannel, count: number) =>
  channel.returns.pipe(Stream.take(count), Stream.runCollect, Effect.forkScoped({ startImmediately: true }))

const NO_ROUTE = { replyCode: 312, replyText: "NO_ROUTE" }

describe("returned messages", () => {
  it.live("outside confirm mode, come back on returns with their body and properties", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        const queue = unique("q-returns-routable")
        yield* channel.queueDeclare(queue, { autoDelete: true })
        const fanout = unique("x-returns-unbound")
        yield* channel.exchangeDeclare(fanout, "fanout", { autoDelete: true })
        const nowhere = unique("no-such-queue")
        const bodies = [randomBytes(100), randomBytes(20_000), randomBytes(10), randomBytes(3)]
        const returns = yield* collectReturns(channel, 2)

        // Only the first and the last are mandatory and unroutable.
        yield* channel.publish("", nowhere, bodies[0]!, {
          mandatory: true,
          properties: { messageId: "first", headers: { attempt: 1 } }
        })
        yield* channel.publish("", nowhere, bodies[1]!)
        yield* channel.publish("", queue, bodies[2]!, { mandatory: true })
        yield* channel.publish(fanout, "any", bodies[3]!, { mandatory: true, properties: { messageId: "last" } })

        const got = yield* Fiber.join(returns).pipe(Effect.timeout("5 seconds"))
        assert.deepStrictEqual(
          got.map(({ body, properties, ...rest }) => ({ ...rest, body: sha256(body), id: properties.messageId })),
          [
            { ...NO_ROUTE, exchange: "", routingKey: nowhere, body: sha256(bodies[0]!), id: "first" },
            { ...NO_ROUTE, exchange: fanout, routingKey: "any", body: sha256(bodies[3]!), id: "last" }
          ]
        )
        assert.deepStrictEqual(got[0]!.properties.headers, { attempt: 1 })
        // The routable one arrived.
        assert.strictEqual((yield* channel.queueDeclare(queue, { passive: true })).messageCount, 1)
      })
    ))

  it.live("in confirm mode, fail the publish as Returned and come back on returns too", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const nowhere = unique("no-such-queue")
        const body = randomBytes(64)
        const returns = yield* collectReturns(channel, 1)

        const error = yield* Effect.flip(channel.publish("", nowhere, body, { mandatory: true }))
        assert.deepStrictEqual(
          error,
          new AmqpPublishError({ reason: new Returned({ ...NO_ROUTE, exchange: "", routingKey: nowhere }) })
        )
        const [returned] = yield* Fiber.join(returns).pipe(Effect.timeout("5 seconds"))
        assert.deepStrictEqual({ ...returned!, body: sha256(returned!.body) }, {
          ...NO_ROUTE,
          exchange: "",
          routingKey: nowhere,
          properties: {},
          body: sha256(body)
        })
      })
    ))

  it.live("end when the channel closes, and a stream started after that ends at once", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const scope = yield* Scope.make()
        const channel = yield* Scope.provide(AmqpChannel.make(connection), scope)
        const nowhere = unique("no-such-queue")
        const returns = yield* channel.returns.pipe(Stream.runCollect, Effect.forkScoped({ startImmediately: true }))
        yield* channel.publish("", nowhere, randomBytes(8), { mandatory: true })
        // A method behind the publish: its reply comes after the broker has sent the return.
        yield* channel.queueDeclare("", { exclusive: true })

        yield* Scope.close(scope, Exit.void)
        const got = yield* Fiber.join(returns).pipe(Effect.timeout("5 seconds"))
        assert.deepStrictEqual(got.map((r) => r.routingKey), [nowhere])
        const after = yield* channel.returns.pipe(Stream.runCollect, Effect.timeout("1 second"))
        assert.strictEqual(after.length, 0)
      })
    ))
})
