import { Typed } from "@effect-amqp/protocol"
import { LeakProbe } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Message from "../src/Message.ts"
import { cli, deleteAtEnd, queueExists, reportValue, sharedChannel, sharedUrl, uniqueQueue } from "./support.ts"

describe("effect-amqp publish and consume", () => {
  it.live("consume --print gives back exactly the 500 messages publish --confirm wrote", () =>
    Effect.gen(function*() {
      const queue = uniqueQueue("roundtrip")
      yield* deleteAtEnd(queue)

      const published = yield* cli([
        "publish",
        "--url",
        sharedUrl,
        "--queue",
        queue,
        "--count",
        "500",
        "--size",
        "100",
        "--confirm",
        "--declare"
      ])
      assert.strictEqual(published.code, 0, published.stderr)
      assert.match(published.stdout, /^published and confirmed 500 messages, 50000 bytes .* msg\/s\)\n$/)

      const consumed = yield* cli(["consume", "--url", sharedUrl, "--queue", queue, "--count", "500", "--print"])
      assert.strictEqual(consumed.code, 0, consumed.stderr)
      assert.match(consumed.stderr, /consumed 500 messages, 50000 bytes/)
      const lines = consumed.stdout.trimEnd().split("\n")
      assert.strictEqual(lines.length, 500)
      const seen = new Set<number>()
      for (const line of lines) {
        const json = JSON.parse(line)
        const id = Number(json.properties.messageId)
        seen.add(id)
        assert.strictEqual(json.exchange, "")
        assert.strictEqual(json.routingKey, queue)
        assert.strictEqual(json.redelivered, false)
        assert.strictEqual(json.size, 100)
        assert.strictEqual(json.bodyEncoding, "utf8")
        assert.strictEqual(json.body, Buffer.from(Message.body(id, 100)).toString("utf8"))
        assert.deepStrictEqual(json.properties, {
          contentType: "text/plain",
          deliveryMode: 1,
          messageId: String(id),
          appId: "effect-amqp"
        })
        assert.deepStrictEqual(json.headers, {
          "x-index": { type: "I", value: id },
          "x-source": { type: "S", value: "effect-amqp" }
        })
      }
      assert.deepStrictEqual([...seen].toSorted((a, b) => a - b), [...Message.ids(500)])

      const channel = yield* sharedChannel
      const left = yield* channel.queueDeclare(queue, { passive: true })
      assert.strictEqual(left.messageCount, 0)
    }))

  it.live("consume --print shows each header's field type as sent, and a binary body as base64", () =>
    Effect.gen(function*() {
      const queue = uniqueQueue("typed")
      yield* deleteAtEnd(queue)
      const channel = yield* sharedChannel
      yield* channel.queueDeclare(queue)
      yield* channel.confirmSelect
      yield* channel.publish("", queue, new Uint8Array([0xff, 0xfe, 0x00, 0x41]), {
        properties: {
          headers: {
            long: new Typed("l", 5n),
            byte: new Typed("b", -3),
            short: new Typed("s", -300),
            float: new Typed("f", 1.5),
            double: 2.25,
            stamp: new Date(1_700_000_000_000),
            bytes: new Uint8Array([0, 255]),
            nested: { flag: true, list: [1, "two"] },
            none: null
          }
        }
      })

      const consumed = yield* cli(["consume", "--url", sharedUrl, "--queue", queue, "--count", "1", "--print"])
      assert.strictEqual(consumed.code, 0, consumed.stderr)
      const json = JSON.parse(consumed.stdout)
      assert.strictEqual(json.bodyEncoding, "base64")
      assert.strictEqual(json.body, "//4AQQ==")
      assert.deepStrictEqual(json.headers, {
        long: { type: "l", value: "5" },
        byte: { type: "b", value: -3 },
        short: { type: "s", value: -300 },
        float: { type: "f", value: 1.5 },
        double: { type: "d", value: 2.25 },
        stamp: { type: "T", value: "2023-11-14T22:13:20.000Z" },
        bytes: { type: "x", value: "AP8=" },
        nested: {
          type: "F",
          value: {
            flag: { type: "t", value: true },
            list: { type: "A", value: [{ type: "I", value: 1 }, { type: "S", value: "two" }] }
          }
        },
        none: { type: "V", value: null }
      })
    }))
})

