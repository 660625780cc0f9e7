/**
 * What `perf` reports against independent evidence: the type of an existing queue as the broker
 * knows it, and latency through a proxy whose added delay is known.
 */
import { FaultProxy } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as ChildProcess from "node:child_process"
import { cli, deleteAtEnd, sharedChannel, sharedUrl, uniqueQueue } from "./support.ts"

/** The queue's type and ready messages as the broker lists them (`rabbitmqctl` only reads). */
const brokerView = (queue: string): { readonly type: string; readonly messages: number } | undefined => {
  const listing = ChildProcess.execFileSync("rabbitmqctl", ["-q", "list_queues", "name", "type", "messages"], {
    encoding: "utf8"
  })
  for (const line of listing.split("\n")) {
    const [name, type, messages] = line.split("\t")
    if (name === queue) return { type: type!, messages: Number(messages) }
  }
  return undefined
}

const perf = (args: ReadonlyArray<string>, url = sharedUrl) =>
  Effect.map(cli(["perf", "--url", url, "--json", ...args]), (result) => ({
    result,
    summary: result.code === 0 ? JSON.parse(result.stdout) : undefined
  }))

describe("effect-amqp perf against the broker's view", () => {
  it.live("checks an existing queue against --queue-type, and without it reports no type", () =>
    Effect.gen(function*() {
      const queue = uniqueQueue("perf-existing")
      yield* deleteAtEnd(queue)
      yield* Effect.scoped(Effect.flatMap(sharedChannel, (channel) => channel.queueDeclare(queue)))
      const consumeAll = ["--queue", queue, "--count", "3"]

      const asQuorum = yield* perf([...consumeAll, "--queue-type", "quorum"])
      assert.strictEqual(asQuorum.result.code, 1, asQuorum.result.stdout + asQuorum.result.stderr)
      assert.strictEqual(asQuorum.result.stdout, "")
      assert.include(asQuorum.result.stderr, `queue ${queue} exists, but not as perf declares a quorum queue`)
      assert.include(asQuorum.result.stderr, "406 PRECONDITION_FAILED")
      assert.deepStrictEqual(brokerView(queue), { type: "classic", messages: 0 })

      const asItIs = yield* perf(consumeAll)
      assert.strictEqual(asItIs.result.code, 0, asItIs.result.stderr)
      assert.strictEqual(asItIs.summary.queueType, null)
      assert.include(asItIs.result.stderr, `existing queue ${queue} on`)
      assert.strictEqual(asItIs.summary.published, 3)
      assert.strictEqual(asItIs.summary.consumed, 3)

      const asClassic = yield* perf([...consumeAll, "--queue-type", "classic"])
      assert.strictEqual(asClassic.result.code, 0, asClassic.result.stderr)
      assert.strictEqual(asClassic.summary.queueType, "classic")
      assert.strictEqual(asClassic.summary.consumed, 3)
      assert.deepStrictEqual(brokerView(queue), { type: "classic", messages: 0 })
    }))

  it.live("names the setting of an existing queue that differs from what perf declares", () =>
    Effect.gen(function*() {
      const queue = uniqueQueue("perf-max-length")
      yield* deleteAtEnd(queue)
      yield* Effect.scoped(
        Effect.flatMap(sharedChannel, (channel) => channel.queueDeclare(queue, { arguments: { "x-max-length": 10 } }))
      )
      const refused = yield* perf(["--queue", queue, "--queue-type", "classic", "--count", "1"])
      assert.strictEqual(refused.result.code, 1)
      assert.include(refused.result.stderr, "inequivalent arg 'x-max-length'")
      assert.notInclude(refused.result.stderr, "inequivalent arg 'durable'")
    }))

  it.live(
    "checks a durable classic queue and an existing stream as such; a stream needs --queue-type",
    () =>
      Effect.gen(function*() {
        const durable = uniqueQueue("perf-durable")
        const stream = uniqueQueue("perf-stream")
        yield* deleteAtEnd(durable)
        yield* deleteAtEnd(stream)
        yield* Effect.scoped(Effect.gen(function*() {
          const channel = yield* sharedChannel
          yield* channel.queueDeclare(durable, { durable: true })
          yield* channel.queueDeclare(stream, { durable: true, arguments: { "x-queue-type": "stream" } })
        }))

        const asClassic = yield* perf(["--queue", durable, "--queue-type", "classic", "--count", "5"])
        assert.strictEqual(asClassic.result.code, 0, asClassic.result.stderr)
        assert.strictEqual(asClassic.summary.queueType, "classic")
        assert.strictEqual(asClassic.summary.consumed, 5)
        assert.deepStrictEqual(brokerView(durable), { type: "classic", messages: 0 })

        const streamArgs = ["--queue", stream, "--count", "20", "--consumers", "2", "--confirm", "5"]
        const asStream = yield* perf([...streamArgs, "--queue-type", "stream"])
        assert.strictEqual(asStream.result.code, 0, asStream.result.stderr)
        assert.deepStrictEqual(
          [asStream.summary.queueType, asStream.summary.published, asStream.summary.consumed],
          ["stream", 20, 40]
        )

        // Streams count no consumers, so without the type perf cannot see its consumers start.
        const untyped = yield* perf(streamArgs)
        assert.strictEqual(untyped.result.code, 1)
        assert.include(untyped.result.stderr, "did not start within 10 s")
        assert.include(untyped.result.stderr, "give --queue-type stream")
      }),
    60_000
  )

  it.live(
    "latency runs from publish to consume: a message's wait for a confirm slot is not in it",
    () =>
      Effect.gen(function*() {
        // 100 ms each way: publish to consume takes about 200 ms, and so does a confirm. A body
        // stamped before its wait for the previous confirm (--confirm 1) would show about 400 ms.
        const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: 5672 } })
        yield* proxy.setLatency(100)
        const url = `amqp://guest:guest@127.0.0.1:${proxy.port}`

        const alone = yield* perf(["--rate", "2", "--count", "3"], url)
        assert.strictEqual(alone.result.code, 0, alone.result.stderr)
        const p50Alone: number = alone.summary.latencyMs.p50
        assert.isAtLeast(p50Alone, 190)
        assert.isAtMost(p50Alone, 300)

        const windowed = yield* perf(["--confirm", "1", "--count", "6"], url)
        assert.strictEqual(windowed.result.code, 0, windowed.result.stderr)
        assert.strictEqual(windowed.summary.confirmed, 6)
        assert.strictEqual(windowed.summary.latencyMs.samples, 6)
        assert.isAtMost(windowed.summary.latencyMs.p50, p50Alone + 100, JSON.stringify(windowed.summary.latencyMs))
      }),
    60_000
  )
})
