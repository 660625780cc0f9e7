/**
 * Exchanges, queues and bindings on a real broker: every declare, bind, unbind, purge and delete,
 * with what the broker then says (its replies, `rabbitmqctl` listings, and whether a mandatory
 * publish is routed or returned).
 */
import { AmqpChannel, AmqpChannelError, AmqpPublishError, Returned } from "@effect-amqp/client"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import {
  confirmingChannel,
  onSharedBroker,
  poll,
  type SharedBroker,
  text,
  unique,
  utf8
} from "../support/channelKit.ts"

/** The broker's own listing of `kind` ("exchanges" or "queues") with `columns`, as JSON rows. */
const list = (broker: SharedBroker, kind: "exchanges" | "queues", columns: ReadonlyArray<string>) =>
  Effect.map(
    broker.rabbitmqctl(["-q", `list_${kind}`, ...columns, "--formatter", "json"]),
    (out) => JSON.parse(out) as Array<Record<string, unknown>>
  )

/** The channel error an effect ended with (and a defect if it succeeded or failed otherwise). */
const channelError = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.flip(effect).pipe(
    Effect.flatMap((e) => e instanceof AmqpChannelError ? Effect.succeed(e) : Effect.die(e))
  )

/** The reason a publish failed with. */
const publishFailure = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.flip(effect).pipe(
    Effect.flatMap((e) => e instanceof AmqpPublishError ? Effect.succeed(e.reason) : Effect.die(e))
  )