describe("effect-amqp demo", () => {
  it.live("cuts every connection halfway through 2000 messages, recovers, loses none and deletes its queue", () =>
    Effect.gen(function*() {
      const [cut, uncut] = yield* Effect.all([
        cli(["demo", "--count", "2000", "--consumers", "3"], { AMQP_URL: sharedUrl }),
        cli(["demo", "--count", "500", "--no-cut"], { AMQP_URL: sharedUrl })
      ], { concurrency: "unbounded" })
      const queues = [cut, uncut].map((result) => /through queue (\S+)/.exec(result.stdout)?.[1])
      for (const queue of queues) if (queue !== undefined) yield* deleteAtEnd(queue)

      assert.strictEqual(cut.code, 0, cut.stdout + cut.stderr)
      assert.match(cut.stdout, /on amqp:\/\/guest:\*\*\*@127\.0\.0\.1:5672 \(env\)/)
      assert.match(cut.stdout, /^demo: clients connect through a fault proxy on 127\.0\.0\.1:\d+$/m)
      assert.match(cut.stdout, /^demo: cut \d+ connections \(reset\) after 1000 publishes$/m)
      assert.strictEqual(reportValue(cut.stdout, "published"), 2000)
      assert.strictEqual(reportValue(cut.stdout, "confirmed"), 2000)
      assert.strictEqual(reportValue(cut.stdout, "lost"), 0)
      assert.strictEqual(reportValue(cut.stdout, "cuts"), 1)
      assert.isAtLeast(reportValue(cut.stdout, "reconnects") ?? 0, 1)
      assert.isAtLeast(reportValue(cut.stdout, "consumed") ?? 0, 2000)
      assert.isDefined(reportValue(cut.stdout, "retried"))
      assert.isDefined(reportValue(cut.stdout, "stale acks"))
      assert.strictEqual(reportValue(cut.stdout, "corrupt"), 0)

      assert.strictEqual(uncut.code, 0, uncut.stdout + uncut.stderr)
      assert.notInclude(uncut.stdout, "fault proxy")
      assert.strictEqual(reportValue(uncut.stdout, "lost"), 0)
      assert.strictEqual(reportValue(uncut.stdout, "cuts"), 0)
      assert.strictEqual(reportValue(uncut.stdout, "reconnects"), 0)
      assert.strictEqual(reportValue(uncut.stdout, "consumed"), 500)

      for (const queue of queues) {
        assert.isDefined(queue)
        assert.isFalse(yield* queueExists(queue!))
      }
    }))
})

/** What a refused `publish` gives: exit 2, nothing on stdout, and why as the first line on stderr. */
const refused = (why: string) => [2, "", `effect-amqp publish: ${why}`]

/** A topic exchange on the shared broker for the scope, deleted when it closes. */
const topicExchange = (options: { readonly internal?: boolean } = {}) =>
  Effect.gen(function*() {
    const exchange = uniqueQueue("exchange")
    const channel = yield* sharedChannel
    yield* channel.exchangeDeclare(exchange, "topic", options)
    yield* Effect.addFinalizer(() =>
      Effect.scoped(Effect.flatMap(sharedChannel, (c) => c.exchangeDelete(exchange))).pipe(Effect.ignore)
    )
    return exchange
  })

