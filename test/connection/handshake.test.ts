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
import { ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { leakChecked } from "../support/Probe.ts"

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

type Script = (connection: ScriptedPeer.PeerConnection) => Effect.Effect<unknown, ScriptedPeer.ScriptedPeerError>

/**
 * A peer that runs `script` on its first connection, beside the test, in the test's scope.
 * `connection` waits for the script to finish and gives the connection it ran on.
 */
const scriptedPeer = (script: Script) =>
  Effect.gen(function*() {
    const peer = yield* ScriptedPeer.make()
    const running = yield* Effect.forkScoped(
      Effect.flatMap(peer.accept(), (connection) => Effect.as(script(connection), connection)),
      { startImmediately: true }
    )
    return { port: peer.port, connection: Fiber.join(running) }
  })

/** The server's part of the handshake, up to what it received last before it stops. */
const upTo: Record<"header" | "start-ok" | "tune-ok" | "open", Script> = {
  header: (c) => c.expectHeader(),
  "start-ok": (c) => c.start(),
  "tune-ok": (c) => Effect.andThen(c.start(), c.tune({ heartbeat: 0 })),
  open: (c) => Effect.andThen(c.start(), Effect.andThen(c.tune({ heartbeat: 0 }), c.expect("connection.open")))
}

/** Answers the client's end with ours (FIN), as a server does that has given up on a client. */
const answerEnd = (c: ScriptedPeer.PeerConnection) => Effect.andThen(c.awaitEnd(), c.close("fin"))

/** What the client sent, in order, once its socket is closed both ways; how it ended is left out. */
const clientFrames = (connection: ScriptedPeer.PeerConnection) =>
  Effect.andThen(connection.awaitClose(), connection.received).pipe(Effect.map(names))

const names = (received: ReadonlyArray<ScriptedPeer.Received>): Array<string> =>
  received.flatMap((event): Array<string> => {
    switch (event._tag) {
      case "Header":
        return ["protocol-header"]
      case "Frame":
        return [event.frame._tag === "MethodFrame" ? event.frame.method._tag : event.frame._tag]
      case "DecodeError":
        return ["undecodable"]
      case "End":
        return []
    }
  })

const header = ["protocol-header"]
const startOk = [...header, "connection.start-ok"]
const tuneOkAndOpen = [...startOk, "connection.tune-ok", "connection.open"]

const stops: ReadonlyArray<{
  readonly stopAt: keyof typeof upTo
  readonly waitingFor: "start" | "tune" | "open"
  readonly sent: ReadonlyArray<string>
}> = [
  { stopAt: "header", waitingFor: "start", sent: header },
  { stopAt: "start-ok", waitingFor: "tune", sent: startOk },
  { stopAt: "tune-ok", waitingFor: "open", sent: tuneOkAndOpen },
  { stopAt: "open", waitingFor: "open", sent: tuneOkAndOpen }
]

describe("handshake against a peer that closes", () => {
  const sides = [
    { server: true, client: true, possibly: false },
    { server: false, client: true, possibly: true },
    { server: true, client: false, possibly: true }
  ]
  for (const { client, possibly, server } of sides) {
    it.live(
      `a close after start-ok is ${possibly ? "" : "not "}possibly a refused login when the server ${
        server ? "says" : "does not say"
      } it reports one with connection.close and the client ${client ? "says" : "does not say"} it takes one`,
      () =>
        leakChecked(Effect.gen(function*() {
          const serverProperties = {
            ...ScriptedPeer.defaultServerProperties,
            capabilities: { publisher_confirms: true, authentication_failure_close: server }
          }
          const peer = yield* scriptedPeer((c) => Effect.andThen(c.start({ serverProperties }), c.close("fin")))
          const options = {
            handshakeTimeout: 5_000,
            closeTimeout: 1_500,
            // The application's capabilities add to the client's own, here to say it takes none.
            clientProperties: { capabilities: { authentication_failure_close: client } }
          }
          const error = yield* Effect.scoped(AmqpConnection.fromUrl(url(peer.port), options)).pipe(Effect.flip)
          const reason = (error as AmqpConnectionError).reason
          assert.strictEqual(reason._tag, "HandshakeFailed")
          assert.strictEqual((reason as HandshakeFailed).possiblyAuthenticationFailure, possibly)
          const sent = (yield* peer.connection).received
          const sentProperties = (yield* sent).flatMap((r) =>
            r._tag === "Frame" && r.frame._tag === "MethodFrame" && r.frame.method._tag === "connection.start-ok"
              ? [r.frame.method.clientProperties]
              : []
          )[0]
          assert.deepInclude(sentProperties?.["capabilities"] as object, {
            authentication_failure_close: client,
            publisher_confirms: true,
            consumer_cancel_notify: true
          })
        }))
    )
  }

  it.live("a server that drops a start-ok over 4096 bytes is said to, and it is permanent", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* scriptedPeer((c) => Effect.andThen(c.start(), c.close("reset")))
      // A token of 6,000 bytes for a password, as OAuth 2 deployments send.
      const options = { handshakeTimeout: 5_000, closeTimeout: 1_500, password: "t".repeat(6_000) }
      const error = yield* Effect.scoped(AmqpConnection.fromUrl(url(peer.port), options)).pipe(Effect.flip)
      const failed = (error as AmqpConnectionError).reason as HandshakeFailed
      assert.strictEqual(failed._tag, "HandshakeFailed")
      assert.isTrue(failed.possiblyAuthenticationFailure)
      assert.isTrue((error as AmqpConnectionError).isPermanent)
      const size = (yield* (yield* peer.connection).received).flatMap((r) =>
        r._tag === "Frame" && r.frame._tag === "MethodFrame" && r.frame.method._tag === "connection.start-ok"
          ? [encodeMethod(0, r.frame.method).length]
          : []
      )[0]
      assert.isAbove(size ?? 0, 6_000)
      assert.include(failed.message, `connection.start-ok was ${size} bytes`)
      assert.include(failed.message, "initial_frame_max")
    })))

  for (const how of ["fin", "reset"] as const) {
    for (const { sent, stopAt, waitingFor } of stops) {
      it.live(`fails with HandshakeFailed at ${waitingFor} when the peer sends ${how} after ${stopAt}`, () =>
        leakChecked(Effect.gen(function*() {
          const peer = yield* scriptedPeer((c) => Effect.andThen(upTo[stopAt](c), c.close(how)))
          const { millis, reason } = yield* failedAttempt(peer.port, 5_000)

          assert.strictEqual(reason._tag, "HandshakeFailed")
          const failed = reason as HandshakeFailed
          assert.strictEqual(failed.step, waitingFor)
          // The peer says it refuses a login with connection.close (authentication_failure_close),
          // so a close after start-ok is not taken for a refused login.
          assert.isFalse(failed.possiblyAuthenticationFailure)
          assert.include(failed.message, how === "fin" ? "closed the connection" : "reset the connection")
          assert.isBelow(millis, 1_000)
          assert.deepStrictEqual(yield* clientFrames(yield* peer.connection), sent)
        })))
    }
  }
})

