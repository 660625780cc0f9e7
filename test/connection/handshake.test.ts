/**
 * The handshake against a scripted peer that stops at each step: a FIN or an RST fails the
 * attempt at once with `HandshakeFailed` naming the step the client waited for; silence fails it
 * with `Timeout` naming that step, within the handshake deadline. Nothing outlives an attempt.
 */
import {
  AmqpConnection,
  type AmqpConnectionError,
  HandshakeFailed,
  ProtocolViolation,
  Timeout
} from "@effect-amqp/client"
import { encodeMethod, Methods } from "@effect-amqp/protocol"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { leakChecked } from "../support/Probe.ts"
import * as ScriptedPeer from "../support/ScriptedPeer.ts"

const url = (port: number) => `amqp://guest:guest@127.0.0.1:${port}`

/**
 * One attempt in its own scope; the error and how long until it was returned. closeTimeout is
 * longer than the deadlines asserted, so a close that waits on a dead peer shows.
 */
const failedAttempt = (port: number, handshakeTimeout: number) =>
  Effect.gen(function*() {
    const started = Date.now()
    const options = { handshakeTimeout, closeTimeout: 1_500 }
    const error = yield* Effect.scoped(AmqpConnection.fromUrl(url(port), options)).pipe(Effect.flip)
    assert.strictEqual(error._tag, "AmqpConnectionError")
    return { reason: (error as AmqpConnectionError).reason, millis: Date.now() - started }
  })

/** What the client sent, without how its socket ended. */
const clientFrames = (recording: { of: (side: "client") => Array<string> }) =>
  recording.of("client").filter((what) => what !== "FIN" && what !== "RST" && what !== "closed" && what !== "error")

const header = ["protocol-header"]
const startOk = [...header, "connection.start-ok"]
const tuneOkAndOpen = [...startOk, "connection.tune-ok", "connection.open"]

const stops: ReadonlyArray<{
  readonly stopAt: ScriptedPeer.StopPoint
  readonly waitingFor: "start" | "tune" | "open"
  readonly afterStartOk: boolean
  readonly sent: ReadonlyArray<string>
}> = [
  { stopAt: "header", waitingFor: "start", afterStartOk: false, sent: header },
  { stopAt: "start-ok", waitingFor: "tune", afterStartOk: true, sent: startOk },
  { stopAt: "tune-ok", waitingFor: "open", afterStartOk: false, sent: tuneOkAndOpen },
  { stopAt: "open", waitingFor: "open", afterStartOk: false, sent: tuneOkAndOpen }
]

describe("handshake against a peer that closes", () => {
  for (const how of ["fin", "reset"] as const) {
    for (const { afterStartOk, sent, stopAt, waitingFor } of stops) {
      it.live(`fails with HandshakeFailed at ${waitingFor} when the peer sends ${how} after ${stopAt}`, () =>
        leakChecked(Effect.gen(function*() {
          const peer = yield* ScriptedPeer.make({ stopAt, how })
          const { millis, reason } = yield* failedAttempt(peer.port, 5_000)

          assert.strictEqual(reason._tag, "HandshakeFailed")
          const failed = reason as HandshakeFailed
          assert.strictEqual(failed.step, waitingFor)
          assert.strictEqual(failed.possiblyAuthenticationFailure, afterStartOk)
          assert.include(failed.message, how === "fin" ? "closed the connection" : "reset the connection")
          assert.isBelow(millis, 1_000)
          const recording = yield* peer.connection(0)
          yield* recording.until((r) => r.find("client", "closed"), "the client's socket to close")
          assert.deepStrictEqual(clientFrames(recording), sent)
        })))
    }
  }
})

