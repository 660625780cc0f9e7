/**
 * Memory as a test can measure it: a full collection first, so that only what is still reachable
 * counts. The collector is reached through V8's flag at run time, as vitest's workers start
 * without `--expose-gc`.
 */
import * as V8 from "node:v8"
import * as Vm from "node:vm"

V8.setFlagsFromString("--expose-gc")
const collectGarbage = Vm.runInNewContext("gc") as () => void

export const MiB = 1024 * 1024

/**
 * A full collection: three, a turn of the event loop after each, so that what weak callbacks and
 * finalizers free is collected too.
 */
export const collectAll = async (): Promise<void> => {
  for (let round = 0; round < 3; round++) {
    collectGarbage()
    await new Promise((resolve) => setImmediate(resolve))
  }
}

/** Bytes held in `ArrayBuffer`s (message bodies, socket chunks) that are still reachable. */
export const liveArrayBufferBytes = async (): Promise<number> => {
  await collectAll()
  return process.memoryUsage().arrayBuffers
}
