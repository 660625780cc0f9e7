/**
 * Flags the commands share, each with its description and checks, so that every command spells
 * and validates them the same way.
 *
 * @since 0.1.0
 */
import { Flag } from "effect/cli"

/**
 * `--url`: optional; the broker then comes from `AMQP_URL` or the local default (see `Broker`).
 *
 * @since 0.1.0
 * @category flags
 */
export const url = Flag.String("url").pipe(
  Flag.withDescription("Broker URL (amqp:// or amqps://). Default: $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672."),
  Flag.optional
)

/**
 * @since 0.1.0
 * @category flags
 */
export const queue = Flag.String("queue").pipe(
  Flag.withDescription("Queue name."),
  Flag.filter((name) => name.length > 0 && Buffer.byteLength(name) <= 255, () => "--queue must be 1 to 255 bytes"),
  Flag.filter((name) => !hasLineBreak(name), () => lineBreakRefused("queue"))
)

/**
 * RabbitMQ drops CR and LF from the names it declares but not from a publish's routing key: a
 * queue declared or checked as "a\nb" is "ab", and messages sent to "a\nb" go nowhere.
 */
const hasLineBreak = (name: string): boolean => /[\r\n]/.test(name)

const lineBreakRefused = (flag: string) =>
  `--${flag} must not hold CR or LF: RabbitMQ drops them from names it declares, not from routing keys`

/**
 * A flag holding a short string (an exchange name, a routing key): at most 255 bytes.
 *
 * @since 0.1.0
 * @category flags
 */
export const shortString = (name: string, description: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(description),
    Flag.filter((value) => Buffer.byteLength(value) <= 255, () => `--${name} must be at most 255 bytes`),
    Flag.filter((value) => !hasLineBreak(value), () => lineBreakRefused(name))
  )

/**
 * A positive `--count` with a default.
 *
 * @since 0.1.0
 * @category flags
 */
export const count = (description: string, defaultValue: number) =>
  Flag.Int("count").pipe(
    Flag.withDescription(`${description} Default ${defaultValue}.`),
    Flag.withDefault(defaultValue),
    Flag.filter((n) => n >= 1, (n) => `--count must be at least 1, got ${n}`)
  )

/**
 * A switch that is off unless given.
 *
 * @since 0.1.0
 * @category flags
 */
export const boolean = (name: string, description: string) =>
  Flag.Boolean(name).pipe(Flag.withDescription(description), Flag.withDefault(false))

/**
 * @since 0.1.0
 * @category flags
 */
export const prefetch = Flag.Int("prefetch").pipe(
  Flag.withDescription("Unacknowledged deliveries the broker may send ahead (basic.qos). Default 100."),
  Flag.withDefault(100),
  Flag.filter((n) => n >= 1 && n <= 65535, (n) => `--prefetch must be 1 to 65535, got ${n}`)
)

/**
 * @since 0.1.0
 * @category flags
 */
export const window = Flag.Int("window").pipe(
  Flag.withDescription("Publishes awaiting a confirm at once (with confirms). Default 500."),
  Flag.withDefault(500),
  Flag.filter((n) => n >= 1 && n <= 100_000, (n) => `--window must be 1 to 100000, got ${n}`)
)

/**
 * @since 0.1.0
 * @category flags
 */
export const progress = boolean(
  "progress",
  "Print progress to stderr once a second (always on when stderr is a terminal)."
)