describe("handshake against a peer that goes silent", () => {
  const silences: ReadonlyArray<{ readonly stopAt: ScriptedPeer.StopPoint; readonly step: "start" | "tune" | "open" }> =
    [
      { stopAt: "header", step: "start" },
      { stopAt: "start-ok", step: "tune" },
      { stopAt: "tune", step: "open" }
    ]
  for (const { step, stopAt } of silences) {
    it.live(`fails with Timeout at ${step} within handshakeTimeout when the peer is silent after ${stopAt}`, () =>
      leakChecked(Effect.gen(function*() {
        const peer = yield* ScriptedPeer.make({ stopAt, how: "silent" })
        const { millis, reason } = yield* failedAttempt(peer.port, 400)

        assert.deepStrictEqual(reason, new Timeout({ step, afterMillis: 400 }))
        assert.isAtLeast(millis, 390)
        assert.isBelow(millis, 1_400)
      })))
  }

  it.live("a timed-out handshake closes its socket and stops its heartbeat before the caller's scope closes", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make({ stopAt: "tune", how: "silent", heartbeat: 1 })
      const options = { handshakeTimeout: 300, closeTimeout: 1_000 }
      const error = yield* AmqpConnection.fromUrl(url(peer.port), options).pipe(Effect.flip)
      const failedAt = Date.now()
      assert.deepStrictEqual((error as AmqpConnectionError).reason, new Timeout({ step: "open", afterMillis: 300 }))

      const recording = yield* peer.connection(0)
      yield* Effect.sleep("1200 millis")
      const afterFailure = recording.steps.filter((s) => s.from === "client" && s.at > failedAt).map((s) => s.what)
      assert.notInclude(afterFailure, "heartbeat")
      assert.isDefined(recording.find("client", "closed"), `client after the failure: ${afterFailure.join(", ")}`)
    })))
})

/** An attempt against a peer running `script`; the client must have sent exactly `sent`. */
const brokenPeerAttempt = (script: ScriptedPeer.Script, sent: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const peer = yield* ScriptedPeer.make(script)
    const { millis, reason } = yield* failedAttempt(peer.port, 5_000)
    assert.isBelow(millis, 1_000)
    const recording = yield* peer.connection(0)
    yield* recording.until((r) => r.find("client", "closed"), "the client's socket to close")
    assert.deepStrictEqual(clientFrames(recording), sent)
    return reason
  })

describe("handshake against a peer that breaks the protocol", () => {
  it.live("fails at protocol-header when the server answers with another AMQP version's header", () =>
    leakChecked(Effect.gen(function*() {
      const amqp10 = Uint8Array.of(0x41, 0x4d, 0x51, 0x50, 0, 1, 0, 0)
      const reason = yield* brokenPeerAttempt({ replyToHeader: amqp10 }, header)
      assert.strictEqual(reason._tag, "HandshakeFailed")
      assert.strictEqual((reason as HandshakeFailed).step, "protocol-header")
      assert.isFalse((reason as HandshakeFailed).possiblyAuthenticationFailure)
      assert.include((reason as HandshakeFailed).message, "1-0-0")
    })))

  it.live("fails with ProtocolViolation 501 when connection.start does not end with 0xCE", () =>
    leakChecked(Effect.gen(function*() {
      const start = encodeMethod(0, Methods.connectionStart({ serverProperties: {} }))
      start[start.length - 1] = 0x00
      const reason = yield* brokenPeerAttempt({ replyToHeader: start }, header)
      assert.strictEqual(reason._tag, "ProtocolViolation")
      assert.strictEqual((reason as ProtocolViolation).replyCode, 501)
    })))

  it.live("fails at start when the server does not offer the configured mechanism", () =>
    leakChecked(Effect.gen(function*() {
      const reason = yield* brokenPeerAttempt({ mechanisms: "AMQPLAIN EXTERNAL" }, header)
      assert.deepStrictEqual(
        reason,
        new HandshakeFailed({
          step: "start",
          message: "the server does not offer PLAIN; it offers AMQPLAIN, EXTERNAL",
          possiblyAuthenticationFailure: false
        })
      )
    })))

  it.live("refuses a server frame_max below the protocol minimum of 4096", () =>
    leakChecked(Effect.gen(function*() {
      const reason = yield* brokenPeerAttempt({ frameMax: 2048 }, startOk)
      assert.deepStrictEqual(
        reason,
        new ProtocolViolation({ replyCode: 501, message: "server proposed frame_max 2048, below 4096" })
      )
    })))
})
