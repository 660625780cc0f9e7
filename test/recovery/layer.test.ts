/**
 * `AmqpClient.layer`: a service built from layers gets the recovering client, and the client
 * closes with the layer's scope, leaving no socket, fiber or broker connection behind.
 */
import { AmqpClient, type AmqpConnectionError } from "@effect-amqp/client"
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option } from "effect"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("recovery-layer")

/** A service of the application's, built on the client. */
class Greetings extends Context.Service<Greetings, {
  readonly send: (text: string) => Effect.Effect<string, unknown>
}>()("test/Greetings") {}

const greetingsLayer = Layer.effect(
  Greetings,
  Effect.gen(function*() {
    const client = yield* AmqpClient.AmqpClient
    const channel = yield* client.channel()
    const { queue } = yield* channel.queueDeclare("", { exclusive: true })
    yield* channel.confirmSelect
    return {
      send: (text: string) =>
        Effect.gen(function*() {
          yield* channel.publish("", queue, Buffer.from(text))
          const got = yield* channel.get(queue, { noAck: true })
          return Option.match(got, { onNone: () => "", onSome: (d) => Buffer.from(d.body).toString() })
        })
    }
  })
)

describe("AmqpClient.layer", () => {
  it.live("provides the client to services built on it, and closes it with the layer", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const connectionName = names.next("layer")
      yield* leakChecked(
        Effect.gen(function*() {
          const program = Effect.gen(function*() {
            const greetings = yield* Greetings
            return yield* greetings.send("hello")
          })
          const clientLayer = AmqpClient.layer({ host: "127.0.0.1", port: broker.amqpPort, connectionName })
          const echoed = yield* program.pipe(Effect.provide(greetingsLayer.pipe(Layer.provide(clientLayer))))
          assert.strictEqual(echoed, "hello")
          assert.deepStrictEqual(
            (yield* broker.listConnections).filter((c) => c.clientProvidedName === connectionName),
            []
          )
        }),
        names.own(broker)
      )
    }))

  it.live("fails with the typed error of a refused first connect", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const client = Effect.gen(function*() {
        return yield* AmqpClient.AmqpClient
      })
      const layer = AmqpClient.layer({ host: "127.0.0.1", port: broker.amqpPort, password: "wrong" })
      const error = yield* Effect.flip(Effect.provide(client, layer))
      assert.strictEqual(error._tag, "AmqpConnectionError")
      assert.strictEqual((error as AmqpConnectionError).replyCode, 403)
      assert.isTrue((error as AmqpConnectionError).isPermanent)
    }))
})
