/**
 * The command's summary line: counts with their nouns in the singular only for 1.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Report from "../src/Report.ts"

describe("Report", () => {
  it("says 1 message and 1 byte, and the plural for any other count", () => {
    assert.deepStrictEqual(
      [0, 1, 2].map((n) => Report.counted(n, "producer")),
      ["0 producers", "1 producer", "2 producers"]
    )
    assert.strictEqual(Report.summary("published", 1, 1, 2), "published 1 message, 1 byte (1 B) in 2.00 s (1 msg/s)")
    assert.strictEqual(
      Report.summary("consumed", 3, 2048, 0.5),
      "consumed 3 messages, 2048 bytes (2.0 KiB) in 0.50 s (6 msg/s)"
    )
  })
})
