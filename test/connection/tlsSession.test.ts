/**
 * A TLS record error after the session is up (a record header garbled on its way from the broker)
 * is one link's failure, `SessionFailed`, not a failed setup: a retry can fix it.
 */
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Net from "node:net"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("tls-session")

/**
 * A loopback proxy to `port` that, once armed, flips bit 4 of the second byte of the next chunk the
 * server sends on its first connection: the record header's version (0x03 -> 0x13).
 */
const garblingProxy = (port: number) =>
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
        client.on("data", (chunk) => upstream.write(chunk))
        upstream.on("data", (chunk: Buffer) => {
          if (first && armed && chunk.length > 5 && chunk[0] === 0x17) {
            armed = false
            const copy = Buffer.from(chunk)
            copy[1] = copy[1]! ^ 0x10
            client.write(copy)
          } else {
            client.write(chunk)
          }
        })
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

describe("a TLS record error mid-session", () => {
  it.live("is not a permanent connection error", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const proxy = yield* garblingProxy(broker.amqpsPort)
          const connection = yield* AmqpConnection.fromUrl(`amqps://guest:guest@127.0.0.1:${proxy.port}`, {
            connectionName: names.next("connection"),
            tls: { ca: broker.tlsFiles.ca, servername: "localhost" }
          })
          const channel = yield* AmqpChannel.make(connection)
          proxy.arm()
          yield* Effect.exit(channel.queueDeclare("", { exclusive: true }))
          const cause = yield* connection.closed.pipe(Effect.timeout("10 seconds"))
          assert.strictEqual(cause.reason._tag, "TlsFailure")
          assert.strictEqual(cause.reason._tag === "TlsFailure" ? cause.reason.kind : undefined, "SessionFailed")
          assert.strictEqual(
            cause.reason._tag === "TlsFailure" ? cause.reason.code : undefined,
            "ERR_SSL_WRONG_VERSION_NUMBER"
          )
          assert.isFalse(cause.isPermanent)
        }),
        names.own(broker)
      )
    }))
})
