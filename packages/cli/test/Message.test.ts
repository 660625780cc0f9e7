import { assert, describe, it } from "@effect/vitest"
import * as Message from "../src/Message.ts"

describe("Message", () => {
  it("starts a body with its id and fills it with letters", () => {
    assert.strictEqual(Buffer.from(Message.body(7, 12)).toString("latin1"), "7:jklmnopqrs")
    assert.strictEqual(Message.body(123, 0).length, 0)
  })

  it("reads the id back from a body of any length that holds it", () => {
    for (const size of [3, 5, 100, 4096]) assert.strictEqual(Message.idOf(Message.body(42, size)), 42)
    assert.strictEqual(Message.idOf(Message.body(0, 2)), 0)
  })

  it("finds no id in a body too short for it, or in foreign bytes", () => {
    assert.isUndefined(Message.idOf(Message.body(42, 2)))
    assert.isUndefined(Message.idOf(new Uint8Array(0)))
    assert.isUndefined(Message.idOf(Buffer.from(":abc")))
    assert.isUndefined(Message.idOf(Buffer.from("12x:abc")))
  })

  it("tells an intact body from a corrupted one", () => {
    const body = Buffer.from(Message.body(9, 64))
    assert.isTrue(Message.isIntact(9, body))
    assert.isFalse(Message.isIntact(8, body))
    body[40] = 0x41
    assert.isFalse(Message.isIntact(9, body))
  })

  it("lists ids lazily from 0", () => {
    assert.deepStrictEqual([...Message.ids(4)], [0, 1, 2, 3])
    assert.deepStrictEqual([...Message.ids(0)], [])
  })
})
