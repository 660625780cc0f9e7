/**
 * Pieces of scripted AMQP conversations for tests against `ScriptedPeer`: a peer running one
 * script, a delivery's frames, and recorders of what the client sends once the scripted part is
 * over.
 */
import { encodeFrame, encodeMethod, type Frame, Methods } from "@effect-amqp/protocol"
import { ScriptedPeer } from "@effect-amqp/testing"
import { Effect, Fiber } from "effect"

/** The channel the scripted conversations use. */
export const CHANNEL = 1

export const peerUrl = (port: number) => `amqp://guest:guest@127.0.0.1:${port}`

export type Script = (client: ScriptedPeer.PeerConnection) => Effect.Effect<unknown, ScriptedPeer.ScriptedPeerError>

/**
 * A peer that runs `script` on the first connection it accepts; `client` joins the script and
 * gives that connection, whatever the script's outcome.
 */
export const servedBy = (script: Script) =>
  Effect.gen(function*() {
    const peer = yield* ScriptedPeer.make()
    const running = yield* Effect.forkScoped(
      Effect.flatMap(peer.accept(), (client) => Effect.as(Effect.exit(script(client)), client)),
      { startImmediately: true }
    )
    return { port: peer.port, client: Fiber.join(running) }
  })

/** The handshake without heartbeats, then channel 1 opened. */
export const openChannel: Script = (client) =>
  Effect.gen(function*() {
    yield* client.handshake({ tune: { heartbeat: 0 } })
    yield* client.expect("channel.open", { channel: CHANNEL })
    yield* client.sendMethod(CHANNEL, Methods.channelOpenOk())
  })

/** `openChannel`, then in confirm mode `confirm.select` answered. */
export const openChannelIn = (mode: "confirm" | "plain"): Script => (client) =>
  Effect.gen(function*() {
    yield* openChannel(client)
    if (mode === "confirm") {
      yield* client.expect("confirm.select")
      yield* client.sendMethod(CHANNEL, Methods.confirmSelectOk())
    }
  })

/** Answers the client's closes until it closes the connection (or is silent for 8 s), then FIN. */
export const answerCloses: Script = (client) =>
  Effect.gen(function*() {
    while (true) {
      const frame = yield* client.nextFrame({ timeoutMillis: 8_000 })
      if (frame._tag !== "MethodFrame") continue
      if (frame.method._tag === "channel.close") yield* client.sendMethod(frame.channel, Methods.channelCloseOk())
      if (frame.method._tag === "connection.close") {
        yield* client.sendMethod(0, Methods.connectionCloseOk())
        return yield* client.close("fin")
      }
    }
  })

/** The reply codes of the `connection.close` frames the client sent, once its socket has closed. */
export const closeCodesSent = (client: ScriptedPeer.PeerConnection) =>
  Effect.gen(function*() {
    yield* client.awaitClose({ timeoutMillis: 8_000 }).pipe(Effect.ignore)
    const received = yield* client.received
    return received.flatMap((r) =>
      r._tag === "Frame" && r.frame._tag === "MethodFrame" && r.frame.method._tag === "connection.close"
        ? [r.frame.method.replyCode]
        : []
    )
  })

/** `basic.deliver`, its content header and its body. */
export const delivery = (consumerTag: string, deliveryTag: number, text: string): Uint8Array => {
  const body = new TextEncoder().encode(text)
  const header: Frame = { _tag: "HeaderFrame", channel: CHANNEL, classId: 60, bodySize: body.length, properties: {} }
  const content: Frame = { _tag: "BodyFrame", channel: CHANNEL, payload: body }
  return Buffer.concat([
    encodeMethod(
      CHANNEL,
      Methods.basicDeliver({ consumerTag, deliveryTag, redelivered: false, exchange: "", routingKey: "q" })
    ),
    encodeFrame(header),
    encodeFrame(content)
  ])
}

/**
 * After the scripted part: answers the client's cancels and closes, and records in `seen` what it
 * sent (acks, rejects, cancels, closes) until the connection ends.
 */
export const recordUntilEnd = (connection: ScriptedPeer.PeerConnection, seen: Array<string> = []) =>
  Effect.gen(function*() {
    while (true) {
      const frame = yield* connection.nextFrame({ timeoutMillis: 10_000 })
      if (frame._tag !== "MethodFrame") continue
      const m = frame.method
      switch (m._tag) {
        case "basic.ack":
          seen.push(`ack ${m.deliveryTag}${m.multiple ? " multiple" : ""}`)
          break
        case "basic.reject":
          seen.push(`reject ${m.deliveryTag}${m.requeue ? " requeue" : ""}`)
          break
        case "basic.nack":
          seen.push(`nack ${m.deliveryTag}`)
          break
        case "basic.cancel":
          seen.push(`cancel ${m.consumerTag}`)
          yield* connection.sendMethod(CHANNEL, Methods.basicCancelOk({ consumerTag: m.consumerTag }))
          break
        case "basic.cancel-ok":
          seen.push(`cancel-ok ${m.consumerTag}`)
          break
        case "channel.close":
          seen.push("channel.close")
          yield* connection.sendMethod(CHANNEL, Methods.channelCloseOk())
          break
        case "connection.close":
          seen.push("connection.close")
          yield* connection.sendMethod(0, Methods.connectionCloseOk())
          yield* connection.awaitEnd()
          yield* connection.close("fin")
          return seen
        default:
          seen.push(m._tag)
      }
    }
  })

/** The channel of the client's next method `tag`. */
export const channelOf = (client: ScriptedPeer.PeerConnection, tag: string) =>
  Effect.map(
    client.expectFrame((f) => f._tag === "MethodFrame" && f.method._tag === tag, tag),
    (frame) => frame.channel
  )

/**
 * After the handshake: answers every channel.open (after `openDelay`, in turn), channel.close
 * (after `closeDelay`, while it reads on) and connection.close (after `connectionCloseDelay`), and
 * returns the methods the client sent, as "<channel>:<method>", once it closes the connection or
 * sends nothing for `idleMillis`.
 */
export const answerChannels = (
  client: ScriptedPeer.PeerConnection,
  delays: { readonly openDelay?: number; readonly closeDelay?: number; readonly connectionCloseDelay?: number } = {},
  idleMillis = 5_000
) =>
  Effect.gen(function*() {
    const seen: Array<string> = []
    while (true) {
      const frame = yield* client.nextFrame({ timeoutMillis: idleMillis }).pipe(Effect.option)
      if (frame._tag === "None") return seen
      const f = frame.value
      if (f._tag !== "MethodFrame") continue
      seen.push(`${f.channel}:${f.method._tag}`)
      if (f.method._tag === "channel.open") {
        yield* Effect.sleep(delays.openDelay ?? 0)
        yield* client.sendMethod(f.channel, Methods.channelOpenOk())
      } else if (f.method._tag === "channel.close") {
        const answer = Effect.andThen(
          Effect.sleep(delays.closeDelay ?? 0),
          client.sendMethod(f.channel, Methods.channelCloseOk())
        )
        yield* Effect.forkChild(answer, { startImmediately: true })
      } else if (f.method._tag === "connection.close") {
        yield* Effect.sleep(delays.connectionCloseDelay ?? 0)
        yield* client.sendMethod(0, Methods.connectionCloseOk())
        return seen
      }
    }
  })