describe("exchanges", () => {
  it.live("declares, passively checks, refuses an inequivalent redeclare and deletes", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const name = unique("ex")
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.exchangeDeclare(name, "topic", { durable: false, autoDelete: false })
        yield* channel.exchangeDeclare(name, "topic", { passive: true })
        const listed = (yield* list(broker, "exchanges", ["name", "type", "durable", "auto_delete", "internal"]))
          .filter((row) => row["name"] === name)
        assert.deepStrictEqual(listed, [{
          name,
          type: "topic",
          durable: false,
          auto_delete: false,
          internal: false
        }])

        const missing = unique("ex-missing")
        const probe = yield* AmqpChannel.make(connection)
        const notFound = yield* channelError(probe.exchangeDeclare(missing, "direct", { passive: true }))
        assert.deepStrictEqual(
          { ...notFound },
          {
            _tag: "AmqpChannelError",
            channel: probe.id,
            replyCode: 404,
            replyText: `NOT_FOUND - no exchange '${missing}' in vhost '/'`,
            classId: 40,
            methodId: 10,
            method: "exchange.declare"
          }
        )

        const other = yield* AmqpChannel.make(connection)
        const inequivalent = yield* channelError(other.exchangeDeclare(name, "fanout"))
        assert.strictEqual(inequivalent.replyCode, 406)
        assert.strictEqual(inequivalent.method, "exchange.declare")
        assert.strictEqual(
          inequivalent.replyText,
          `PRECONDITION_FAILED - inequivalent arg 'type' for exchange '${name}' in vhost '/': ` +
            `received 'fanout' but current is 'topic'`
        )

        yield* channel.exchangeDelete(name)
        const after = yield* AmqpChannel.make(connection)
        const gone = yield* channelError(after.exchangeDeclare(name, "topic", { passive: true }))
        assert.strictEqual(gone.replyCode, 404)
        assert.strictEqual(
          (yield* list(broker, "exchanges", ["name"])).filter((row) => row["name"] === name).length,
          0
        )
      })
    ))

  it.live("keeps an exchange in use with ifUnused, and declares an internal and an auto-delete one", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        const source = unique("ex-src")
        const internal = unique("ex-internal")
        yield* channel.exchangeDeclare(source, "direct", { autoDelete: true })
        yield* channel.exchangeDeclare(internal, "fanout", { internal: true })
        yield* channel.exchangeBind(internal, source, "k")
        const listed = (yield* list(broker, "exchanges", ["name", "auto_delete", "internal"]))
          .filter((row) => row["name"] === source || row["name"] === internal)
          .toSorted((a, b) => String(a["name"]).localeCompare(String(b["name"])))
        assert.deepStrictEqual(
          listed,
          [
            { name: source, auto_delete: true, internal: false },
            { name: internal, auto_delete: false, internal: true }
          ].toSorted((a, b) => a.name.localeCompare(b.name))
        )

        const inUse = yield* channelError(channel.exchangeDelete(source, { ifUnused: true }))
        assert.strictEqual(inUse.replyCode, 406)
        assert.strictEqual(inUse.method, "exchange.delete")
        assert.strictEqual(inUse.replyText, `PRECONDITION_FAILED - exchange '${source}' in vhost '/' in use`)

        const cleanup = yield* AmqpChannel.make(connection)
        yield* cleanup.exchangeDelete(internal)
        // The auto-delete source loses its last binding with the internal exchange, and goes too.
        const left = yield* poll(
          Effect.map(list(broker, "exchanges", ["name"]), (rows) => rows.filter((row) => row["name"] === source)),
          (rows) => rows.length === 0
        )
        assert.deepStrictEqual(left, [])
      })
    ))

  it.live("binds an exchange to an exchange: routes while bound, returns after unbind", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const source = unique("ex-topic")
        const destination = unique("ex-fanout")
        yield* channel.exchangeDeclare(source, "topic", { autoDelete: false })
        yield* channel.exchangeDeclare(destination, "fanout")
        const queue = (yield* channel.queueDeclare("", { exclusive: true })).queue
        yield* channel.queueBind(queue, destination, "")
        yield* channel.exchangeBind(destination, source, "orders.*")

        yield* channel.publish(source, "orders.created", utf8("routed"), { mandatory: true })
        const got = yield* channel.get(queue, { noAck: true })
        assert.isTrue(Option.isSome(got))
        const message = Option.getOrThrow(got)
        assert.strictEqual(text(message.body), "routed")
        assert.strictEqual(message.exchange, source)
        assert.strictEqual(message.routingKey, "orders.created")

        // A key the binding does not match is returned.
        const unmatched = yield* publishFailure(
          channel.publish(source, "invoices.created", utf8("x"), { mandatory: true })
        )
        assert.deepStrictEqual(
          unmatched,
          new Returned({ replyCode: 312, replyText: "NO_ROUTE", exchange: source, routingKey: "invoices.created" })
        )

        yield* channel.exchangeUnbind(destination, source, "orders.*")
        const afterUnbind = yield* publishFailure(
          channel.publish(source, "orders.created", utf8("lost"), { mandatory: true })
        )
        assert.deepStrictEqual(
          afterUnbind,
          new Returned({ replyCode: 312, replyText: "NO_ROUTE", exchange: source, routingKey: "orders.created" })
        )
        assert.isTrue(Option.isNone(yield* channel.get(queue, { noAck: true })))
        yield* channel.exchangeDelete(source)
        yield* channel.exchangeDelete(destination)
      })
    ))
})

