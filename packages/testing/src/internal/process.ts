/**
 * Run a command to completion and capture its output, as an Effect. Interrupting it kills the
 * command. Internal to the testing package.
 */
import { Effect } from "effect"
import * as ChildProcess from "node:child_process"

export interface Result {
  readonly exitCode: number
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv
  readonly cwd?: string
  readonly timeoutMillis?: number
  /** Written to the command's standard input, which is then closed (closed at once by default). */
  readonly stdin?: string
}

/** Fails only when the command cannot be started or times out; a non-zero exit is a result. */
export const run = (
  file: string,
  args: ReadonlyArray<string>,
  options: RunOptions = {}
): Effect.Effect<Result, Error> =>
  Effect.callback<Result, Error>((resume) => {
    const child = ChildProcess.execFile(
      file,
      [...args],
      {
        env: options.env ?? process.env,
        cwd: options.cwd,
        timeout: options.timeoutMillis ?? 60_000,
        killSignal: "SIGKILL",
        maxBuffer: 64 * 1024 * 1024
      },
      (error, stdout, stderr) => {
        if (error === null) return resume(Effect.succeed({ exitCode: 0, stdout, stderr }))
        if (typeof error.code === "number") return resume(Effect.succeed({ exitCode: error.code, stdout, stderr }))
        if (error.killed) {
          return resume(Effect.fail(new Error(`${file} ${args.join(" ")}: timed out\n${stdout}${stderr}`)))
        }
        resume(Effect.fail(error))
      }
    )
    // A child that exits before reading its input makes this write fail with EPIPE; the exit code
    // already says what happened, so the stream error is not a second failure.
    child.stdin?.on("error", () => {})
    child.stdin?.end(options.stdin ?? "")
    return Effect.sync(() => child.kill("SIGKILL"))
  })
