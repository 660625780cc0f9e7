#!/usr/bin/env node
/**
 * The `effect-amqp` executable: runs `Cli.main` on the process arguments with Node's runtime, which
 * turns SIGINT and SIGTERM into interruption (so queues and connections close in order) and exits
 * with the code `Cli.main` chose.
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cli from "./Cli.ts"

NodeRuntime.runMain(Cli.main(process.argv.slice(2)), { disableErrorReporting: true })
