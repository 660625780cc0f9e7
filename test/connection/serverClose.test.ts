/**
 * The broker ends the connection: refused credentials (403) and an unknown vhost (530) during the
 * handshake, and `rabbitmqctl close_connection` (320) or a 530 (from a scripted peer) on an open
 * connection. Each is a typed `ServerClosed` with the broker's own reply text, and no error
 * ever shows the password; only those during the handshake are permanent.
 */
import {
  AmqpChannel,
  AmqpConnection,
  type AmqpConnectionError,
  ConnectionConfig,
  ServerClosed
} from "@effect-amqp/client"
import { Methods } from "@effect-amqp/protocol"
import { ScriptedPeer, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect } from "effect"
import { leakChecked, Names } from "../support/Probe.ts"
import * as Tap from "../support/Tap.ts"

const names = new Names("connection-server-close")

/** connection.close with 530 NOT_ALLOWED, as RabbitMQ words it. */
const notAllowed = (text: string, methodId: number) =>
  Methods.connectionClose({ replyCode: 530, replyText: `NOT_ALLOWED - ${text}`, classId: 60, methodId })

/** Expects `url` to be refused during the handshake; returns the error. */
const refused = (url: string, overrides: ConnectionConfig.ConnectionOptionsInput) =>
  Effect.scoped(AmqpConnection.fromUrl(url, overrides)).pipe(
    Effect.flip,
    Effect.map((error) => {
      assert.strictEqual(error._tag, "AmqpConnectionError")
      return error as AmqpConnectionError
    })
  )

describe("the broker refuses the handshake", () => {
  it.live("closes with 403 and its own text on a wrong password, and no error shows the password", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const password = "Wr0ng-pa55word-x7Q"
      yield* leakChecked(
        Effect.gen(function*() {
          for (const authMechanism of ["PLAIN", "AMQPLAIN"] as const) {
            const url = `amqp://guest:${password}@127.0.0.1:${broker.amqpPort}`
            const error = yield* refused(url, { authMechanism, connectionName: names.next(authMechanism) })
            assert.deepStrictEqual(
              error.reason,
              new ServerClosed({
                replyCode: 403,
                replyText: `ACCESS_REFUSED - Login was refused using authentication mechanism ${authMechanism}. ` +
                  "For details see the broker logfile.",
                classId: 0,
                methodId: 0,
                method: undefined,
                duringHandshake: true
              })
            )
            assert.strictEqual(error.replyCode, 403)
            assert.isTrue(error.isPermanent)
            for (
              const shown of [error.message, String(error), JSON.stringify(error), Cause.pretty(Cause.fail(error))]
            ) {
              assert.notInclude(shown, password)
            }
          }
        }),
        names.own(broker)
      )
    }))

  it.live("closes with 530 on connection.open of a vhost that does not exist", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      yield* leakChecked(
        Effect.gen(function*() {
          const url = `amqp://guest:guest@127.0.0.1:${broker.amqpPort}/no-such-vhost`
          const error = yield* refused(url, { connectionName: names.next("vhost") })
          assert.deepStrictEqual(
            error.reason,
            new ServerClosed({
              replyCode: 530,
              replyText: "NOT_ALLOWED - vhost no-such-vhost not found",
              classId: 10,
              methodId: 40,
              method: "connection.open",
              duringHandshake: true
            })
          )
          assert.isTrue(error.isPermanent)
        }),
        names.own(broker)
      )
    }))
})

describe("the broker closes an open connection", () => {
  it.live("ends with ServerClosed 320 and the reason given to rabbitmqctl, and answers with close-ok", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const name = names.next("forced")
      yield* leakChecked(
        Effect.gen(function*() {
          const tap = yield* Tap.make({ host: "127.0.0.1", port: broker.amqpPort })
          const connection = yield* AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${tap.port}`, {
            connectionName: name
          })
          const channel = yield* AmqpChannel.make(connection)

          assert.strictEqual(yield* broker.closeConnection(name, "closed by the connection suite"), 1)
          const error = yield* connection.closed
          const expected = new ServerClosed({
            replyCode: 320,
            replyText: "CONNECTION_FORCED - closed by the connection suite",
            classId: 0,
            methodId: 0,
            method: undefined,
            duringHandshake: false
          })
          assert.deepStrictEqual(error.reason, expected)
          assert.isFalse(yield* connection.isOpen)
          const channelEnd = yield* channel.closed
          assert.strictEqual(channelEnd._tag, "AmqpConnectionError")
          assert.deepStrictEqual((channelEnd as AmqpConnectionError).reason, expected)

          const recording = yield* tap.connection(0)
          yield* recording.until((r) => r.find("client", "closed"), "the client's socket to close")
          const closeAt = recording.find("server", "connection.close")!.at
          const clientAfter = recording.steps.filter((s) => s.from === "client" && s.at >= closeAt).map((s) => s.what)
          assert.deepStrictEqual(clientAfter, ["connection.close-ok", "FIN", "closed"])
        }),
        names.own(broker)
      )
    }))

  it.live("a 530 on an open connection is not permanent; the same code refusing connection.open is", () =>
    leakChecked(Effect.gen(function*() {
      const peer = yield* ScriptedPeer.make()
      yield* Effect.forkScoped(
        Effect.gen(function*() {
          // The first connection opens, then the broker closes it over something the client did.
          const open = yield* peer.accept()
          yield* open.handshake({ tune: { heartbeat: 0 } })
          yield* open.expect("channel.open")
          yield* open.sendMethod(0, notAllowed("attempt to reuse consumer tag 't'", 20))
          yield* open.expect("connection.close-ok")
          // The second is refused at connection.open.
          const second = yield* peer.accept()
          yield* second.start()
          yield* second.tune({ heartbeat: 0 })
          yield* second.expect("connection.open")
          yield* second.sendMethod(0, notAllowed("vhost v not found", 40))
          yield* second.expect("connection.close-ok")
        }),
        { startImmediately: true }
      )
      const connect = AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${peer.port}`, { closeTimeout: 500 })
      const afterOpen = yield* Effect.scoped(Effect.flatMap(connect, (c) =>
        Effect.andThen(
          Effect.forkScoped(Effect.exit(AmqpChannel.make(c)), { startImmediately: true }),
          c.closed
        )))
      assert.include(afterOpen.reason, { _tag: "ServerClosed", replyCode: 530, duringHandshake: false })
      assert.isFalse(afterOpen.isPermanent)

      const atOpen = yield* Effect.flip(Effect.scoped(connect))
      assert.include((atOpen as AmqpConnectionError).reason, { replyCode: 530, duringHandshake: true })
      assert.isTrue((atOpen as AmqpConnectionError).isPermanent)
    })))
})