describe("effect-amqp publish to an exchange", () => {
  it.live("--declare binds --queue to the exchange with the routing key, and every message arrives there", () =>
    Effect.gen(function*() {
      const before = yield* LeakProbe.snapshot()
      yield* Effect.scoped(Effect.gen(function*() {
        const exchange = yield* topicExchange()
        const queue = uniqueQueue("bound")
        yield* deleteAtEnd(queue)

        const published = yield* cli([
          "publish",
          "--url",
          sharedUrl,
          "--exchange",
          exchange,
          "--routing-key",
          "orders.eu.created",
          "--queue",
          queue,
          "--declare",
          "--confirm",
          "--count",
          "40",
          "--size",
          "64"
        ])
        assert.strictEqual(published.code, 0, published.stderr)
        assert.match(published.stdout, /^published and confirmed 40 messages, 2560 bytes /)

        const consumed = yield* cli(["consume", "--url", sharedUrl, "--queue", queue, "--count", "40", "--print"])
        assert.strictEqual(consumed.code, 0, consumed.stderr)
        const messages = consumed.stdout.trimEnd().split("\n").map((line) => JSON.parse(line))
        assert.deepStrictEqual(
          messages.map((json) => [json.exchange, json.routingKey, json.body]),
          [...Message.ids(40)].map((id) => [
            exchange,
            "orders.eu.created",
            Buffer.from(Message.body(id, 64)).toString("utf8")
          ])
        )
      }))
      yield* LeakProbe.assertNoLeaks(before)
    }))

  it.live("--confirm fails on a message no queue is bound for, and a missing exchange fails before any", () =>
    Effect.gen(function*() {
      const before = yield* LeakProbe.snapshot()
      yield* Effect.scoped(Effect.gen(function*() {
        const exchange = yield* topicExchange()
        // A tab in the name: the broker's reason quotes it, and stays one line.
        const missing = uniqueQueue("no\texchange")
        const [unroutable, notFound] = yield* Effect.all([
          cli(["publish", "--url", sharedUrl, "--exchange", exchange, "--routing-key", "nowhere", "--confirm"]),
          cli(["publish", "--url", sharedUrl, "--exchange", missing, "--count", "1"])
        ], { concurrency: "unbounded" })
        assert.strictEqual(unroutable.code, 1)
        assert.strictEqual(
          unroutable.stderr,
          `effect-amqp: unroutable: 312 NO_ROUTE (exchange "${exchange}", routing key "nowhere")\n`
        )
        assert.strictEqual(notFound.code, 1)
        assert.strictEqual(
          notFound.stderr,
          `effect-amqp: channel 1 closed by the broker: 404 NOT_FOUND - no exchange '${
            missing.replace("\t", "\\t")
          }' in vhost '/' ` +
            "(exchange.declare); publish declares no exchange\n"
        )
      }))
      yield* LeakProbe.assertNoLeaks(before)
    }))

  it.live("without --confirm, a publish the broker refuses still exits 1", () =>
    Effect.gen(function*() {
      const before = yield* LeakProbe.snapshot()
      yield* Effect.scoped(Effect.gen(function*() {
        const exchange = yield* topicExchange({ internal: true })
        const result = yield* cli(["publish", "--url", sharedUrl, "--exchange", exchange, "--routing-key", "r"])
        assert.strictEqual(result.code, 1)
        assert.strictEqual(result.stdout, "")
        assert.strictEqual(
          result.stderr,
          "effect-amqp: channel 1 closed by the broker: 403 ACCESS_REFUSED - cannot publish to internal exchange " +
            `'${exchange}' in vhost '/' (basic.publish)\n`
        )
      }))
      yield* LeakProbe.assertNoLeaks(before)
    }))

  it.live("flags that name no single destination exit 2 with why", () =>
    Effect.gen(function*() {
      const refusals = yield* Effect.forEach([
        ["--queue", "q", "--routing-key", "k"],
        ["--count", "1"],
        ["--exchange", "amq.topic", "--queue", "q"],
        ["--exchange", "amq.topic", "--declare"],
        ["--exchange", "x".repeat(256)],
        ["--queue", "a\nb"],
        ["--exchange", "a\rb"],
        ["--exchange", "amq.topic", "--routing-key", "a\nb"]
      ], (args) =>
        cli(["publish", "--url", "amqp://guest:guest@127.0.0.1:1", ...args]), { concurrency: "unbounded" })
      const said = refusals.map((result) => [result.code, result.stdout, result.stderr.split("\n")[0]])
      assert.deepStrictEqual(said, [
        refused("--routing-key needs --exchange: through the default exchange the routing key is --queue"),
        refused("give --queue, or --exchange (with --routing-key)"),
        refused("--queue with --exchange needs --declare, which declares the queue and binds it"),
        refused("--declare with --exchange needs the --queue to bind"),
        refused(
          `Invalid value for flag --exchange: "${"x".repeat(256)}". Expected: --exchange must be at most 255 bytes`
        ),
        ...[["queue", "a\\nb"], ["exchange", "a\\rb"], ["routing-key", "a\\nb"]].map(([flag, value]) =>
          refused(
            `Invalid value for flag --${flag}: "${value}". Expected: --${flag} must not hold CR or LF: ` +
              "RabbitMQ drops them from names it declares, not from routing keys"
          )
        )
      ])
    }))
})

