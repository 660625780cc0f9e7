/**
 * What the commands print besides their data: one-line summaries with rates, a progress line on
 * stderr once a second, `CommandFailed`, the error a command fails with when the broker answered
 * but the outcome is wrong (too few messages, lost messages), and `UsageError` for flags that do not
 * fit together.
 *
 * @since 0.1.0
 */
import { Console, Data, Effect, type Scope } from "effect"

/**
 * A command ran but did not reach its goal; `message` is the line printed on stderr.
 *
 * @since 0.1.0
 * @category errors
 */
export class CommandFailed extends Data.TaggedError("CommandFailed")<{
  readonly message: string
}> {}

/**
 * Flags that parse one by one but do not fit together (for example `--duration` with `--count`);
 * the command line exits 2, as for any other usage error.
 *
 * @since 0.1.0
 * @category errors
 */
export class UsageError extends Data.TaggedError("UsageError")<{
  /** The subcommand whose flags clash, for the message and the help hint. */
  readonly command: string
  readonly message: string
}> {}

/**
 * Seconds since `startMillis`, never zero (so that rates stay finite).
 *
 * @since 0.1.0
 * @category formatting
 */
export const secondsSince = (startMillis: number): number => Math.max(performance.now() - startMillis, 0.001) / 1000

/**
 * A count per second, rounded to a whole number.
 *
 * @since 0.1.0
 * @category formatting
 */
export const rate = (count: number, seconds: number): string => `${Math.round(count / seconds)} msg/s`

/**
 * A byte count with a binary unit: `512 B`, `48.8 KiB`, `1.2 MiB`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const bytes = (n: number): string => {
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${(n / 1024 / 1024).toFixed(1)} MiB`
}

/**
 * `count` and the noun, plural unless the count is 1: `1 message`, `3 messages`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const counted = (count: number, noun: string): string => `${count} ${noun}${count === 1 ? "" : "s"}`

/**
 * `"<verb> <count> messages, <bytes> bytes in <seconds> s (<rate>)"`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const summary = (verb: string, count: number, byteCount: number, seconds: number): string =>
  `${verb} ${counted(count, "message")}, ${counted(byteCount, "byte")} (${bytes(byteCount)}) in ${
    seconds.toFixed(2)
  } s ` +
  `(${rate(count, seconds)})`

/**
 * Whether progress lines are wanted: asked for with `--progress`, or stderr is a terminal.
 *
 * @since 0.1.0
 * @category progress
 */
export const progressWanted = (flag: boolean): boolean => flag || process.stderr.isTTY === true

/**
 * Writes `render()` to stderr once a second while the scope is open, when `enabled`.
 *
 * @since 0.1.0
 * @category progress
 */
export const progress = (enabled: boolean, render: () => string): Effect.Effect<void, never, Scope.Scope> =>
  enabled
    ? Effect.asVoid(Effect.forkScoped(
      Effect.forever(Effect.andThen(Effect.sleep("1 second"), Effect.suspend(() => Console.error(render()))))
    ))
    : Effect.void

let stdoutErrorsHandled = false

/**
 * Writes one line to stdout and waits until it has gone: a reader that went away (`| head -1`)
 * fails this write with its code, instead of ending the process with an unhandled `error` event
 * after the caller went on as if it had been written.
 *
 * @since 0.1.0
 * @category output
 */
export const stdoutLine = (line: string): Effect.Effect<void, CommandFailed> =>
  Effect.callback((resume) => {
    if (!stdoutErrorsHandled) {
      stdoutErrorsHandled = true
      // Each write's callback sees its error; the stream's own `error` event needs a listener.
      process.stdout.on("error", () => {})
    }
    process.stdout.write(`${line}\n`, (error) => {
      if (error === null || error === undefined) return resume(Effect.void)
      const code = (error as Error & { code?: string }).code ?? error.message
      resume(Effect.fail(new CommandFailed({ message: `cannot write to stdout (${code})` })))
    })
  })
