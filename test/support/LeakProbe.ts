/**
 * `LeakProbe` of `@effect-amqp/testing` for the root test folders.
 *
 * The package's entry point does not export `LeakProbe`, and `tsc -b` refuses a static import of
 * another project's source (the output paths differ), so the module is loaded by URL, the way
 * `test/globalSetup.ts` loads `SharedBroker`. Its types are the package's own.
 */
type LeakProbeModule = typeof import("../../packages/testing/src/LeakProbe.ts")

const url = new URL("../../packages/testing/src/LeakProbe.ts", import.meta.url).href

/** `snapshot`, `diff` and `assertNoLeaks` of `@effect-amqp/testing`'s LeakProbe. */
export const LeakProbe = (await import(url)) as LeakProbeModule

export type Snapshot = import("../../packages/testing/src/LeakProbe.ts").Snapshot
