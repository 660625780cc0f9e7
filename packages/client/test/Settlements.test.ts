/**
 * The settled-tag bookkeeping against a plain set of every settled tag, over random sequences of
 * single and multiple settlements.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { Settlements } from "../src/internal/settlements.ts"

const step = fc.record({ tag: fc.integer({ min: 1, max: 40 }), multiple: fc.boolean() })

describe("Settlements", () => {
  it("agrees with a set of every settled tag on which tags are settled and the highest unsettled", () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const settlements = new Settlements()
        const model = new Set<number>()
        for (const { multiple, tag } of steps) {
          if (multiple) {
            settlements.settleThrough(tag)
            for (let t = 1; t <= tag; t++) model.add(t)
          } else {
            settlements.settle(tag)
            model.add(tag)
          }
        }
        for (let t = 1; t <= 45; t++) {
          assert.strictEqual(settlements.isSettled(t), model.has(t), `tag ${t}`)
          let highest = t
          while (highest > 0 && model.has(highest)) highest--
          assert.strictEqual(settlements.highestUnsettled(t), highest, `highest unsettled up to ${t}`)
        }
      }),
      { numRuns: 500 }
    )
  })

  it("keeps only the tags settled out of order above the settled prefix", () => {
    const settlements = new Settlements()
    settlements.settle(3)
    settlements.settle(2)
    assert.deepStrictEqual([1, 2, 3, 4].map((t) => settlements.isSettled(t)), [false, true, true, false])
    settlements.settle(1)
    assert.strictEqual(settlements.highestUnsettled(3), 0)
    assert.strictEqual(settlements.highestUnsettled(4), 4)
  })
})
