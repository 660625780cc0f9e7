/**
 * Helpers for the command line tests: run `effect-amqp` as a child process (the real bin, under
 * the Node that runs the tests), and a scoped client connection to the shared broker on
 * 127.0.0.1:5672 for setting up and removing uniquely named queues.
 */
import { AmqpChannel, type AmqpConfigError, AmqpConnection, type AmqpConnectionError } from "@effect-amqp/client"
import { Effect, type Scope } from "effect"
import * as ChildProcess from "node:child_process"
import { fileURLToPath } from "node:url"

export const sharedUrl = "amqp://guest:guest@127.0.0.1:5672"

const root = fileURLToPath(new URL("../../../", import.meta.url))
const bin = fileURLToPath(new URL("../src/bin.ts", import.meta.url))

export interface Result {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/**
 * Runs `effect-amqp ...args` from the repository root; `env` is added to this process's. With
 * `interruptAfter`, the command gets SIGINT (as from Ctrl-C) that many milliseconds in.
 */
export const cli = (
  args: ReadonlyArray<string>,
  env: Record<string, string> = {},
  interruptAfter?: number
): Effect.Effect<Result> =>
  Effect.callback<Result>((resume) => {
    const child = ChildProcess.spawn(process.execPath, [bin, ...args], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    const stdout: Array<Buffer> = []
    const stderr: Array<Buffer> = []
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk))
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk))
    const interrupt = interruptAfter === undefined ? undefined : setTimeout(() => child.kill("SIGINT"), interruptAfter)
    child.on("close", (code) => {
      clearTimeout(interrupt)
      resume(Effect.succeed({
        code,
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8")
      }))
    })
    return Effect.sync(() => {
      clearTimeout(interrupt)
      child.kill("SIGKILL")
    })
  })

export const uniqueQueue = (what: string): string =>
  `effect-amqp-cli-test-${what}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`

/** A channel on the shared broker for the scope. */
export const sharedChannel: Effect.Effect<
  AmqpChannel.AmqpChannel,
  AmqpConnectionError | AmqpConfigError | AmqpChannel.ChannelError,
  Scope.Scope
> = Effect.gen(function*() {
  const connection = yield* AmqpConnection.fromUrl(sharedUrl, { connectionName: "effect-amqp cli test" })
  return yield* AmqpChannel.make(connection)
})

/** Deletes `queue` from the shared broker when the scope closes, whatever the test did. */
export const deleteAtEnd = (queue: string): Effect.Effect<void, never, Scope.Scope> =>
  Effect.addFinalizer(() =>
    Effect.scoped(Effect.flatMap(sharedChannel, (channel) => channel.queueDelete(queue))).pipe(Effect.ignore)
  )

/** True when `queue` exists on the shared broker (a passive declare succeeds). */
export const queueExists = (queue: string): Effect.Effect<boolean, unknown> =>
  Effect.scoped(Effect.flatMap(sharedChannel, (channel) => channel.queueDeclare(queue, { passive: true }))).pipe(
    Effect.as(true),
    Effect.catchTag("AmqpChannelError", (error) => error.replyCode === 404 ? Effect.succeed(false) : Effect.fail(error))
  )

/** The number after `name` on a line of the demo's report. */
export const reportValue = (report: string, name: string): number | undefined => {
  const match = new RegExp(`^${name}\\s+(\\d+)$`, "m").exec(report)
  return match === null ? undefined : Number(match[1])
}
