/**
 * The commands' output to a reader that goes away, and to a reader that holds a run of millions:
 * `consume --print` into `| head -1` stops with one line and acknowledges only what was written;
 * `publish --count 100000000` starts at once and keeps no list of its messages.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import { fileURLToPath } from "node:url"
import { cli, deleteAtEnd, sharedChannel, sharedUrl, uniqueQueue } from "./support.ts"

const root = fileURLToPath(new URL("../../../", import.meta.url))
const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))

const spawnCli = (args: ReadonlyArray<string>) =>
  ChildProcess.spawn(process.execPath, [bin, ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] })

/** The most memory the process `pid` has held so far (VmHWM), in bytes. */
const peakRss = (pid: number): number => {
  const line = Fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmHWM:"))
  return Number(/(\d+)/.exec(line ?? "")?.[1]) * 1024
}

describe("effect-amqp output", () => {
  it.live("consume --print into a pipe that closes stops with one line, and what it did not write stays queued", () =>
    Effect.gen(function*() {
      const queue = uniqueQueue("closed-pipe")
      yield* deleteAtEnd(queue)
      const args = ["--url", sharedUrl, "--queue", queue]
      const published = yield* cli(["publish", ...args, "--declare", "--count", "2000", "--size", "2000"])
      assert.strictEqual(published.code, 0, published.stderr)

      const outcome = yield* Effect.callback<{ code: number | null; stderr: string }>((resume) => {
        const child = spawnCli(["consume", ...args, "--count", "2000", "--print"])
        let stderr = ""
        child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
        // As `head -1` does: the first line, then the read end closes.
        let seen = ""
        child.stdout.on("data", (chunk: Buffer) => {
          seen += chunk.toString()
          if (seen.includes("\n")) child.stdout.destroy()
        })
        child.on("close", (code) => resume(Effect.succeed({ code, stderr })))
        return Effect.sync(() => child.kill("SIGKILL"))
      })

      assert.strictEqual(outcome.code, 1, outcome.stderr)
      const lines = outcome.stderr.trim().split("\n")
      assert.strictEqual(lines.length, 1, outcome.stderr)
      const match = /cannot write to stdout \(EPIPE\) after (\d+) messages/.exec(lines[0]!)
      assert.isNotNull(match, lines[0])
      const acked = Number(match![1])
      const remaining = yield* Effect.scoped(
        Effect.flatMap(sharedChannel, (channel) => channel.queueDeclare(queue, { passive: true }))
      )
      assert.strictEqual(remaining.messageCount, 2000 - acked)
    }))

  it.live("publish --confirm --count 100000000 starts at once and holds no list of ids", () =>
    Effect.gen(function*() {
      const queue = uniqueQueue("huge-count")
      yield* deleteAtEnd(queue)
      const outcome = yield* Effect.callback<{ progressLines: number; rss: number; code: number | null }>((resume) => {
        const flags = "--declare --confirm --window 2 --size 1 --count 100000000 --progress".split(" ")
        const child = spawnCli(["publish", "--url", sharedUrl, "--queue", queue, ...flags])
        let stderr = ""
        let stopped = false
        const progressLines = () => stderr.split("\n").filter((line) => line.startsWith("publish: ")).length
        const stop = () => {
          if (stopped) return
          stopped = true
          clearTimeout(deadline)
          const rss = peakRss(child.pid!)
          const lines = progressLines()
          child.on("close", (code) => resume(Effect.succeed({ progressLines: lines, rss, code })))
          child.kill("SIGINT")
        }
        // Stopped at its third progress line, two seconds into publishing, or at a deadline that a
        // loaded machine's start-up cannot reach.
        child.stderr.on("data", (chunk: Buffer) => {
          stderr += chunk.toString()
          if (progressLines() >= 3) stop()
        })
        const deadline = setTimeout(stop, 20_000)
        return Effect.sync(() => {
          clearTimeout(deadline)
          child.kill("SIGKILL")
        })
      })
      // Progress comes once a second from the start, while publishing; a list of 1e8 ids took
      // seconds and 2 GB before the first message.
      assert.isAtLeast(outcome.progressLines, 3)
      assert.isBelow(outcome.rss, 300 * 1024 * 1024)
      assert.strictEqual(outcome.code, 130)
    }))
})
