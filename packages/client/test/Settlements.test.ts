/**
 * The settled-tag bookkeeping against a plain set of every settled tag, over random sequences of
 * single and multiple settlements.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { Settlements } from "../src/internal/settlements.ts"

const step = fc.record({ tag: fc.integer({ min: 1, max: 40 }), multiple: fc.boolean() })

/** The tags a settlement of `tag` covers. */
const upTo = (tag: number, multiple: boolean) => multiple ? Array.from({ length: tag }, (_, i) => i + 1) : [tag]

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

  it("in a transaction, a rollback undoes its acknowledgements but not its no-ack or recover settlements", () => {
    const action = fc.oneof(
      fc.record({ kind: fc.constant("settle" as const), tag: fc.integer({ min: 1, max: 30 }), multiple: fc.boolean() }),
      fc.record({
        kind: fc.constant("unacknowledged" as const),
        tag: fc.integer({ min: 1, max: 30 }),
        multiple: fc.boolean()
      }),
      fc.record({ kind: fc.constant("begin" as const) }),
      fc.record({ kind: fc.constant("rollback" as const) })
    )
    fc.assert(
      fc.property(fc.array(action, { maxLength: 60 }), (actions) => {
        const settlements = new Settlements()
        // The model: tags settled by acknowledgement, tags settled otherwise, and the first set as
        // the transaction found it.
        let acknowledged = new Set<number>()
        const otherwise = new Set<number>()
        let atStart: Set<number> | undefined
        for (const a of actions) {
          if (a.kind === "begin") {
            settlements.commit()
            atStart = new Set(acknowledged)
          } else if (a.kind === "rollback") {
            settlements.rollback()
            if (atStart !== undefined) {
              acknowledged = new Set(atStart)
              atStart = new Set(acknowledged)
            }
          } else {
            const acked = a.kind === "settle"
            if (a.multiple) settlements.settleThrough(a.tag, acked)
            else settlements.settle(a.tag, acked)
            for (const t of upTo(a.tag, a.multiple)) (acked ? acknowledged : otherwise).add(t)
          }
        }
        for (let t = 1; t <= 35; t++) {
          assert.strictEqual(settlements.isSettled(t), acknowledged.has(t) || otherwise.has(t), `tag ${t}`)
        }
      }),
      { numRuns: 500 }
    )
  })

  it("keeps the tags above the settled prefix as the fewest ranges: one per run of settled tags", () => {
    const wide = fc.record({ tag: fc.integer({ min: 1, max: 200 }), multiple: fc.boolean() })
    fc.assert(
      fc.property(fc.array(wide, { maxLength: 300 }), (steps) => {
        const settlements = new Settlements()
        const model = new Set<number>()
        for (const { multiple, tag } of steps) {
          // Mostly single settlements, so that many runs form above the prefix.
          if (multiple && tag % 4 === 0) {
            settlements.settleThrough(tag)
            for (let t = 1; t <= tag; t++) model.add(t)
          } else {
            settlements.settle(tag)
            model.add(tag)
          }
        }
        let prefix = 0
        while (model.has(prefix + 1)) prefix++
        let runs = 0
        for (let t = prefix + 2; t <= 201; t++) if (model.has(t) && !model.has(t - 1)) runs++
        assert.strictEqual(settlements.rangeCount, runs)
        for (let t = 1; t <= 201; t++) assert.strictEqual(settlements.isSettled(t), model.has(t), `tag ${t}`)
      }),
      { numRuns: 300 }
    )
  })

  it("keeps one range for a held delivery with a million settled after it", () => {
    const settlements = new Settlements()
    for (let tag = 2; tag <= 1_000_001; tag++) settlements.settle(tag)
    assert.strictEqual(settlements.rangeCount, 1)
    assert.isFalse(settlements.isSettled(1))
    assert.isTrue(settlements.isSettled(1_000_001))
    assert.strictEqual(settlements.highestUnsettled(1_000_001), 1)
    settlements.settle(1)
    assert.strictEqual(settlements.rangeCount, 0)
    assert.isTrue(settlements.isSettledThrough(1_000_001))
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

  it("names an unsettled stream delivery exactly when a set of them would, across commits and rollbacks", () => {
    const anAction = fc.oneof(
      fc.record({ kind: fc.constant("deliver" as const), stream: fc.boolean() }),
      fc.record({ kind: fc.constant("ack" as const), back: fc.integer({ min: 0, max: 30 }), multiple: fc.boolean() }),
      fc.record({ kind: fc.constantFrom("select" as const, "commit" as const, "rollback" as const) })
    )
    fc.assert(
      fc.property(fc.array(anAction, { minLength: 10, maxLength: 80, size: "max" }), (actions) => {
        const settlements = new Settlements()
        let settled = new Set<number>()
        let checkpoint: Set<number> | undefined
        const streamTags = new Set<number>()
        let last = 0
        for (const action of actions) {
          if (action.kind === "deliver") {
            last++
            if (action.stream) {
              settlements.fromStream(last)
              streamTags.add(last)
            }
          } else if (action.kind === "ack") {
            const tag = last - action.back
            if (tag < 1) continue
            if (action.multiple) settlements.settleThrough(tag)
            else settlements.settle(tag)
            for (const t of upTo(tag, action.multiple)) settled.add(t)
          } else if (action.kind === "select") {
            settlements.select()
            checkpoint ??= new Set(settled)
          } else if (action.kind === "commit") {
            if (checkpoint === undefined) continue
            settlements.commit()
            checkpoint = new Set(settled)
          } else if (checkpoint !== undefined) {
            settlements.rollback()
            settled = new Set(checkpoint)
          }
        }
        for (let tag = 1; tag <= last + 1; tag++) {
          const unsettled = [...streamTags].filter((t) => !settled.has(t))
          assert.strictEqual(settlements.namesStreamDelivery(tag, false), unsettled.includes(tag), `tag ${tag}`)
          assert.strictEqual(
            settlements.namesStreamDelivery(tag, true),
            unsettled.some((t) => t <= tag),
            `tags through ${tag}`
          )
        }
      }),
      { numRuns: 500 }
    )
  })

  it("keeps the tags of held stream deliveries only: one held while a million after it are acked", () => {
    const settlements = new Settlements()
    settlements.fromStream(1)
    for (let tag = 2; tag <= 1_000_000; tag++) {
      settlements.fromStream(tag)
      settlements.settle(tag)
    }
    assert.isBelow(settlements.streamTagCount, 2048)
    assert.isTrue(settlements.namesStreamDelivery(1_000_000, true))
    assert.isFalse(settlements.namesStreamDelivery(999_999, false))
    assert.strictEqual(settlements.streamTagCount, 1)

    // A burst all acked with nothing after it: the next check drops them.
    for (let tag = 1_000_001; tag <= 1_100_000; tag++) settlements.fromStream(tag)
    settlements.settleThrough(1_100_000)
    assert.isFalse(settlements.namesStreamDelivery(1_100_001, true))
    assert.strictEqual(settlements.streamTagCount, 0)
  })
})
