/**
 * Credentials that change while connected, configuration from the environment, and a busy event
 * loop. `connection.update-secret` refreshes the secret of an open connection, and a recovering
 * client reconnects with the newest one; `AMQP_URL` configures a connection through `Config`; an
 * event loop blocked for longer than two heartbeat intervals is lag, not a dead broker.
 */
import { AmqpClient, AmqpConnection, ConnectionConfig } from "@effect-amqp/client"
import { encodeMethod, FrameDecoder, HEARTBEAT_FRAME, Methods } from "@effect-amqp/protocol"
import { FaultProxy, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, PubSub, Redacted } from "effect"
import { randomUUID } from "node:crypto"
import * as Net from "node:net"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("connection-secret")

describe("credentials", () => {
  it.live("refreshes the secret of an open connection, and a client reconnects with the newest one", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const user = `rotating-${randomUUID().slice(0, 8)}`
      const first = `first-${randomUUID()}`
      const second = `second-${randomUUID()}`
      yield* broker.addUser(user, first)
      yield* broker.setPermissions(user)
      yield* leakChecked(
        Effect.gen(function*() {
          const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpPort } })
          const options = yield* ConnectionConfig.make({
            host: "127.0.0.1",
            port: proxy.port,
            username: user,
            password: first,
            connectionName: names.next("rotating")
          })
          const client = yield* AmqpClient.make(options)
          const events = yield* client.subscribe

          yield* broker.rabbitmqctl(["change_password", user, second])
          yield* client.updateSecret(Redacted.make(second), "rotation")
          const connection = yield* client.connection
          assert.isTrue(yield* connection.isOpen)
          const before = yield* client.channel()
          yield* before.queueDeclare("", { exclusive: true })

          yield* proxy.dropAll("reset")
          const recovered = yield* PubSub.take(events).pipe(
            Effect.repeat({ until: (event) => event._tag === "Recovered" || event._tag === "GaveUp" })
          )
          assert.strictEqual(recovered._tag, "Recovered")
          const channel = yield* client.channel()
          const { queue } = yield* channel.queueDeclare("", { exclusive: true })
          assert.match(queue, /^amq\.gen-/)
        }),
        names.own(broker)
      )
      yield* broker.rabbitmqctl(["delete_user", user])
    }))
})

describe("configuration from the environment", () => {
  it.live("connects with the options AMQP_URL gives", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const name = names.next("env")
      const url = `amqp://guest:guest@127.0.0.1:${broker.amqpPort}/%2f?heartbeat=17&channel_max=33` +
        `&connection_name=${encodeURIComponent(name)}`
      const options = yield* ConnectionConfig.fromConfig.pipe(
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { AMQP_URL: url } })))
      )
      assert.deepStrictEqual([options.port, options.vhost, options.heartbeat, options.channelMax], [
        broker.amqpPort,
        "/",
        17,
        33
      ])
      yield* leakChecked(
        Effect.gen(function*() {
          const connection = yield* AmqpConnection.make(options)
          assert.deepStrictEqual([connection.tuned.heartbeat, connection.tuned.channelMax], [17, 33])
          const seen = yield* broker.listConnections
          assert.isTrue(seen.some((c) => c.clientProvidedName === name))
        }),
        names.own(broker)
      )
    }))
})

/**
 * A fake broker on loopback that completes the handshake with heartbeat `seconds` and then sends a
 * heartbeat every 200 ms from its own timer, so it is never the silent side.
 */
const chattyPeer = (seconds: number) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly port: number; readonly server: Net.Server; readonly timers: Set<NodeJS.Timeout> }>(
      (resume) => {
        const timers = new Set<NodeJS.Timeout>()
        const server = Net.createServer((socket) => {
          const decoder = new FrameDecoder()
          let header = true
          socket.on("error", () => {})
          socket.on("data", (chunk: Buffer) => {
            if (header) {
              header = false
              socket.write(encodeMethod(0, Methods.connectionStart({ serverProperties: {}, mechanisms: "PLAIN" })))
              if (chunk.length > 8) chunk = chunk.subarray(8)
              else return
            }
            for (const frame of decoder.push(chunk)) {
              if (frame._tag !== "MethodFrame") continue
              const tag = frame.method._tag
              if (tag === "connection.start-ok") {
                socket.write(
                  encodeMethod(0, Methods.connectionTune({ channelMax: 8, frameMax: 131072, heartbeat: seconds }))
                )
              } else if (tag === "connection.open") {
                socket.write(encodeMethod(0, Methods.connectionOpenOk()))
                const timer = setInterval(() => socket.write(HEARTBEAT_FRAME), 200)
                timers.add(timer)
                socket.on("close", () => {
                  clearInterval(timer)
                  timers.delete(timer)
                })
              } else if (tag === "connection.close") {
                socket.end(encodeMethod(0, Methods.connectionCloseOk()))
              }
            }
          })
        })
        server.listen(0, "127.0.0.1", () =>
          resume(Effect.succeed({ port: (server.address() as Net.AddressInfo).port, server, timers })))
      }
    ),
    ({ server, timers }) =>
      Effect.callback<void>((resume) => {
        for (const timer of timers) {
          clearInterval(timer)
        }
        server.close(() =>
          resume(Effect.void)
        )
      })
  )

describe("a busy event loop", () => {
  it.live("is reported as lag and does not fail the connection with a heartbeat timeout", () =>
    leakChecked(
      Effect.gen(function*() {
        const peer = yield* chattyPeer(1)
        const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`, {
          heartbeat: 1,
          closeTimeout: 1_000
        })
        yield* Effect.sleep("300 millis")
        // Block the event loop for three heartbeat intervals: nothing is read meanwhile, and the
        // heartbeat fiber wakes up to find the last bytes three seconds old.
        const until = Date.now() + 3_000
        while (Date.now() < until) {
          // busy
        }
        yield* Effect.sleep("1500 millis")
        assert.isTrue(yield* connection.isOpen)
        assert.isAtLeast(yield* connection.eventLoopLag, 2_000)
      })
    ))
})
