/**
 * How an effect ended, as text, so that a test can compare several endings in one assertion:
 * "ok", the error (by tag and message, or by tag and reason), "interrupted", or "defect: ...".
 */
import { Cause, Effect, Exit } from "effect"

interface Failure {
  readonly _tag?: string
  readonly message?: string
  readonly reason?: unknown
}

const describe = <A, E>(effect: Effect.Effect<A, E>, failure: (error: Failure) => string) =>
  Effect.map(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) return "ok"
    const error = Cause.findErrorOption(exit.cause)
    if (error._tag === "Some") return failure(error.value as Failure)
    return Exit.hasInterrupts(exit) ? "interrupted" : `defect: ${String(Cause.squash(exit.cause))}`
  })

/** "ok", "<tag>: <message>", "interrupted" or "defect: <message>". */
export const outcome = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<string> =>
  describe(effect, (error) => `${error._tag}: ${error.message}`)

/** "ok", "<tag>" ("AmqpUnknownDeliveryTag(<reason>)" for that one), "interrupted" or "defect: <message>". */
export const outcomeTag = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<string> =>
  describe(
    effect,
    (error) => error._tag === "AmqpUnknownDeliveryTag" ? `${error._tag}(${String(error.reason)})` : `${error._tag}`
  )

/**
 * How a publish ended: "ok", "interrupted", "defect", the error's tag, or for an `Unconfirmed`
 * publish error "Unconfirmed(sent: <sent>, cause: <the cause's tag>)".
 */
export const publishEnding = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = Cause.findErrorOption(exit.cause)
  if (error._tag === "None") return Exit.hasInterrupts(exit) ? "interrupted" : "defect"
  const failure = error.value as {
    readonly _tag: string
    readonly reason?: { readonly _tag: string; readonly sent?: boolean; readonly cause?: { readonly _tag: string } }
  }
  const reason = failure.reason
  if (reason?._tag !== "Unconfirmed") return failure._tag
  return `Unconfirmed(sent: ${reason.sent}, cause: ${reason.cause?._tag})`
}