describe("effect-amqp usage and failures", () => {
  it.live("a bad flag exits 2 with one line naming it", () =>
    Effect.gen(function*() {
      const [unknown, malformed, unknownCommand, badUrl, badQuery] = yield* Effect.all([
        cli(["publish", "--queue", "q", "--bogus"]),
        cli(["consume", "--queue", "q", "--count", "many"]),
        cli(["frobnicate"]),
        cli(["publish", "--queue", "q", "--url", "http://guest:hunter2@127.0.0.1:1"]),
        cli(["consume", "--queue", "q", "--url", "amqp://guest:hun@ter2@127.0.0.1:1/?nope=1"])
      ], { concurrency: "unbounded" })
      assert.strictEqual(unknown.code, 2)
      assert.strictEqual(unknown.stdout, "")
      assert.match(unknown.stderr, /^effect-amqp publish: Unrecognized flag: --bogus/)

      assert.strictEqual(malformed.code, 2)
      assert.match(malformed.stderr, /Invalid value for flag --count: "many"/)

      assert.strictEqual(unknownCommand.code, 2)
      assert.match(unknownCommand.stderr, /Unknown subcommand "frobnicate"/)

      assert.strictEqual(badUrl.code, 2)
      assert.match(badUrl.stderr, /must start with amqp:\/\/ or amqps:\/\//)
      assert.notInclude(badUrl.stderr, "hunter2")

      assert.strictEqual(badQuery.code, 2)
      assert.strictEqual(
        badQuery.stderr,
        "effect-amqp: unknown query parameter nope in amqp://guest:***@127.0.0.1:1/?nope=1\n"
      )
    }))

  it.live("--help works for every command and exits 0", () =>
    Effect.forEach(
      [["--help"], ["publish", "--help"], ["consume", "--help"], ["demo", "--help"], ["perf", "--help"]],
      (args) =>
        Effect.map(cli(args), (result) => {
          assert.strictEqual(result.code, 0, args.join(" "))
          assert.include(result.stdout, "USAGE")
          assert.include(result.stdout, `effect-amqp ${args.length > 1 ? args[0] : "<subcommand>"}`)
        }),
      { concurrency: "unbounded", discard: true }
    ))

  it.live("an unreachable broker exits 1 with the connect error and no password", () =>
    Effect.forEach(
      [["publish", "--queue", "q"], ["consume", "--queue", "q"], ["demo"]],
      (args) =>
        Effect.map(cli([...args, "--url", "amqp://guest:hunter2@127.0.0.1:1"]), (result) => {
          assert.strictEqual(result.code, 1, args[0])
          assert.match(result.stderr, /^effect-amqp: cannot connect to 127\.0\.0\.1:1: ECONNREFUSED/)
          assert.notInclude(result.stderr, "hunter2")
        }),
      { concurrency: "unbounded", discard: true }
    ))

  it.live("publish without --declare fails on a missing queue instead of dropping messages", () =>
    Effect.gen(function*() {
      const queue = uniqueQueue("missing")
      yield* deleteAtEnd(queue)
      const result = yield* cli(["publish", "--url", sharedUrl, "--queue", queue, "--count", "1"])
      assert.strictEqual(result.code, 1)
      assert.match(result.stderr, /^effect-amqp: channel 1 closed by the broker: 404 NOT_FOUND - no queue '.*'/)
      assert.match(result.stderr, /; --declare creates it\n$/)
    }))
})
