import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import { type Command, CommandAssembler } from "../src/CommandAssembler.ts"
import type { BodyFrame, Frame, HeaderFrame, MethodFrame } from "../src/Frame.ts"
import { FrameDecoder } from "../src/FrameDecoder.ts"
import { Methods } from "../src/generated/Methods.ts"
import { MessageEncoder } from "../src/MessageEncoder.ts"
import type { BasicProperties } from "../src/Properties.ts"
import { frameErrorOf } from "./fixtures/Errors.ts"
import { assemble, decodeChunks, mixedBody, mixedProperties, mixedStream, pattern } from "./fixtures/Streams.ts"

const CHANNEL = 5

const deliver: MethodFrame = {
  _tag: "MethodFrame",
  channel: CHANNEL,
  method: Methods.basicDeliver({ consumerTag: "c", deliveryTag: 1, exchange: "", routingKey: "q" })
}

const header = (bodySize: number, properties: BasicProperties = { contentType: "text/plain" }): HeaderFrame => ({
  _tag: "HeaderFrame",
  channel: CHANNEL,
  classId: 60,
  bodySize,
  properties
})

const body = (payload: Uint8Array): BodyFrame => ({ _tag: "BodyFrame", channel: CHANNEL, payload })

const pushAll = (assembler: CommandAssembler, frames: ReadonlyArray<Frame>) => frames.map((f) => assembler.push(f))

describe("assembling", () => {
  it("completes a method without content at once", () => {
    const ack: MethodFrame = { _tag: "MethodFrame", channel: CHANNEL, method: Methods.basicAck({ deliveryTag: 3 }) }
    const assembler = new CommandAssembler(CHANNEL)
    assert.deepStrictEqual(assembler.push(ack), { channel: CHANNEL, method: ack.method })
    assert.isFalse(assembler.inProgress)
  })

  it("assembles a method, its header and several body frames into one command", () => {
    const assembler = new CommandAssembler(CHANNEL)
    const results = pushAll(assembler, [
      deliver,
      header(10),
      body(Uint8Array.of(0, 1, 2, 3)),
      body(Uint8Array.of(4, 5)),
      body(Uint8Array.of(6, 7, 8, 9))
    ])
    assert.deepStrictEqual(results.slice(0, 4), [undefined, undefined, undefined, undefined])
    const command = results[4]
    assert.deepStrictEqual(command?.method, deliver.method)
    assert.deepStrictEqual(command?.properties, { contentType: "text/plain" })
    assert.deepStrictEqual(Array.from(command?.body ?? []), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert.isFalse(assembler.inProgress)
  })

  it("passes a body that arrives in one frame on without copying it", () => {
    const payload = pattern(100)
    const [, , command] = pushAll(new CommandAssembler(CHANNEL), [deliver, header(100), body(payload)])
    assert.strictEqual(command?.body, payload)
  })

  it("completes a zero-length body at the header", () => {
    const assembler = new CommandAssembler(CHANNEL)
    assert.isUndefined(assembler.push(deliver))
    assert.isTrue(assembler.inProgress)
    const command = assembler.push(header(0, {}))
    assert.strictEqual(command?.body?.length, 0)
    assert.deepStrictEqual(command?.properties, {})
    assert.isFalse(assembler.inProgress)
  })

  it("accepts empty body frames among the others", () => {
    const empty = new Uint8Array(0)
    const frames = [deliver, header(3), body(empty), body(Uint8Array.of(1)), body(empty), body(Uint8Array.of(2, 3))]
    const command = pushAll(new CommandAssembler(CHANNEL), frames).at(-1)
    assert.deepStrictEqual(Array.from(command?.body ?? []), [1, 2, 3])
  })

  it("assembles bodies cut into frames of any sizes", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 1, maxLength: 20 }), (sizes) => {
        const total = sizes.reduce((a, b) => a + b, 0)
        const content = pattern(total, sizes.length)
        const assembler = new CommandAssembler(CHANNEL)
        assembler.push(deliver)
        let command = assembler.push(header(total))
        let at = 0
        for (const size of sizes) {
          if (command !== undefined) break
          command = assembler.push(body(content.subarray(at, at + size)))
          at += size
        }
        assert.deepStrictEqual(Array.from(command?.body ?? []), Array.from(content))
        assert.isFalse(assembler.inProgress)
      }),
      { numRuns: 500 }
    )
  })

  it("does not allocate the size a header announces before the body arrives", () => {
    // A peer may announce any size up to 2^53 - 1; only bytes that actually arrive may cost memory.
    const assembler = new CommandAssembler(CHANNEL)
    pushAll(assembler, [deliver, header(2 ** 40)])
    assert.isUndefined(assembler.push(body(pattern(10))))
    assert.isUndefined(assembler.push(body(pattern(10))))
    assert.isTrue(assembler.inProgress)
  })

  it("assembles the commands of a mixed stream, channel by channel", () => {
    const commands = assemble(decodeChunks([mixedStream]))
    assert.deepStrictEqual(commands.map((c) => [c.channel, c.method._tag]), [
      [0, "connection.tune"],
      [1, "basic.publish"],
      [2, "basic.deliver"],
      [1, "basic.ack"],
      [3, "basic.get-ok"],
      [4, "channel.close"]
    ])
    assert.deepStrictEqual(commands[1]?.properties, mixedProperties)
    assert.isTrue(Buffer.from(commands[1]?.body ?? []).equals(mixedBody))
    assert.strictEqual(commands[2]?.body?.length, 0)
    assert.strictEqual(Buffer.from(commands[4]?.body ?? []).toString(), "hello")
  })
})

