/**
 * `perf` when the run cannot go as planned: interrupted with SIGINT, the summary so far comes
 * before the connections close; a broker that blocks publishers (a memory alarm, on a node of this
 * file's own) does not hold a `--duration` run past its end, and says why it stood still.
 */
import { BrokerNode } from "@effect-amqp/testing"
import { assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli, sharedUrl } from "./support.ts"

/** The lines on stderr that are not the once-a-second progress. */
const notices = (stderr: string) => stderr.split("\n").filter((line) => line !== "" && !/^perf: \d+ s,/.test(line))

describe("effect-amqp perf interrupted", () => {
  it.live(
    "SIGINT prints the summary of the run so far, then closes and deletes its queue",
    () =>
      Effect.gen(function*() {
        const run = ["perf", "--url", sharedUrl, "--duration", "20", "--confirm", "100", "--json"]
        const result = yield* cli(run, {}, 2500)
        assert.strictEqual(result.code, 130, result.stderr)
        const summary = JSON.parse(result.stdout)
        assert.isAbove(summary.published, 0)
        assert.isAtMost(summary.confirmed, summary.published)
        assert.isBelow(summary.seconds, 10)
        assert.strictEqual(notices(result.stderr).at(-1), "perf: interrupted; closing the connections")
        const check = yield* cli(["publish", "--url", sharedUrl, "--queue", summary.queue, "--count", "1"])
        assert.strictEqual(check.code, 1)
        assert.include(check.stderr, "404 NOT_FOUND")
      }),
    30_000
  )
})

describe("effect-amqp perf against a broker that blocks publishers", () => {
  let node: BrokerNode.BrokerNode
  beforeAll(() =>
    Effect.map(BrokerNode.start(), (started) => {
      node = started
    }), 90_000)

  it.live("ends a --duration run on time, says why publishing stood still, and exits 1", () =>
    Effect.gen(function*() {
      // The alarm is on from the start: the first publish gets the connection blocked.
      yield* node.setMemoryAlarm
      const result = yield* cli(["perf", "--url", node.url, "--duration", "2", "--confirm", "100", "--json"]).pipe(
        Effect.timeout("40 seconds"),
        Effect.ensuring(Effect.ignore(node.clearMemoryAlarm))
      )
      assert.strictEqual(result.code, 1, result.stderr)
      const summary = JSON.parse(result.stdout)
      // Two seconds of publishing, then five without a confirm.
      assert.isBelow(summary.seconds, 8)
      assert.strictEqual(summary.confirmed, 0)
      assert.strictEqual(summary.errors.count, 1)
      assert.strictEqual(
        summary.errors.first[0],
        `${summary.published} publishes were not confirmed (no progress for 5 s): ` +
          "the broker blocks publishers (low on memory)"
      )
      assert.isTrue(result.stderr.split("\n").some((line) => line.endsWith(", blocked by the broker: low on memory")))
      assert.include(result.stderr, "effect-amqp: 1 error during the run, the first: ")
    }), 90_000)
})
