/**
 * Vitest global setup: starts the run's shared private RabbitMQ node (see
 * `@effect-amqp/testing` SharedBroker) and stops it after the run. Test workers find it through the
 * environment variable SharedBroker.envVar, or through `inject("effectAmqpBroker")`.
 * Set EFFECT_AMQP_NO_SHARED_BROKER=1 to skip it; SharedBroker.acquire then starts nodes per file.
 */
import type { TestProject } from "vitest/node"

// Loaded by URL: a static import of another project's source cannot be rewritten by tsc -b.
type SharedBrokerModule = typeof import("../packages/testing/src/SharedBroker.ts")
type BrokerInfo = import("../packages/testing/src/BrokerNode.ts").Info

declare module "vitest" {
  export interface ProvidedContext {
    effectAmqpBroker: BrokerInfo | null
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env["EFFECT_AMQP_NO_SHARED_BROKER"] === "1") {
    project.provide("effectAmqpBroker", null)
    return async () => {}
  }
  const url = new URL("../packages/testing/src/SharedBroker.ts", import.meta.url).href
  const SharedBroker = (await import(url)) as SharedBrokerModule
  const shared = await SharedBroker.startForRun()
  project.provide("effectAmqpBroker", shared.info)
  return shared.teardown
}
