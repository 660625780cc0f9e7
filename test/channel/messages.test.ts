/**
 * Messages through a real broker: all 14 basic properties and a header of every field type come
 * back as sent (read both as plain values and with `typedHeaders`), bodies come back byte for byte
 * at every frame boundary, and many fibers publishing large messages on one channel over a small
 * frame_max never interleave their frames.
 */
import { AmqpChannel } from "@effect-amqp/client"
import { type BasicProperties, Decimal, type FieldTable, Typed } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option, Stream } from "effect"
import { confirmingChannel, onSharedBroker, randomBytes, sha256, unique, utf8 } from "../support/channelKit.ts"

const bytes = new Uint8Array([0, 1, 127, 128, 254, 255])
const when = new Date(Date.UTC(2024, 1, 29, 12, 34, 56))

/** One header of every field type; `Typed` where inference would pick another type. */
const headers: FieldTable = {
  t: true,
  b: new Typed("b", -128),
  B: new Typed("B", 255),
  s: new Typed("s", -32768),
  u: new Typed("u", 65535),
  I: -2147483648,
  i: new Typed("i", 4294967295),
  l: -(2n ** 63n),
  f: new Typed("f", -1.5),
  d: Math.PI,
  D: new Decimal(3, -123456),
  S: "grüße ✓",
  A: [1, "two", false, null, [3n]],
  T: when,
  F: { nested: { deeper: "yes" }, n: 7 },
  V: null,
  x: bytes
}

/** The same headers as plain values, as a connection without `typedHeaders` decodes them. */
const plainHeaders = {
  t: true,
  b: -128,
  B: 255,
  s: -32768,
  u: 65535,
  I: -2147483648,
  i: 4294967295,
  l: -(2n ** 63n),
  f: -1.5,
  d: Math.PI,
  D: new Decimal(3, -123456),
  S: "grüße ✓",
  A: [1, "two", false, null, [3]],
  T: when,
  F: { nested: { deeper: "yes" }, n: 7 },
  V: null,
  x: bytes
}

/** The same headers with their types, as a `typedHeaders` connection decodes them. */
const typedHeaders = {
  t: new Typed("t", true),
  b: new Typed("b", -128),
  B: new Typed("B", 255),
  s: new Typed("s", -32768),
  u: new Typed("u", 65535),
  I: new Typed("I", -2147483648),
  i: new Typed("i", 4294967295),
  l: new Typed("l", -(2n ** 63n)),
  f: new Typed("f", -1.5),
  d: new Typed("d", Math.PI),
  D: new Typed("D", new Decimal(3, -123456)),
  S: new Typed("S", "grüße ✓"),
  A: new Typed("A", [
    new Typed("I", 1),
    new Typed("S", "two"),
    new Typed("t", false),
    new Typed("V", null),
    new Typed("A", [new Typed("l", 3n)])
  ]),
  T: new Typed("T", when),
  F: new Typed("F", {
    nested: new Typed("F", { deeper: new Typed("S", "yes") }),
    n: new Typed("I", 7)
  }),
  V: new Typed("V", null),
  x: new Typed("x", bytes)
}

const properties: BasicProperties = {
  contentType: "application/x-test",
  contentEncoding: "identity",
  headers,
  deliveryMode: 2,
  priority: 9,
  correlationId: "correlation-✓",
  replyTo: "reply-queue",
  expiration: "600000",
  messageId: "message-1",
  timestamp: 1_709_210_096,
  type: "test.event",
  // RabbitMQ refuses a user-id that is not the connection's user (406).
  userId: "guest",
  appId: "effect-amqp-tests",
  clusterId: "cluster-7"
}

const withoutHeaders = (given: BasicProperties) =>
  Object.fromEntries(Object.entries(given).filter(([key]) => key !== "headers"))

/** Publishes each body (confirmed) and reads them back in order; returns what came back. */
const roundTrip = (channel: AmqpChannel.AmqpChannel, bodies: ReadonlyArray<Uint8Array>) =>
  Effect.gen(function*() {
    yield* channel.confirmSelect
    const queue = (yield* channel.queueDeclare("", { exclusive: true })).queue
    for (const body of bodies) yield* channel.publish("", queue, body)
    const back: Array<Uint8Array> = []
    for (let i = 0; i < bodies.length; i++) {
      const got = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
      assert.strictEqual(got.messageCount, bodies.length - i - 1)
      back.push(got.body)
    }
    return back
  })

const assertSame = (sent: ReadonlyArray<Uint8Array>, back: ReadonlyArray<Uint8Array>) => {
  assert.deepStrictEqual(back.map((b) => b.length), sent.map((b) => b.length))
  assert.deepStrictEqual(back.map(sha256), sent.map(sha256))
  for (let i = 0; i < sent.length; i++) assert.strictEqual(Buffer.compare(back[i]!, sent[i]!), 0)
}

