/**
 * A recording pass-through on 127.0.0.1: every accepted client gets its own upstream connection to
 * `target`, bytes and FINs are forwarded unchanged both ways, an RST on one side becomes an RST on
 * the other, and each connection's traffic is decoded into a `Recording`.
 *
 * It injects no faults (put a `FaultProxy` behind it for those) and applies no backpressure: what
 * the upstream cannot take yet waits in memory.
 */
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import * as Net from "node:net"
import { endOf, listen, Recording, type Side, Watch } from "./Wire.ts"

export interface Tap {
  readonly port: number
  /** One recording per accepted connection, in accept order. */
  readonly connections: Array<Recording>
  /** Waits for the recording of the `index`th connection (0-based). */
  readonly connection: (index: number) => Effect.Effect<Recording, Error>
}

const forward = (recording: Recording, from: Side, source: Net.Socket, sink: Net.Socket) => {
  source.on("data", (chunk: Buffer) => {
    recording.data(from, chunk)
    if (!sink.destroyed) sink.write(chunk)
  })
  source.on("end", () => {
    recording.ended(from, "FIN")
    if (!sink.destroyed) sink.end()
  })
  source.on("error", (error: NodeJS.ErrnoException) => {
    const how = endOf(error)
    recording.ended(from, how)
    if (how === "RST" && !sink.destroyed) sink.resetAndDestroy()
    else sink.destroy()
  })
  source.on("close", () => recording.closed(from))
}

export const make = (
  target: { readonly host: string; readonly port: number }
): Effect.Effect<Tap, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const connections: Array<Recording> = []
    const upstreams = new Set<Net.Socket>()
    const arrivals = new Watch()
    const port = yield* listen((client) => {
      const upstream = Net.connect({ host: target.host, port: target.port, allowHalfOpen: true })
      upstreams.add(upstream)
      upstream.once("close", () => upstreams.delete(upstream))
      const recording = new Recording()
      connections.push(recording)
      forward(recording, "client", client, upstream)
      forward(recording, "server", upstream, client)
      arrivals.notify()
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => upstreams.forEach((socket) => socket.destroy())))
    return {
      port,
      connections,
      connection: (index) => arrivals.until(() => connections[index], `tap connection ${index}`)
    }
  })