describe("frames out of order", () => {
  it("rejects a content header without a content method with 505", () => {
    frameErrorOf(505, () => new CommandAssembler(CHANNEL).push(header(1)))
    const ack: MethodFrame = { _tag: "MethodFrame", channel: CHANNEL, method: Methods.basicAck() }
    frameErrorOf(505, () => pushAll(new CommandAssembler(CHANNEL), [ack, header(1)]))
  })

  it("rejects a body frame without a header with 505", () => {
    frameErrorOf(505, () => new CommandAssembler(CHANNEL).push(body(Uint8Array.of(1))))
    frameErrorOf(505, () => pushAll(new CommandAssembler(CHANNEL), [deliver, body(Uint8Array.of(1))]))
  })

  it("rejects a body frame after a zero-size header with 505", () => {
    frameErrorOf(505, () => pushAll(new CommandAssembler(CHANNEL), [deliver, header(0), body(Uint8Array.of(1))]))
  })

  it("rejects a method while content is still expected with 505", () => {
    frameErrorOf(505, () => pushAll(new CommandAssembler(CHANNEL), [deliver, deliver]))
    frameErrorOf(
      505,
      () => pushAll(new CommandAssembler(CHANNEL), [deliver, header(2), body(Uint8Array.of(1)), deliver])
    )
  })

  it("rejects a second content header with 505", () => {
    frameErrorOf(505, () => pushAll(new CommandAssembler(CHANNEL), [deliver, header(2), header(2)]))
  })

  it("rejects a heartbeat with 501, as the spec's heartbeat rules say", () => {
    frameErrorOf(501, () => new CommandAssembler(CHANNEL).push({ _tag: "HeartbeatFrame", channel: CHANNEL }))
  })

  it("rejects a content header of another class than its method's with 501", () => {
    const ofConnectionClass: HeaderFrame = { ...header(1), classId: 10 }
    frameErrorOf(501, () => pushAll(new CommandAssembler(CHANNEL), [deliver, ofConnectionClass]))
  })

  it("rejects a connection method, which belongs on channel 0, with 503", () => {
    const methods = [
      Methods.connectionClose({ replyCode: 320, replyText: "bye", classId: 0, methodId: 0 }),
      Methods.connectionBlocked({ reason: "low on memory" }),
      Methods.connectionOpenOk()
    ]
    for (const method of methods) {
      frameErrorOf(503, () => new CommandAssembler(CHANNEL).push({ _tag: "MethodFrame", channel: CHANNEL, method }))
    }
  })

  it("rejects a body longer than its header announced with 501", () => {
    frameErrorOf(501, () => pushAll(new CommandAssembler(CHANNEL), [deliver, header(2), body(Uint8Array.of(1, 2, 3))]))
    frameErrorOf(
      501,
      () =>
        pushAll(new CommandAssembler(CHANNEL), [
          deliver,
          header(3),
          body(Uint8Array.of(1, 2)),
          body(Uint8Array.of(3, 4))
        ])
    )
  })

  it("forgets a partly received command on reset", () => {
    const assembler = new CommandAssembler(CHANNEL)
    pushAll(assembler, [deliver, header(3), body(Uint8Array.of(1))])
    assembler.reset()
    assert.isFalse(assembler.inProgress)
    const command = pushAll(assembler, [deliver, header(1), body(Uint8Array.of(9))]).at(-1)
    assert.deepStrictEqual(Array.from(command?.body ?? []), [9])
  })
})

