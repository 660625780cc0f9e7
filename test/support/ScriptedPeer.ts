/**
 * A fake AMQP 0-9-1 server on 127.0.0.1 that runs the server's half of the handshake and can stop
 * at any step: after the protocol header, after `start-ok`, after sending `tune`, after `tune-ok`
 * or after `open`, by closing with a FIN, by an RST, or by going silent (then it does not even
 * return the client's FIN, like a hung server). It can also answer the protocol header with raw
 * bytes, offer other SASL mechanisms or propose another frame_max. A peer that completes the
 * handshake answers `connection.close` with `close-ok`; any peer but a silent one returns the
 * client's FIN. Everything either side sent is in one `Recording` per connection.
 *
 * It speaks only channel 0 and frames built with `@effect-amqp/protocol`; it is not a broker.
 */
import { encodeMethod, type Frame, FrameDecoder, Methods } from "@effect-amqp/protocol"
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import type * as Net from "node:net"
import { endOf, listen, Recording, Watch } from "./Wire.ts"

/** The points where a script can stop: after receiving the header, start-ok, tune-ok or open, or after sending tune. */
export type StopPoint = "header" | "start-ok" | "tune" | "tune-ok" | "open"

export interface Script {
  /** Where to stop; without it the handshake completes. */
  readonly stopAt?: StopPoint
  readonly how?: "fin" | "reset" | "silent"
  /** Seconds, proposed in `connection.tune`. Default 0 (the client's value wins). */
  readonly heartbeat?: number
  /** frame_max proposed in `connection.tune`. Default 131072. */
  readonly frameMax?: number
  /** Offered in `connection.start`. Default "PLAIN". */
  readonly mechanisms?: string
  /** Raw bytes to answer the protocol header with instead of `connection.start`; then silence. */
  readonly replyToHeader?: Uint8Array
}

export interface ScriptedPeer {
  readonly port: number
  readonly connections: Array<Recording>
  readonly connection: (index: number) => Effect.Effect<Recording, Error>
}

type Expecting = "header" | "connection.start-ok" | "connection.tune-ok" | "connection.open" | "open" | "stopped"

export const make = (script: Script): Effect.Effect<ScriptedPeer, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const connections: Array<Recording> = []
    const arrivals = new Watch()

    const serve = (socket: Net.Socket) => {
      const recording = new Recording()
      connections.push(recording)
      arrivals.notify()
      const decoder = new FrameDecoder({ frameMax: 0 })
      let expecting: Expecting = "header"
      let header = Buffer.alloc(0)
      const stopped = () => expecting === "stopped"

      const send = (bytes: Buffer) => {
        if (socket.destroyed || socket.writableEnded) return
        recording.data("server", bytes)
        socket.write(bytes)
      }
      const method = (frame: ReturnType<typeof Methods.connectionStart> | ReturnType<typeof Methods.connectionTune>) =>
        send(encodeMethod(0, frame))
      /** True when the script stops at `point`: acts and stops reading frames. */
      const stopsAt = (point: StopPoint): boolean => {
        if (script.stopAt !== point) return false
        expecting = "stopped"
        if (script.how === "fin") {
          recording.ended("server", "FIN")
          socket.end()
        } else if (script.how === "reset") {
          recording.ended("server", "RST")
          socket.resetAndDestroy()
        }
        return true
      }
      const onFrame = (frame: Frame) => {
        if (frame._tag !== "MethodFrame" || frame.channel !== 0) return
        const tag = frame.method._tag
        if (expecting === "open" && tag === "connection.close") {
          send(encodeMethod(0, Methods.connectionCloseOk()))
          return
        }
        if (tag !== expecting) return
        switch (tag) {
          case "connection.start-ok":
            if (stopsAt("start-ok")) return
            method(Methods.connectionTune({
              channelMax: 2047,
              frameMax: script.frameMax ?? 131072,
              heartbeat: script.heartbeat ?? 0
            }))
            expecting = "connection.tune-ok"
            stopsAt("tune")
            return
          case "connection.tune-ok":
            if (stopsAt("tune-ok")) return
            expecting = "connection.open"
            return
          case "connection.open":
            if (stopsAt("open")) return
            send(encodeMethod(0, Methods.connectionOpenOk()))
            expecting = "open"
            return
        }
      }

      socket.on("data", (chunk: Buffer) => {
        recording.data("client", chunk)
        if (expecting === "stopped") return
        let rest = chunk
        if (expecting === "header") {
          const take = Math.min(8 - header.length, rest.length)
          header = Buffer.concat([header, rest.subarray(0, take)])
          rest = rest.subarray(take)
          if (header.length < 8) return
          if (stopsAt("header")) return
          if (script.replyToHeader !== undefined) {
            send(Buffer.from(script.replyToHeader))
            expecting = "stopped"
            return
          }
          method(Methods.connectionStart({
            serverProperties: { product: "scripted-peer" },
            mechanisms: script.mechanisms ?? "PLAIN"
          }))
          expecting = "connection.start-ok"
        }
        if (rest.length === 0) return
        for (const frame of decoder.push(rest)) {
          onFrame(frame)
          if (stopped()) return
        }
      })
      socket.on("end", () => {
        recording.ended("client", "FIN")
        if (!socket.writableEnded && !(stopped() && script.how === "silent")) socket.end()
      })
      socket.on("error", (error: NodeJS.ErrnoException) => recording.ended("client", endOf(error)))
      socket.on("close", () => recording.closed("client"))
    }

    const port = yield* listen(serve)

    return {
      port,
      connections,
      connection: (index) => arrivals.until(() => connections[index], `scripted peer connection ${index}`)
    }
  })
