/**
 * Publishes waiting for a congested socket wait on one callback that the drain, the socket's
 * close and the channel's end all call. Given up (timeout) while waiting, they are never written
 * and leave nothing registered; the rest go once each after the drain, and the confirm window is
 * whole afterwards. When the channel ends (a 406 from the peer, or the connection reset) while
 * some publishes wait for the drain, others for window slots and others for their confirms (each
 * confirm wait run by several fibers), each ends with its typed outcome, also for a fiber that
 * runs another wait as soon as it is woken, or closes the channel. Twenty thousand publishers
 * given up at once unregister, and as many more drain through repeated congestion.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { type Frame, Methods } from "@effect-amqp/protocol"
import { FaultProxy, ScriptedPeer } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { publishEnding } from "../support/Outcome.ts"
import { leakChecked } from "../support/Probe.ts"

const CH = 1
const idBody = (id: number) => {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, id)
  return b
}

interface PeerLog {
  readonly ids: Array<number>
  publishes: number
  bigBodies: number
}

/**
 * A peer: handshake, channel 1 (confirm mode or not), then reads every publish; records the ids
 * of 4-byte bodies; acks each publish (in confirm mode) whose id `ack` approves (undefined: a
 * big body). Answers channel.close and connection.close.
 */
const peerScript = (
  mode: "confirm" | "plain",
  ack: (id: number | undefined) => boolean,
  log: PeerLog,
  connected: Deferred.Deferred<ScriptedPeer.PeerConnection>
) =>
(client: ScriptedPeer.PeerConnection) =>
  Effect.gen(function*() {
    yield* Deferred.succeed(connected, client)
    yield* client.handshake({ tune: { heartbeat: 0 } })
    yield* client.expect("channel.open", { channel: CH })
    yield* client.sendMethod(CH, Methods.channelOpenOk())
    if (mode === "confirm") {
      yield* client.expect("confirm.select")
      yield* client.sendMethod(CH, Methods.confirmSelectOk())
    }
    let tag = 0
    let remaining = -1
    let chunks: Array<Uint8Array> = []
    const finish = Effect.gen(function*() {
      const size = chunks.reduce((n, c) => n + c.length, 0)
      let id: number | undefined
      if (size === 4) {
        const all = Buffer.concat(chunks)
        id = all.readUInt32BE(0)
        log.ids.push(id)
      } else log.bigBodies++
      chunks = []
      remaining = -1
      tag++
      if (mode === "confirm" && ack(id)) {
        yield* client.sendMethod(CH, Methods.basicAck({ deliveryTag: tag, multiple: false }))
      }
    })
    while (true) {
      const frame: Frame = yield* client.nextFrame({ timeoutMillis: 30_000 })
      if (frame._tag === "HeaderFrame") {
        remaining = Number(frame.bodySize)
        if (remaining === 0) yield* finish
        continue
      }
      if (frame._tag === "BodyFrame") {
        chunks.push(frame.payload)
        remaining -= frame.payload.length
        if (remaining === 0) yield* finish
        continue
      }
      if (frame._tag !== "MethodFrame") continue
      const m = frame.method
      if (m._tag === "basic.publish") log.publishes++
      else if (m._tag === "channel.close") yield* client.sendMethod(CH, Methods.channelCloseOk())
      else if (m._tag === "connection.close") {
        yield* client.sendMethod(0, Methods.connectionCloseOk())
        yield* client.close("fin")
        return
      }
    }
  })

/** Stops the proxy passing on what the client writes, then publishes 24 MiB: the socket is congested. */
const congest = (channel: AmqpChannel.AmqpChannel, proxy: FaultProxy.FaultProxy) =>
  Effect.andThen(proxy.stopReading("clientToServer"), channel.publishAsync("", "q", new Uint8Array(24 * 1024 * 1024)))

