/**
 * A TLS record corrupted once the session is up, on its way from the broker (a garbled record
 * header) or to it (a flipped payload byte, which the broker answers with a bad_record_mac alert),
 * is that session's failure, `SessionFailed`: one link lost, not a failed setup, so not permanent.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Net from "node:net"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("tls-session")

type Direction = "from broker" | "to broker"

/** Flips a bit of the first application-data record (type 0x17) of a chunk in `direction`. */
const garble = (direction: Direction, chunk: Buffer): Buffer | undefined => {
  if (chunk[0] !== 0x17 || chunk.length <= 12) return undefined
  const copy = Buffer.from(chunk)
  // From the broker the record header's version (0x03 -> 0x13), to it a byte of the payload.
  if (direction === "from broker") copy[1] = copy[1]! ^ 0x10
  else copy[10] = copy[10]! ^ 0x01
  return copy
}

/** A loopback proxy to `port` that, once armed, garbles the next record in `direction` on its first connection. */
const garblingProxy = (port: number, direction: Direction) =>
  Effect.acquireRelease(
    Effect.callback<{ port: number; arm: () => void; close: () => void }>((resume) => {
      let armed = false
      let accepted = 0
      const sockets = new Set<Net.Socket>()
      const server = Net.createServer((client) => {
        const first = accepted++ === 0
        const upstream = Net.connect({ host: "127.0.0.1", port })
        sockets.add(client)
        sockets.add(upstream)
        const relay = (from: Direction, to: Net.Socket) => (chunk: Buffer) => {
          const garbled = first && armed && from === direction ? garble(direction, chunk) : undefined
          if (garbled !== undefined) armed = false
          to.write(garbled ?? chunk)
        }
        client.on("data", relay("to broker", upstream))
        upstream.on("data", relay("from broker", client))
        client.on("close", () => upstream.destroy())
        upstream.on("close", () => client.destroy())
        client.on("error", () => {})
        upstream.on("error", () => {})
      })
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({
          port: (server.address() as Net.AddressInfo).port,
          arm: () => void (armed = true),
          close: () => {
            server.close()
            for (const socket of sockets) socket.destroy()
          }
        })))
    }),
    (proxy) => Effect.sync(() => proxy.close())
  )

describe("a TLS record corrupted mid-session", () => {
  for (const direction of ["from broker", "to broker"] as const) {
    it.live(`${direction} ends the connection with TlsFailure SessionFailed, not permanent`, () =>
      Effect.gen(function*() {
        const broker = yield* SharedBroker.acquire
        yield* leakChecked(
          Effect.gen(function*() {
            const proxy = yield* garblingProxy(broker.amqpsPort, direction)
            const connection = yield* AmqpConnection.fromUrl(`amqps://guest:guest@127.0.0.1:${proxy.port}`, {
              connectionName: names.next("connection"),
              tls: { ca: broker.tlsFiles.ca, servername: "localhost" }
            })
            const channel = yield* AmqpChannel.make(connection)
            proxy.arm()
            const declared = yield* Effect.exit(channel.queueDeclare("", { exclusive: true }))
            assert.isTrue(declared._tag === "Failure", "a declare whose record was garbled succeeded")
            const cause = yield* connection.closed.pipe(Effect.timeout("10 seconds"))
            assert.deepStrictEqual(
              {
                tag: cause.reason._tag,
                kind: cause.reason._tag === "TlsFailure" ? cause.reason.kind : undefined,
                permanent: cause.isPermanent
              },
              { tag: "TlsFailure", kind: "SessionFailed", permanent: false }
            )
          }),
          names.own(broker)
        )
      }))
  }
})
