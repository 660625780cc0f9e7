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

const exchange = (name: string, autoDelete: boolean) => ({ name, type: "fanout", options: { autoDelete } })
const from = (source: string, destination: string, kind: "queue" | "exchange" = "queue"): RecordedBinding => ({
  kind,
  destination,
  source,
  routingKey: "",
  arguments: {}
})

describe("auto-delete exchanges", () => {
  it("are forgotten with the last binding from them, however it goes, and so in turn", () => {
    const topology = new Topology()
    topology.exchangeDeclared(exchange("upstream", true))
    topology.exchangeDeclared(exchange("ad", true))
    topology.exchangeDeclared(exchange("kept", false))
    topology.queueDeclared({ name: "q1", serverNamed: false, options: {} })
    topology.queueDeclared({ name: "q2", serverNamed: false, options: {} })
    topology.bound(from("upstream", "ad", "exchange"))
    topology.bound(from("ad", "q1"))
    topology.bound(from("ad", "q2"))
    topology.bound(from("kept", "q1"))

    topology.unbound(from("ad", "q1"))
    assert.deepStrictEqual([...topology.exchanges.keys()], ["upstream", "ad", "kept"])
    // Its last binding goes with its queue; the exchange bound to it loses its last binding too.
    topology.queueDeleted("q2")
    assert.deepStrictEqual([...topology.exchanges.keys()], ["kept"])
    assert.deepStrictEqual(topology.bindings, [from("kept", "q1")])
    topology.queueDeleted("q1")
    assert.deepStrictEqual([...topology.exchanges.keys()], ["kept"])
  })

  it("stay while they never had a binding", () => {
    const topology = new Topology()
    topology.exchangeDeclared(exchange("ad", true))
    topology.queueDeclared({ name: "q", serverNamed: false, options: {} })
    topology.queueDeleted("q")
    assert.deepStrictEqual([...topology.exchanges.keys()], ["ad"])
  })
})