const setup = (mode: "confirm" | "plain", window: number, ack: (id: number | undefined) => boolean) =>
  Effect.gen(function*() {
    const log: PeerLog = { ids: [], publishes: 0, bigBodies: 0 }
    const connected = yield* Deferred.make<ScriptedPeer.PeerConnection>()
    const peer = yield* ScriptedPeer.make()
    const peerFiber = yield* Effect.forkScoped(
      Effect.flatMap(peer.accept(), (client) => Effect.exit(peerScript(mode, ack, log, connected)(client))),
      { startImmediately: true }
    )
    const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: peer.port } })
    const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${proxy.port}`, {
      heartbeat: 0,
      closeTimeout: 500
    })
    const core = yield* AmqpChannel.openCore(connection, { maxOutstandingConfirms: window })
    const channel = AmqpChannel.makeChannel(core)
    if (mode === "confirm") yield* channel.confirmSelect
    const client = yield* Deferred.await(connected)
    const internals = core as unknown as {
      drainWaiters: Set<unknown>
      slots: number
      slotWaiters: Array<unknown>
      confirms: { outstanding: number }
    }
    return { log, proxy, connection, core, channel, client, internals, peerFiber }
  })

describe("publishes waiting for a congested socket", () => {
  for (const mode of ["confirm", "plain"] as const) {
    it.live(
      `${mode}: half given up while waiting, then drained: nothing lost, doubled or left behind`,
      () =>
        leakChecked(Effect.gen(function*() {
          const window = 1000
          const { channel, connection, internals, log, proxy } = yield* setup(mode, window, () => true)
          const big = yield* congest(channel, proxy)
          assert.isTrue(connection.core.transport.congested())
          const n = 300
          const fibers = yield* Effect.forEach(
            Array.from({ length: n }, (_, i) => i),
            (i) =>
              Effect.forkChild(
                Effect.exit(
                  i % 2 === 0
                    ? channel.publish("", "q", idBody(i)).pipe(Effect.timeout("150 millis"))
                    : channel.publish("", "q", idBody(i))
                ),
                { startImmediately: true }
              )
          )
          yield* Effect.sleep(400)
          assert.strictEqual(internals.drainWaiters.size, n / 2, "only the ones not given up wait")
          if (mode === "confirm") assert.strictEqual(internals.slots, 1 + n / 2, "slots: the big one + the waiting")
          yield* proxy.resumeReading("clientToServer")
          yield* big.pipe(Effect.timeout("20 seconds"))
          const exits = yield* Effect.forEach(fibers, (f) => Fiber.join(f).pipe(Effect.timeout("20 seconds")))
          const endings = exits.map(publishEnding)
          const expected = Array.from({ length: n }, (_, i) => (i % 2 === 0 ? "TimeoutError" : "ok"))
          assert.deepStrictEqual(endings, expected)
          assert.strictEqual(internals.drainWaiters.size, 0)
          if (mode === "confirm") {
            assert.strictEqual(internals.slots, 0)
            assert.strictEqual(internals.confirms.outstanding, 0)
          }
          // exactly a window's worth more, all admitted at once and confirmed
          const more = yield* Effect.forEach(
            Array.from({ length: window }, (_, i) => 10_000 + i),
            (id) => channel.publishAsync("", "q", idBody(id)).pipe(Effect.timeout("2 seconds"))
          )
          yield* Effect.forEach(more, (wait) => wait.pipe(Effect.timeout("10 seconds")), { concurrency: "unbounded" })
          // wait until the peer has read them all
          for (let i = 0; i < 200 && log.ids.length < n / 2 + window; i++) yield* Effect.sleep(20)
          const sorted = log.ids.toSorted((a, b) => a - b)
          const wanted = [
            ...Array.from({ length: n }, (_, i) => i).filter((i) => i % 2 === 1),
            ...Array.from({ length: window }, (_, i) => 10_000 + i)
          ]
          assert.deepStrictEqual(sorted, wanted, "the peer got each kept publish once and no given-up one")
          assert.strictEqual(log.bigBodies, 1)
          assert.strictEqual(log.publishes, 1 + n / 2 + window)
        })),
      60_000
    )
  }

  for (const end of ["channel closed with 406", "connection reset"] as const) {
    it.live(
      `confirm: ${end} while some publishes await confirms (several fibers each) and others the drain`,
      () =>
        leakChecked(Effect.gen(function*() {
          // The peer acks nothing.
          const { channel, client, connection, internals, proxy } = yield* setup("confirm", 50, () => false)
          const sent = yield* Effect.forEach([1, 2, 3], (id) => channel.publishAsync("", "q", idBody(id)))
          // Each sent wait run by three fibers: one plain, one timing out early, one interrupted.
          const onSent = yield* Effect.forEach(sent, (wait) =>
            Effect.all([
              Effect.forkChild(Effect.exit(wait), { startImmediately: true }),
              Effect.forkChild(Effect.exit(Effect.timeout(wait, "50 millis")), { startImmediately: true }),
              Effect.forkChild(Effect.exit(wait), { startImmediately: true })
            ]))
          yield* Effect.forEach(onSent, ([, , interrupted]) => Fiber.interrupt(interrupted))
          yield* Effect.sleep(100)
          const big = yield* congest(channel, proxy)
          const waiting = yield* Effect.forEach(
            [4, 5, 6],
            (id) => Effect.forkChild(Effect.exit(channel.publish("", "q", idBody(id))), { startImmediately: true })
          )
          // and a drain waiter given up
          const givenUp = yield* Effect.exit(channel.publish("", "q", idBody(7)).pipe(Effect.timeout("50 millis")))
          assert.strictEqual(publishEnding(givenUp), "TimeoutError")
          yield* Effect.sleep(100)
          assert.strictEqual(internals.drainWaiters.size, 3)
          assert.isTrue(connection.core.transport.congested())
          if (end === "channel closed with 406") {
            yield* client.sendMethod(
              CH,
              Methods.channelClose({ replyCode: 406, replyText: "PRECONDITION_FAILED", classId: 60, methodId: 40 })
            )
          } else {
            yield* proxy.reset()
          }
          const cause = end === "channel closed with 406" ? "AmqpChannelError" : "AmqpConnectionError"
          const waitingEnds = yield* Effect.forEach(waiting, (f) => Fiber.join(f).pipe(Effect.timeout("3 seconds")))
          assert.deepStrictEqual(
            waitingEnds.map(publishEnding),
            Array(3).fill(`Unconfirmed(sent: false, cause: ${cause})`)
          )
          const sentEnds = yield* Effect.forEach(
            onSent,
            ([plain, early]) => Effect.all([Fiber.join(plain), Fiber.join(early)]).pipe(Effect.timeout("3 seconds"))
          )
          assert.deepStrictEqual(
            sentEnds.map(([a, b]) => [publishEnding(a), publishEnding(b)]),
            Array.from({ length: 3 }, () => [`Unconfirmed(sent: true, cause: ${cause})`, "TimeoutError"])
          )
          for (const [, , interrupted] of onSent) {
            assert.strictEqual(publishEnding(yield* Fiber.await(interrupted)), "interrupted")
          }
          // run again afterwards
          for (const wait of [...sent, big]) {
            assert.strictEqual(publishEnding(yield* Effect.exit(wait)), `Unconfirmed(sent: true, cause: ${cause})`)
          }
          assert.strictEqual(internals.drainWaiters.size, 0)
          assert.strictEqual(internals.confirms.outstanding, 0)
          // a publish now fails at once
          const after = yield* Effect.exit(channel.publish("", "q", idBody(8)).pipe(Effect.timeout("1 second")))
          assert.notStrictEqual(publishEnding(after), "TimeoutError")
          assert.notStrictEqual(publishEnding(after), "ok")
          yield* proxy.resumeReading("clientToServer")
        })),
      60_000
    )
  }

  it.live(
    "confirm: a fiber woken by the drain closes the channel while the others are woken by it too",
    () =>
      leakChecked(Effect.gen(function*() {
        const { channel, core, internals, proxy } = yield* setup("confirm", 100, () => true)
        const big = yield* congest(channel, proxy)
        const closer = yield* Effect.forkChild(
          Effect.exit(Effect.gen(function*() {
            const wait = yield* channel.publishAsync("", "q", idBody(1))
            // woken by the drain: close the channel right away, before awaiting our confirm
            const closing = yield* Effect.forkChild(core.close, { startImmediately: true })
            const mine = yield* Effect.exit(wait)
            yield* Fiber.join(closing)
            return publishEnding(mine)
          })),
          { startImmediately: true }
        )
        const others = yield* Effect.forEach(
          Array.from({ length: 20 }, (_, i) => i + 2),
          (id) => Effect.forkChild(Effect.exit(channel.publish("", "q", idBody(id))), { startImmediately: true })
        )
        yield* Effect.sleep(100)
        assert.strictEqual(internals.drainWaiters.size, 21)
        yield* proxy.resumeReading("clientToServer")
        const closerExit = yield* Fiber.join(closer).pipe(Effect.timeout("10 seconds"))
        const otherEnds = yield* Effect.forEach(others, (f) => Fiber.join(f).pipe(Effect.timeout("10 seconds")))
        const bigEnd = publishEnding(yield* Effect.exit(big.pipe(Effect.timeout("10 seconds"))))
        // Closing waits for the outstanding confirms, so what was sent may still be confirmed;
        // what had not left by then fails as closed. Either way every publish ends, typed.
        const allowed = [
          "ok",
          "AmqpClosedError",
          "Unconfirmed(sent: true, cause: AmqpClosedError)",
          "Unconfirmed(sent: false, cause: AmqpClosedError)"
        ]
        assert.include(allowed, bigEnd)
        assert.isTrue(Exit.isSuccess(closerExit), "the closing fiber ends")
        if (Exit.isSuccess(closerExit)) assert.include(allowed, closerExit.value)
        for (const ending of otherEnds.map(publishEnding)) assert.include(allowed, ending)
        assert.strictEqual(internals.drainWaiters.size, 0)
      })),
    60_000
  )

  it.live(
    "406 with publishes waiting for slots and for the drain; a woken one awaits a sent one's confirm",
    () =>
      leakChecked(Effect.gen(function*() {
        const { channel, client, internals, proxy } = yield* setup("confirm", 3, () => false)
        const sent = yield* channel.publishAsync("", "q", Uint8Array.of(1))
        yield* Effect.sleep(50)
        const big = yield* congest(channel, proxy)
        // this one holds the last slot and waits for the drain; when woken (inside the channel's
        // end, before the confirms are failed) it awaits `sent`'s confirm
        const reentrant = yield* Effect.forkChild(
          Effect.gen(function*() {
            const own = yield* Effect.exit(channel.publish("", "q", Uint8Array.of(2)))
            const other = yield* Effect.exit(sent)
            return [publishEnding(own), publishEnding(other)]
          }),
          { startImmediately: true }
        )
        const slotWaiting = yield* Effect.forEach(
          [3, 4, 5, 6, 7],
          (b) => Effect.forkChild(Effect.exit(channel.publish("", "q", Uint8Array.of(b))), { startImmediately: true })
        )
        yield* Effect.sleep(100)
        assert.strictEqual(internals.drainWaiters.size, 1)
        assert.strictEqual(internals.slotWaiters.length, 5)
        yield* client.sendMethod(
          CH,
          Methods.channelClose({ replyCode: 406, replyText: "PRECONDITION_FAILED", classId: 60, methodId: 40 })
        )
        const r = yield* Fiber.join(reentrant).pipe(Effect.timeout("3 seconds"))
        assert.deepStrictEqual(r, [
          "Unconfirmed(sent: false, cause: AmqpChannelError)",
          "Unconfirmed(sent: true, cause: AmqpChannelError)"
        ])
        const ends = yield* Effect.forEach(slotWaiting, (f) => Fiber.join(f).pipe(Effect.timeout("3 seconds")))
        assert.deepStrictEqual(
          ends.map(publishEnding),
          Array(5).fill("Unconfirmed(sent: false, cause: AmqpChannelError)")
        )
        assert.strictEqual(publishEnding(yield* Effect.exit(big)), "Unconfirmed(sent: true, cause: AmqpChannelError)")
        assert.strictEqual(internals.drainWaiters.size, 0)
        assert.strictEqual(internals.slotWaiters.length, 0)
        assert.strictEqual(internals.slots, 0)
        yield* proxy.resumeReading("clientToServer")
      })),
    60_000
  )

  it.live(
    "plain: 20,000 publishers given up at once unregister, and 20,000 x 1 KiB drain through repeated congestion",
    () =>
      leakChecked(Effect.gen(function*() {
        const { channel, connection, internals, proxy } = yield* setup("plain", 1000, () => true)
        yield* congest(channel, proxy)
        assert.isTrue(connection.core.transport.congested())
        const n = 20_000
        const body = new Uint8Array(1024)
        const first = yield* Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          () => Effect.forkChild(Effect.exit(channel.publish("", "q", body)), { startImmediately: true })
        )
        assert.strictEqual(internals.drainWaiters.size, n)
        yield* Effect.forEach(first, Fiber.interrupt, { discard: true })
        assert.strictEqual(internals.drainWaiters.size, 0)
        const second = yield* Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          () => Effect.forkChild(Effect.exit(channel.publish("", "q", body)), { startImmediately: true })
        )
        yield* proxy.resumeReading("clientToServer")
        const ends = yield* Effect.forEach(second, (f) => Fiber.join(f).pipe(Effect.timeout("60 seconds")))
        assert.isTrue(ends.every((e) => publishEnding(e) === "ok"))
        assert.strictEqual(internals.drainWaiters.size, 0)
      })),
    120_000
  )
})