describe("queues", () => {
  it.live("declares a server-named queue and reads its counts passively", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const declared = yield* channel.queueDeclare("", { exclusive: true })
        assert.match(declared.queue, /^amq\.gen-[A-Za-z0-9_-]{22}$/)
        assert.strictEqual(declared.messageCount, 0)
        assert.strictEqual(declared.consumerCount, 0)
        for (let i = 0; i < 3; i++) yield* channel.publish("", declared.queue, utf8(`m${i}`))
        const passive = yield* channel.queueDeclare(declared.queue, { passive: true })
        assert.deepStrictEqual(passive, { queue: declared.queue, messageCount: 3, consumerCount: 0 })
        const listed = (yield* broker.listQueues()).filter((q) => q.name === declared.queue)
        assert.deepStrictEqual(listed, [{
          name: declared.queue,
          messages: 3,
          consumers: 0,
          durable: false,
          autoDelete: false,
          exclusive: true
        }])

        const missing = unique("q-missing")
        const probe = yield* AmqpChannel.make(connection)
        const notFound = yield* channelError(probe.queueDeclare(missing, { passive: true }))
        assert.deepStrictEqual(
          { ...notFound },
          {
            _tag: "AmqpChannelError",
            channel: probe.id,
            replyCode: 404,
            replyText: `NOT_FOUND - no queue '${missing}' in vhost '/'`,
            classId: 50,
            methodId: 10,
            method: "queue.declare"
          }
        )
      })
    ))

  it.live("binds with a routing key and with header arguments, and unbinds", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const { channel, queue } = yield* confirmingChannel(connection)
        const key = unique("key")
        yield* channel.queueBind(queue, "amq.direct", key)
        const headers = unique("ex-headers")
        yield* channel.exchangeDeclare(headers, "headers")
        const match = { "x-match": "all", region: "eu", tier: 2 }
        yield* channel.queueBind(queue, headers, "", match)

        yield* channel.publish("amq.direct", key, utf8("by key"), { mandatory: true })
        yield* channel.publish(headers, "", utf8("by headers"), {
          mandatory: true,
          properties: { headers: { region: "eu", tier: 2, extra: true } }
        })
        const partial = yield* publishFailure(
          channel.publish(headers, "", utf8("half a match"), {
            mandatory: true,
            properties: { headers: { region: "eu" } }
          })
        )
        assert.strictEqual(partial._tag, "Returned")

        const bodies: Array<string> = []
        for (let i = 0; i < 2; i++) {
          const got = yield* channel.get(queue, { noAck: true })
          bodies.push(text(Option.getOrThrow(got).body))
        }
        assert.deepStrictEqual(bodies, ["by key", "by headers"])

        yield* channel.queueUnbind(queue, "amq.direct", key)
        yield* channel.queueUnbind(queue, headers, "", match)
        const byKey = yield* publishFailure(channel.publish("amq.direct", key, utf8("x"), { mandatory: true }))
        assert.deepStrictEqual(
          byKey,
          new Returned({ replyCode: 312, replyText: "NO_ROUTE", exchange: "amq.direct", routingKey: key })
        )
        const byHeaders = yield* publishFailure(
          channel.publish(headers, "", utf8("x"), {
            mandatory: true,
            properties: { headers: { region: "eu", tier: 2 } }
          })
        )
        assert.deepStrictEqual(
          byHeaders,
          new Returned({ replyCode: 312, replyText: "NO_ROUTE", exchange: headers, routingKey: "" })
        )
        yield* channel.exchangeDelete(headers)
      })
    ))

  it.live("purges and deletes with the broker's message counts", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const queue = unique("q-counts")
        yield* channel.queueDeclare(queue)
        for (let i = 0; i < 7; i++) yield* channel.publish("", queue, utf8(`p${i}`))
        assert.strictEqual(yield* channel.queuePurge(queue), 7)
        assert.strictEqual((yield* channel.queueDeclare(queue, { passive: true })).messageCount, 0)
        assert.strictEqual(yield* channel.queuePurge(queue), 0)

        for (let i = 0; i < 4; i++) yield* channel.publish("", queue, utf8(`d${i}`))
        const notEmpty = yield* channelError(channel.queueDelete(queue, { ifEmpty: true }))
        assert.strictEqual(notEmpty.replyCode, 406)
        assert.strictEqual(notEmpty.method, "queue.delete")
        assert.strictEqual(notEmpty.replyText, `PRECONDITION_FAILED - queue '${queue}' in vhost '/' not empty`)

        const next = yield* AmqpChannel.make(connection)
        assert.strictEqual(yield* next.queueDelete(queue), 4)
        assert.deepStrictEqual((yield* broker.listQueues()).filter((q) => q.name === queue), [])
        const gone = yield* channelError(next.queueDeclare(queue, { passive: true }))
        assert.strictEqual(gone.replyCode, 404)
      })
    ))

  it.live("declares quorum and stream queues, which the broker lists with their type", () =>
    onSharedBroker((connect, broker) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const quorum = unique("q-quorum")
        const stream = unique("q-stream")
        const q = yield* channel.queueDeclare(quorum, { durable: true, arguments: { "x-queue-type": "quorum" } })
        assert.deepStrictEqual(q, { queue: quorum, messageCount: 0, consumerCount: 0 })
        yield* channel.queueDeclare(stream, { durable: true, arguments: { "x-queue-type": "stream" } })
        const types = (yield* list(broker, "queues", ["name", "type", "durable"]))
          .filter((row) => row["name"] === quorum || row["name"] === stream)
          .map((row) => `${String(row["name"])}:${String(row["type"])}:${String(row["durable"])}`)
          .toSorted()
        assert.deepStrictEqual(types, [`${quorum}:quorum:true`, `${stream}:stream:true`].toSorted())

        yield* channel.publish("", quorum, utf8("into quorum"))
        const got = Option.getOrThrow(yield* channel.get(quorum))
        assert.strictEqual(text(got.body), "into quorum")
        assert.strictEqual(got.messageCount, 0)
        yield* got.ack()

        const classic = yield* AmqpChannel.make(connection)
        const inequivalent = yield* channelError(classic.queueDeclare(quorum, { durable: true }))
        assert.strictEqual(inequivalent.replyCode, 406)
        assert.strictEqual(
          inequivalent.replyText,
          `PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '${quorum}' in vhost '/': ` +
            `received none but current is the value 'quorum' of type 'longstr'`
        )

        yield* channel.queueDelete(quorum)
        yield* channel.queueDelete(stream)
      })
    ))

  it.live("dead-letters an expired message to the x-dead-letter-exchange, with its x-death", () =>
    onSharedBroker((connect) =>
      Effect.gen(function*() {
        const connection = yield* connect()
        const channel = yield* AmqpChannel.make(connection)
        yield* channel.confirmSelect
        const dlx = unique("dlx")
        const dlq = unique("dlq")
        const work = unique("q-ttl")
        yield* channel.exchangeDeclare(dlx, "fanout")
        yield* channel.queueDeclare(dlq)
        yield* channel.queueBind(dlq, dlx, "")
        yield* channel.queueDeclare(work, { arguments: { "x-dead-letter-exchange": dlx, "x-message-ttl": 50 } })
        yield* channel.publish("", work, utf8("expires"), { properties: { messageId: "m-1" } })

        const dead = yield* poll(channel.get(dlq, { noAck: true }), Option.isSome)
        const message = Option.getOrThrow(dead)
        assert.strictEqual(text(message.body), "expires")
        assert.strictEqual(message.exchange, dlx)
        assert.strictEqual(message.routingKey, work)
        assert.strictEqual(message.properties.messageId, "m-1")
        const headers = message.properties.headers!
        const deaths = headers["x-death"] as ReadonlyArray<Record<string, unknown>>
        assert.strictEqual(deaths.length, 1)
        const death = deaths[0]!
        assert.strictEqual(death["reason"], "expired")
        assert.strictEqual(death["queue"], work)
        assert.strictEqual(death["exchange"], "")
        // RabbitMQ writes the count as a 64-bit integer ('l'); within 2^53 it reads as a number.
        assert.strictEqual(death["count"], 1)
        assert.deepStrictEqual(death["routing-keys"], [work])
        assert.strictEqual(headers["x-first-death-reason"], "expired")
        assert.strictEqual(headers["x-first-death-queue"], work)
        assert.strictEqual((yield* channel.queueDeclare(work, { passive: true })).messageCount, 0)

        yield* channel.queueDelete(work)
        yield* channel.queueDelete(dlq)
        yield* channel.exchangeDelete(dlx)
      })
    ))
})
