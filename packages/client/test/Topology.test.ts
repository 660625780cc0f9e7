import { Typed } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import { type RecordedBinding, Topology } from "../src/internal/topology.ts"

const binding = (args: RecordedBinding["arguments"], routingKey = "rk"): RecordedBinding => ({
  kind: "queue",
  destination: "q",
  source: "x",
  routingKey,
  arguments: args
})

describe("recorded bindings", () => {
  it("are one binding whatever the order of their argument keys, as the broker sees them", () => {
    const topology = new Topology()
    topology.bound(binding({ "x-match": "all", colour: "red", size: 3 }))
    topology.bound(binding({ size: 3, colour: "red", "x-match": "all" }))
    assert.strictEqual(topology.bindings.length, 1)

    topology.unbound(binding({ colour: "red", size: 3, "x-match": "all" }))
    assert.deepStrictEqual(topology.bindings, [])
  })

  it("compare 64-bit and typed arguments by value, and tell different values and types apart", () => {
    const topology = new Topology()
    topology.bound(binding({ id: 2n ** 60n }))
    topology.bound(binding({ id: 2n ** 60n }))
    topology.bound(binding({ id: 2n ** 60n + 1n }))
    topology.bound(binding({ id: new Typed("s", 7) }))
    topology.bound(binding({ id: 7 }))
    assert.strictEqual(topology.bindings.length, 4)

    topology.unbound(binding({ id: 2n ** 60n }))
    topology.unbound(binding({ id: new Typed("s", 7) }))
    assert.deepStrictEqual(topology.bindings.map((b) => b.arguments.id), [2n ** 60n + 1n, 7])
  })

  it("with the same arguments but another routing key are two bindings", () => {
    const topology = new Topology()
    topology.bound(binding({}, "a"))
    topology.bound(binding({}, "b"))
    assert.strictEqual(topology.bindings.length, 2)
  })
})
