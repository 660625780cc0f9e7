/**
 * The `effect-amqp` command line: its subcommands (`publish`, `consume`, `demo`, `perf`), how help and
 * usage errors are shown, and how a run ends.
 *
 * Parsing is effect's `effect/cli`; help goes to stdout. Exit codes: 0 success; 2 usage error (unknown
 * flag, bad value, missing flag, unknown subcommand, malformed `--url`), one line per problem on
 * stderr; 1 failure at run time (broker unreachable, channel closed, publish nacked, messages lost),
 * the typed error's message on one line on stderr; 1 for a defect too, as `internal error: ...`.
 * Messages never contain a password: the client's errors leave it out, and URLs are shown through
 * `redactUrl`.
 *
 * @since 0.1.0
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Console, Data, Effect, Layer, Runtime } from "effect"
import { CliConfig, CliError, CliOutput, Command, GlobalFlag } from "effect/cli"
import * as Consume from "./commands/Consume.ts"
import * as Demo from "./commands/Demo.ts"
import * as Perf from "./commands/Perf.ts"
import * as Publish from "./commands/Publish.ts"

/**
 * The version `--version` prints.
 *
 * @since 0.1.0
 * @category constants
 */
export const version = "0.1.0"

/**
 * @since 0.1.0
 * @category constants
 */
export const ExitCode = { success: 0, failure: 1, usage: 2 } as const

/**
 * How a run ended when it did not succeed: the message is already on stderr, `code` is the exit
 * code the runtime uses.
 *
 * @since 0.1.0
 * @category errors
 */
export class Exit extends Data.TaggedError("Exit")<{ readonly code: 1 | 2 }> {
  override get [Runtime.errorExitCode](): number {
    return this.code
  }

  override readonly [Runtime.errorReported] = false
}

const command = Command.make("effect-amqp").pipe(
  Command.withDescription("An AMQP 0-9-1 client for RabbitMQ: publish, consume, a work-queue demo and a load test."),
  Command.withSubcommands([Publish.command, Consume.command, Demo.command, Perf.command])
)

// A name the broker or a flag gave may hold line breaks or other control characters: a reason
// stays one line, with each such character written as an escape. What the command line library
// formats has only its line breaks escaped: on a terminal its colours are escape sequences.
const escaped = (char: string) => JSON.stringify(char).slice(1, -1)
// oxlint-disable-next-line no-control-regex
const oneLine = (text: string): string => text.replace(/[\u0000-\u001f\u007f]/g, escaped)
const withoutLineBreaks = (text: string): string => text.replace(/[\r\n]/g, escaped)

const helpHint = (path: ReadonlyArray<string>) => `run "${path.join(" ")} --help" for usage`

/** Usage errors as short lines on stderr; help on stdout (on stderr when it stands in for an error). */
const presenter = CliOutput.layerPresenter({
  present: (event) =>
    Effect.gen(function*() {
      const formatter = yield* CliOutput.Formatter
      switch (event._tag) {
        case "InvalidInvocation": {
          const where = event.commandPath.join(" ")
          for (const error of event.errors) {
            yield* Console.error(`${where}: ${withoutLineBreaks(formatter.formatCliError(error))}`)
          }
          yield* Console.error(helpHint(event.commandPath))
          return
        }
        case "Help":
          if (event.reason === "Implicit") return yield* Console.error(formatter.formatHelpDoc(event.helpDoc))
          return yield* Console.log(formatter.formatHelpDoc(event.helpDoc))
        case "Version":
          return yield* Console.log(formatter.formatVersion(event.name, event.version))
      }
    })
})

const messageOf = (error: unknown): string =>
  oneLine((error instanceof Error ? error.message : String(error)).trimEnd())

/**
 * Runs the command line with `args` (without the node and script paths) and ends with `Exit` on
 * failure, after printing the reason.
 *
 * @since 0.1.0
 * @category running
 */
export const main = (args: ReadonlyArray<string>): Effect.Effect<void, Exit> =>
  Command.runWith(command, { version })(args).pipe(
    Effect.catch((error): Effect.Effect<never, Exit> => {
      if (CliError.isCliError(error)) {
        // ShowHelp has been presented already; any other CliError has not.
        const shown = error._tag === "ShowHelp" ? Effect.void : Console.error(`effect-amqp: ${error.message}`)
        return shown.pipe(Effect.andThen(Effect.fail(new Exit({ code: ExitCode.usage }))))
      }
      if (error._tag === "UsageError") {
        const path = ["effect-amqp", error.command]
        return Console.error(`${path.join(" ")}: ${error.message}\n${helpHint(path)}`).pipe(
          Effect.andThen(Effect.fail(new Exit({ code: ExitCode.usage })))
        )
      }
      const code = error._tag === "AmqpConfigError" ? ExitCode.usage : ExitCode.failure
      return Console.error(`effect-amqp: ${messageOf(error)}`).pipe(Effect.andThen(Effect.fail(new Exit({ code }))))
    }),
    Effect.catchDefect((defect) =>
      Console.error(`effect-amqp: internal error: ${messageOf(defect)}`).pipe(
        Effect.andThen(Effect.fail(new Exit({ code: ExitCode.failure })))
      )
    ),
    Effect.provide(Layer.mergeAll(
      presenter,
      CliConfig.layer({ builtIns: [GlobalFlag.Help, GlobalFlag.Version] }),
      NodeServices.layer
    ))
  )