describe("message properties", () => {
  it.live("round-trips all 14 properties and a header of every field type, typed and plain", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const plain = yield* AmqpChannel.make(yield* connect())
        const typed = yield* AmqpChannel.make(yield* connect({ typedHeaders: true }))
        yield* plain.confirmSelect
        const exchange = unique("ex-props")
        const viaGet = (yield* plain.queueDeclare("", { exclusive: true })).queue
        const viaConsume = (yield* typed.queueDeclare("", { exclusive: true })).queue
        yield* plain.exchangeDeclare(exchange, "fanout", { autoDelete: true })
        yield* plain.queueBind(viaGet, exchange, "")
        yield* typed.queueBind(viaConsume, exchange, "")
        const body = utf8("properties")
        yield* plain.publish(exchange, "rk", body, { properties })

        // The broker keeps the content header it was given and sends those bytes on, so every
        // property and every header type (b B s u i f included) comes back unchanged.
        const got = Option.getOrThrow(yield* plain.get(viaGet, { noAck: true }))
        assert.deepStrictEqual(withoutHeaders(got.properties), withoutHeaders(properties))
        assert.deepStrictEqual(got.properties.headers, plainHeaders)
        assert.deepStrictEqual(Object.keys(got.properties.headers!), Object.keys(headers))
        assert.strictEqual(typeof got.properties.headers!["l"], "bigint")
        assert.instanceOf(got.properties.headers!["x"], Uint8Array)
        assert.isNull(Object.getPrototypeOf(got.properties.headers!["F"]))
        assert.deepStrictEqual([...got.body], [...body])

        const delivered = yield* typed.consume(viaConsume, { noAck: true }).pipe(Stream.take(1), Stream.runCollect)
        const message = delivered[0]!
        assert.strictEqual(message.exchange, exchange)
        assert.strictEqual(message.routingKey, "rk")
        assert.isFalse(message.redelivered)
        assert.deepStrictEqual(withoutHeaders(message.properties), withoutHeaders(properties))
        assert.deepStrictEqual(message.properties.headers, typedHeaders)
      })
    ))

  it.live("sends no properties when none are given and none come back", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const { channel, queue } = yield* confirmingChannel(yield* connect())
        yield* channel.publish("", queue, utf8("bare"))
        const got = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        assert.deepStrictEqual(got.properties, {})
      })
    ))

  it.live("carries a timestamp past 2^53 (nanoseconds, from some other client) exactly, as a bigint", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const { channel, queue } = yield* confirmingChannel(connection)
        const nanos = 1_733_400_000_123_456_789n
        yield* channel.publish("", queue, utf8("late"), { properties: { timestamp: nanos } })
        yield* channel.publish("", queue, utf8("now"), { properties: { timestamp: 1_733_400_000 } })
        const late = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        const now = Option.getOrThrow(yield* channel.get(queue, { noAck: true }))
        assert.strictEqual(late.properties.timestamp, nanos)
        assert.strictEqual(now.properties.timestamp, 1_733_400_000)
        assert.isTrue(yield* connection.isOpen)
      })
    ))
})

describe("message bodies", () => {
  it.live("returns bodies byte for byte around the frame_max-8 boundaries of a frame_max 8192 connection", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect({ frameMax: 8192 })
        assert.strictEqual(connection.tuned.frameMax, 8192)
        const payload = 8192 - 8
        const sizes = [0, 1, payload - 1, payload, payload + 1, 2 * payload, 2 * payload + 1, 1024 * 1024]
        const sent = sizes.map(randomBytes)
        const back = yield* roundTrip(yield* AmqpChannel.make(connection), sent)
        assertSame(sent, back)
      })
    ))

  it.live("returns bodies byte for byte around the boundaries of the default frame_max (131072)", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        assert.strictEqual(connection.tuned.frameMax, 131072)
        const payload = 131072 - 8
        const sizes = [0, 1, payload - 1, payload, payload + 1, 1024 * 1024]
        const sent = sizes.map(randomBytes)
        const back = yield* roundTrip(yield* AmqpChannel.make(connection), sent)
        assertSame(sent, back)
      })
    ))

  it.live("keeps 50 fibers' 40 KiB messages whole on one channel with frame_max 8192", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect({ frameMax: 8192 })
        assert.strictEqual(connection.tuned.frameMax, 8192)
        const channel = yield* AmqpChannel.make(connection)
        const queue = (yield* channel.queueDeclare("", { exclusive: true })).queue
        const fibers = 50
        const perFiber = 4
        const expected = new Map<string, string>()
        const messages = Array.from({ length: fibers }, (_, fiber) =>
          Array.from({ length: perFiber }, (__, n) => {
            const body = randomBytes(40 * 1024)
            const messageId = `${fiber}-${n}`
            expected.set(messageId, sha256(body))
            return { messageId, body }
          }))
        // Not in confirm mode: each publish returns once its frames are handed to the socket.
        yield* Effect.forEach(
          messages,
          (mine) =>
            Effect.forEach(
              mine,
              ({ body, messageId }) => channel.publish("", queue, body, { properties: { messageId } }),
              { discard: true }
            ),
          { concurrency: "unbounded", discard: true }
        )
        const received = yield* AmqpChannel.make(connection).pipe(
          Effect.flatMap((consumer) =>
            consumer.consume(queue, { noAck: true }).pipe(Stream.take(fibers * perFiber), Stream.runCollect)
          )
        )
        const seen = new Map<string, string>()
        for (const delivery of received) seen.set(delivery.properties.messageId!, sha256(delivery.body))
        assert.strictEqual(received.length, fibers * perFiber)
        assert.strictEqual(seen.size, fibers * perFiber)
        assert.deepStrictEqual(seen, expected)
        assert.strictEqual((yield* channel.queueDeclare(queue, { passive: true })).messageCount, 0)
        assert.isTrue(yield* connection.isOpen)
        assert.isTrue(yield* channel.isOpen)
      })
    ))
})
