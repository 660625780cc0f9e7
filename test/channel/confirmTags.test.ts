/**
 * Publisher confirms that do not fit what was published:
 * - an ack or nack naming a tag the channel never issued means the broker numbers the publishes
 *   differently, so none of its confirms can be trusted: the connection ends with a 503
 *   `ProtocolViolation`, and every publish waiting for a confirm ends `Unconfirmed` with it;
 * - an ack of tag 0 with `multiple` confirms every publish outstanding, as the spec defines it;
 * - a `basic.return` whose message is none of the waiting publishes' is charged to none of them.
 */
import {
  AmqpChannel,
  AmqpConnection,
  AmqpConnectionError,
  AmqpPublishError,
  ProtocolViolation,
  Returned,
  Unconfirmed
} from "@effect-amqp/client"
import { encodeFrame, encodeMethod, type Method, Methods } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { leakChecked } from "../support/Probe.ts"
import { answerCloses, closeCodesSent, openChannel, peerUrl, servedBy } from "../support/scriptedAmqp.ts"

const text = (value: string) => Buffer.from(value, "utf8")

/** Channel 1 in confirm mode; once `count` publishes have arrived, the peer sends `answer`. */
const confirmingPeer = (count: number, answer: Uint8Array) =>
  servedBy((client) =>
    Effect.gen(function*() {
      yield* openChannel(client)
      yield* client.expect("confirm.select", { channel: 1 })
      yield* client.sendMethod(1, Methods.confirmSelectOk())
      for (let i = 0; i < count; i++) {
        yield* client.expect("basic.publish", { channel: 1 })
        yield* client.nextFrame()
        yield* client.nextFrame()
      }
      yield* client.sendRaw(answer)
      yield* answerCloses(client)
    })
  )

/** Publishes `bodies` (mandatory when asked) and gives each publish's outcome. */
const publishAll = (port: number, bodies: ReadonlyArray<string>, mandatory = false) =>
  Effect.scoped(Effect.gen(function*() {
    const connection = yield* AmqpConnection.fromUrl(peerUrl(port), { heartbeat: 0, closeTimeout: 500 })
    const channel = yield* AmqpChannel.make(connection)
    yield* channel.confirmSelect
    const confirms = []
    for (const body of bodies) confirms.push(yield* channel.publishAsync("", "q", text(body), { mandatory }))
    return yield* Effect.all(confirms.map(Effect.exit)).pipe(Effect.timeout("4 seconds"))
  }))

const method = (value: Method) => encodeMethod(1, value)

describe("confirms that name no publish", () => {
  // What the peer sends, and how the client's error names it.
  const cases: ReadonlyArray<readonly [Method, string]> = [
    [Methods.basicAck({ deliveryTag: 5, multiple: true }), "basic.ack 5 multiple"],
    [Methods.basicAck({ deliveryTag: 3, multiple: false }), "basic.ack 3"],
    [Methods.basicNack({ deliveryTag: 9, multiple: false, requeue: false }), "basic.nack 9"],
    [Methods.basicAck({ deliveryTag: 0, multiple: false }), "basic.ack 0"]
  ]
  for (const [answer, named] of cases) {
    it.live(`${named}, after 2 publishes: both end unconfirmed, the connection with 503`, () =>
      leakChecked(Effect.gen(function*() {
        const peer = yield* confirmingPeer(2, method(answer))
        const outcomes = yield* publishAll(peer.port, ["one", "two"])
        const violation = new ProtocolViolation({
          replyCode: 503,
          message: `${named} on channel 1, which published no such message`
        })
        for (const outcome of outcomes) {
          assert.isTrue(Exit.isFailure(outcome), "a publish was taken as confirmed")
          const reason = Exit.isFailure(outcome) ? outcome.cause.reasons[0] : undefined
          const error = reason?._tag === "Fail" ? reason.error : undefined
          assert.instanceOf(error, AmqpPublishError)
          const unconfirmed = (error as AmqpPublishError).reason
          assert.instanceOf(unconfirmed, Unconfirmed)
          const cause = (unconfirmed as Unconfirmed).cause
          assert.instanceOf(cause, AmqpConnectionError)
          assert.deepStrictEqual((cause as AmqpConnectionError).reason, violation)
        }
        assert.deepStrictEqual(yield* closeCodesSent(yield* peer.client), [503])
      })))
  }

  it.live("ack 0 multiple confirms every publish outstanding", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* confirmingPeer(3, method(Methods.basicAck({ deliveryTag: 0, multiple: true })))
      const outcomes = yield* publishAll(peer.port, ["one", "two", "three"])
      assert.deepStrictEqual(outcomes.map(Exit.isSuccess), [true, true, true])
      assert.deepStrictEqual(yield* closeCodesSent(yield* peer.client), [200])
    })))
})

describe("a basic.return of a message no waiting publish sent", () => {
  it.live("fails no publish: each is settled by its own ack", () =>
    leakChecked(Effect.gen(function*() {
      // 'alpha' is acked, then a return of 'alpha' comes (a confused broker), then the ack of 'beta'.
      const peer = yield* confirmingPeer(
        2,
        Buffer.concat([
          method(Methods.basicAck({ deliveryTag: 1, multiple: false })),
          method(Methods.basicReturn({ replyCode: 312, replyText: "NO_ROUTE", exchange: "", routingKey: "q" })),
          encodeFrame({ _tag: "HeaderFrame", channel: 1, classId: 60, bodySize: 5, properties: {} }),
          encodeFrame({ _tag: "BodyFrame", channel: 1, payload: text("alpha") }),
          method(Methods.basicAck({ deliveryTag: 2, multiple: false }))
        ])
      )
      const outcomes = yield* publishAll(peer.port, ["alpha", "beta"], true)
      assert.deepStrictEqual(outcomes.map(Exit.isSuccess), [true, true])
    })))

  it.live("the control: a return of a waiting publish's message fails that publish as returned", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* confirmingPeer(
        2,
        Buffer.concat([
          method(Methods.basicReturn({ replyCode: 312, replyText: "NO_ROUTE", exchange: "", routingKey: "q" })),
          encodeFrame({ _tag: "HeaderFrame", channel: 1, classId: 60, bodySize: 4, properties: {} }),
          encodeFrame({ _tag: "BodyFrame", channel: 1, payload: text("beta") }),
          method(Methods.basicAck({ deliveryTag: 2, multiple: true }))
        ])
      )
      const [alpha, beta] = yield* publishAll(peer.port, ["alpha", "beta"], true)
      assert.isTrue(Exit.isSuccess(alpha!))
      assert.deepStrictEqual(
        beta,
        Exit.fail(
          new AmqpPublishError({
            reason: new Returned({ replyCode: 312, replyText: "NO_ROUTE", exchange: "", routingKey: "q" })
          })
        )
      )
    })))
})
