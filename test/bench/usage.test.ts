/**
 * `pnpm bench`'s command line: `--help` prints the usage, and a flag it does not know, a count that
 * is not one, or a scenario, client or broker it does not have stops it with exit code 2 and the
 * reason, before it builds, connects or starts anything.
 */
import { assert, describe, it } from "@effect/vitest"
import * as ChildProcess from "node:child_process"
import * as Path from "node:path"

const runBench = (...args: ReadonlyArray<string>) =>
  ChildProcess.spawnSync(process.execPath, [Path.join(import.meta.dirname, "../../bench/run.ts"), ...args], {
    encoding: "utf8",
    timeout: 30_000
  })

describe("pnpm bench's command line", () => {
  it("prints the usage, with every scenario and client, for --help", () => {
    const run = runBench("--help")
    assert.strictEqual(run.status, 0)
    assert.match(run.stdout, /^usage: pnpm bench /)
    assert.include(run.stdout, "roundtrip-16B")
    assert.include(run.stdout, "@cloudamqp/amqp-client")
    assert.strictEqual(run.stderr, "")
  })

  it("refuses what it cannot run with exit code 2, the reason and the usage", () => {
    const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
      [["--bogus"], "Unknown option '--bogus'"],
      [["--reps", "0"], "--reps takes a whole number of at least 1"],
      [["--messages", "1e3x"], "--messages takes a whole number of at least 1"],
      [["--scenario", "publish-16B,nope"], "unknown scenario nope"],
      [["--client", "amqplib,nope"], "unknown client nope"],
      [["--broker", "null,nope"], "unknown broker nope"]
    ]
    for (const [args, reason] of cases) {
      const run = runBench(...args)
      assert.strictEqual(run.status, 2, args.join(" "))
      assert.include(run.stderr, `pnpm bench: ${reason}`, args.join(" "))
      assert.include(run.stderr, "usage: pnpm bench ", args.join(" "))
      assert.strictEqual(run.stdout, "", args.join(" "))
    }
  })
})