describe("handshake against a peer that goes silent", () => {
  // The peer neither answers nor returns the client's FIN, like a hung server.
  const silences: ReadonlyArray<
    { readonly stopAt: string; readonly step: "start" | "tune" | "open"; readonly script: Script }
  > = [
    { stopAt: "header", step: "start", script: upTo.header },
    { stopAt: "start-ok", step: "tune", script: upTo["start-ok"] },
    { stopAt: "tune", step: "open", script: upTo["tune-ok"] }
  ]
  for (const { script, step, stopAt } of silences) {
    it.live(`fails with Timeout at ${step} within handshakeTimeout when the peer is silent after ${stopAt}`, () =>
      leakChecked(Effect.gen(function*() {
        const peer = yield* scriptedPeer(script)
        const { millis, reason } = yield* failedAttempt(peer.port, 400)

        assert.deepStrictEqual(reason, new Timeout({ step, afterMillis: 400 }))
        assert.isAtLeast(millis, 390)
        assert.isBelow(millis, 1_400)
      })))
  }

  it.live("a timed-out handshake closes its socket and stops its heartbeat before the caller's scope closes", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* scriptedPeer((c) => Effect.andThen(c.start(), c.tune({ heartbeat: 1 })))
      const options = { handshakeTimeout: 300, closeTimeout: 1_000 }
      const error = yield* AmqpConnection.fromUrl(url(peer.port), options).pipe(Effect.flip)
      const connection = yield* peer.connection
      const seenAtFailure = (yield* connection.received).length
      assert.deepStrictEqual((error as AmqpConnectionError).reason, new Timeout({ step: "open", afterMillis: 300 }))

      // Closed within 1.2 s of the failure, and no heartbeat in those 1.2 s.
      const [closed] = yield* Effect.all([
        Effect.result(connection.awaitClose({ timeoutMillis: 1_200 })),
        Effect.sleep("1200 millis")
      ], { concurrency: 2 })
      const afterFailure = names((yield* connection.received).slice(seenAtFailure))
      assert.notInclude(afterFailure, "HeartbeatFrame")
      assert.isTrue(closed._tag === "Success", `client after the failure: ${afterFailure.join(", ")}`)
    })))
})