const encodeMessage = (content: Uint8Array, frameMax: number): Buffer => {
  const encoder = new MessageEncoder({ frameMax, copyLimit: 0 })
  const parts = encoder.message(1, Methods.basicPublish({ routingKey: "q" }), {}, content)
  return Buffer.concat(Array.isArray(parts) ? parts : [parts])
}

describe("CommandAssembler joining frames in place", () => {
  it("leaves the caller's buffer untouched unless asked to join in place", () => {
    const content = pattern(50_000)
    const wire = encodeMessage(content, 4096)
    const copy = Buffer.from(wire)
    const assembler = new CommandAssembler(1)
    const commands = new FrameDecoder({ frameMax: 4096 }).push(wire).map((frame) => assembler.push(frame))
    assert.deepStrictEqual(Buffer.from(commands.at(-1)!.body!), Buffer.from(content))
    assert.isTrue(wire.equals(copy))
  })

  it("keeps a body split over frames of one chunk as one view of that chunk", () => {
    const content = pattern(131072)
    const wire = encodeMessage(content, 131072)
    const decoder = new FrameDecoder({ frameMax: 131072 })
    const assembler = new CommandAssembler(1, { joinInPlace: true })
    const commands = decoder.push(wire).map((frame) => assembler.push(frame)).filter((c) => c !== undefined)
    assert.strictEqual(commands.length, 1)
    const received = commands[0]!.body!
    assert.strictEqual(received.buffer, wire.buffer)
    assert.deepStrictEqual(Buffer.from(received), Buffer.from(content))
  })

  it("joins many frames of one chunk and leaves the frames after the message intact", () => {
    const content = pattern(50_000)
    const wire = Buffer.concat([encodeMessage(content, 4096), encodeMessage(pattern(10), 4096)])
    const decoder = new FrameDecoder({ frameMax: 4096 })
    const assembler = new CommandAssembler(1, { joinInPlace: true })
    const commands = decoder.push(wire).map((frame) => assembler.push(frame)).filter((c) => c !== undefined)
    assert.strictEqual(commands.length, 2)
    assert.deepStrictEqual(Buffer.from(commands[0]!.body!), Buffer.from(content))
    assert.deepStrictEqual(Buffer.from(commands[1]!.body!), Buffer.from(pattern(10)))
  })
})

describe("CommandAssembler with the decoder gathering into the body", () => {
  it("assembles a body fed in small chunks into one buffer, each byte copied once", () => {
    const content = pattern(300_000, 3)
    const wire = encodeMessage(content, 131072)
    const assembler = new CommandAssembler(1)
    let targets = 0
    const decoder = new FrameDecoder({
      frameMax: 131072,
      bodyTarget: (_, size) => {
        targets++
        return assembler.bodyTarget(size)
      }
    })
    const commands: Array<Command> = []
    for (let at = 0; at < wire.length; at += 1000) {
      decoder.pushEach(wire.subarray(at, at + 1000), (frame) => {
        const command = assembler.push(frame)
        if (command !== undefined) commands.push(command)
      })
    }
    assert.strictEqual(commands.length, 1)
    assert.strictEqual(targets, 3)
    assert.deepStrictEqual(Buffer.from(commands[0]!.body!), Buffer.from(content))
    assert.isTrue(wire.equals(encodeMessage(content, 131072)))
  })

  it("gives no target for a frame larger than what the header announced is left of the body", () => {
    const assembler = new CommandAssembler(1)
    assert.isUndefined(assembler.bodyTarget(10))
    assembler.push({ _tag: "MethodFrame", channel: 1, method: Methods.basicPublish({ routingKey: "q" }) })
    assembler.push({ _tag: "HeaderFrame", channel: 1, classId: 60, bodySize: 100, properties: {} })
    assert.strictEqual(assembler.bodyTarget(100)!.length, 100)
    assert.isUndefined(assembler.bodyTarget(101))
  })
})
