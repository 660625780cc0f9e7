/**
 * One private RabbitMQ node shared by a whole test run. The run's global setup starts it with
 * `startForRun` and publishes its `BrokerNode.Info` in the environment variable `envVar`, which
 * test workers inherit; test files get it with `get` (or `acquire`, which starts a node of its own
 * when no shared one exists, e.g. when a file runs outside the project's vitest config).
 *
 * The shared node is for tests that leave it as they found it. A test that stops, kills, alarms
 * or reconfigures a broker starts its own node with `BrokerNode.start` (about 3 s).
 *
 * @since 0.1.0
 */
import { Effect, Exit, Scope } from "effect"
import * as NodeFs from "node:fs"
import * as BrokerNode from "./BrokerNode.ts"

/**
 * @since 0.1.0
 * @category constants
 */
export const envVar = "EFFECT_AMQP_SHARED_BROKER"

/**
 * The shared node's configuration: RabbitMQ's defaults, plus SASL EXTERNAL and a TLS listener
 * that verifies a client certificate when one is offered.
 *
 * @since 0.1.0
 * @category constants
 */
export const options: BrokerNode.Options = { saslExternal: true }

/**
 * What a test file gets: the node's identity, its TLS files and the `rabbitmqctl` wrappers, but no
 * lifecycle control.
 *
 * @since 0.1.0
 * @category models
 */
export interface SharedBroker extends BrokerNode.Info, BrokerNode.Control {
  readonly info: BrokerNode.Info
  readonly tlsFiles: { readonly ca: string; readonly cert: string; readonly key: string }
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const attach = (info: BrokerNode.Info): SharedBroker => ({
  ...info,
  ...BrokerNode.control(info),
  info,
  tlsFiles: {
    ca: NodeFs.readFileSync(info.tls.caPath, "utf8"),
    cert: NodeFs.readFileSync(info.tls.certPath, "utf8"),
    key: NodeFs.readFileSync(info.tls.keyPath, "utf8")
  }
})

/**
 * The shared node of this run, from `envVar`.
 *
 * @since 0.1.0
 * @category accessors
 */
export const get: Effect.Effect<SharedBroker, BrokerNode.BrokerNodeError> = Effect.suspend(() => {
  const raw = process.env[envVar]
  if (raw === undefined || raw === "") {
    return Effect.fail(
      new BrokerNode.BrokerNodeError({
        reason: "Start",
        message: `no shared broker: ${envVar} is not set (vitest's globalSetup test/globalSetup.ts starts one)`
      })
    )
  }
  return Effect.try({
    try: () => attach(JSON.parse(raw) as BrokerNode.Info),
    catch: (cause) =>
      new BrokerNode.BrokerNodeError({ reason: "Start", message: `${envVar} does not describe a node`, cause })
  })
})

/**
 * The shared node when there is one; otherwise a private node (default options) for this scope.
 *
 * @since 0.1.0
 * @category accessors
 */
export const acquire: Effect.Effect<SharedBroker, BrokerNode.BrokerNodeError, Scope.Scope> = get.pipe(
  Effect.catch(() => BrokerNode.start(options))
)

/**
 * For a vitest `globalSetup`: start the shared node, publish it in `envVar`, and return its info
 * and the teardown that stops it. Plain promises, since global setup is not Effect code.
 *
 * @since 0.1.0
 * @category run
 */
export const startForRun = async (): Promise<{
  readonly info: BrokerNode.Info
  readonly startMillis: number
  readonly teardown: () => Promise<void>
}> => {
  const scope = await Effect.runPromise(Scope.make())
  const exit = await Effect.runPromiseExit(Scope.provide(BrokerNode.start(options), scope))
  if (Exit.isFailure(exit)) {
    await Effect.runPromise(Scope.close(scope, exit))
    throw new Error(`cannot start the shared RabbitMQ node: ${String(exit.cause)}`)
  }
  const node = exit.value
  process.env[envVar] = JSON.stringify(node.info)
  return {
    info: node.info,
    startMillis: await Effect.runPromise(node.lastStartMillis),
    teardown: async () => {
      delete process.env[envVar]
      await Effect.runPromise(Scope.close(scope, Exit.void))
    }
  }
}