/**
 * An attempt against a peer running `script`, which then returns the client's FIN; the client must
 * have sent exactly `sent`.
 */
const brokenPeerAttempt = (script: Script, sent: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const peer = yield* scriptedPeer((c) => Effect.andThen(script(c), answerEnd(c)))
    const { millis, reason } = yield* failedAttempt(peer.port, 5_000)
    assert.isBelow(millis, 1_000)
    assert.deepStrictEqual(yield* clientFrames(yield* peer.connection), sent)
    return reason
  })

/** Answers the protocol header with `bytes` instead of connection.start. */
const replyToHeader = (bytes: Uint8Array): Script => (c) => Effect.andThen(c.expectHeader(), c.sendRaw(bytes))

describe("handshake against a peer that breaks the protocol", () => {
  it.live("fails at protocol-header when the server answers with another AMQP version's header", () =>
    leakChecked(Effect.gen(function*() {
      const amqp10 = Uint8Array.of(0x41, 0x4d, 0x51, 0x50, 0, 1, 0, 0)
      const reason = yield* brokenPeerAttempt(replyToHeader(amqp10), header)
      assert.strictEqual(reason._tag, "HandshakeFailed")
      assert.strictEqual((reason as HandshakeFailed).step, "protocol-header")
      assert.isFalse((reason as HandshakeFailed).possiblyAuthenticationFailure)
      assert.include((reason as HandshakeFailed).message, "1-0-0")
    })))

  it.live("fails with ProtocolViolation 501 when connection.start does not end with 0xCE", () =>
    leakChecked(Effect.gen(function*() {
      const start = encodeMethod(0, Methods.connectionStart({ serverProperties: {} }))
      start[start.length - 1] = 0x00
      const reason = yield* brokenPeerAttempt(replyToHeader(start), header)
      assert.strictEqual(reason._tag, "ProtocolViolation")
      assert.strictEqual((reason as ProtocolViolation).replyCode, 501)
    })))

  it.live("fails at start when the server does not offer the configured mechanism", () =>
    leakChecked(Effect.gen(function*() {
      const offer = Methods.connectionStart({
        serverProperties: ScriptedPeer.defaultServerProperties,
        mechanisms: "AMQPLAIN EXTERNAL"
      })
      const reason = yield* brokenPeerAttempt(replyToHeader(encodeMethod(0, offer)), header)
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
      const tune = Methods.connectionTune({ channelMax: 2047, frameMax: 2048, heartbeat: 0 })
      const reason = yield* brokenPeerAttempt((c) => Effect.andThen(c.start(), c.sendMethod(0, tune)), startOk)
      assert.deepStrictEqual(
        reason,
        new ProtocolViolation({ replyCode: 501, message: "server proposed frame_max 2048, below 4096" })
      )
    })))
})
