import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Exit, Schedule, Scope } from "effect"
import * as NodeFs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"
import * as BrokerNode from "../src/BrokerNode.ts"
import * as Process from "../src/internal/process.ts"
import * as SharedBroker from "../src/SharedBroker.ts"
import { declareQueue, handshake, protocolHeader, rawClient } from "./rawAmqp.ts"
import { attempt, Watch } from "./support.ts"

/** The first bytes the broker sends after our protocol header. */
const firstReply = (port: number): Effect.Effect<Buffer, Error> =>
  Effect.callback<Buffer, Error>((resume) => {
    const socket = Net.connect({ host: "127.0.0.1", port })
    let got = Buffer.alloc(0)
    socket.on("connect", () => socket.write(protocolHeader))
    socket.on("data", (chunk: Buffer) => {
      got = Buffer.concat([got, chunk])
      if (got.length >= 11) {
        socket.destroy()
        resume(Effect.succeed(got))
      }
    })
    socket.on("error", (error) => resume(Effect.fail(error)))
    return Effect.sync(() => socket.destroy())
  })

/** Retry `effect` until `ok` holds for its value (the broker applies some changes asynchronously). */
const eventually = <A, E>(effect: Effect.Effect<A, E>, ok: (a: A) => boolean) =>
  effect.pipe(
    Effect.flatMap((a) => (ok(a) ? Effect.succeed(a) : Effect.fail("not yet" as const))),
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo({ times: 50 })))
  )

describe("BrokerNode", () => {
  const scope = Effect.runSync(Scope.make())
  let node: BrokerNode.BrokerNode

  beforeAll(async () => {
    node = await Effect.runPromise(
      Scope.provide(BrokerNode.start({ heartbeat: 7, frameMax: 16384, channelMax: 99, saslExternal: true }), scope)
    )
  }, 120_000)

  afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)), 60_000)

  it.live("answers the protocol header with connection.start on channel 0", () =>
    Effect.gen(function*() {
      const reply = yield* firstReply(node.amqpPort)
      assert.deepStrictEqual([...reply.subarray(0, 3)], [1, 0, 0]) // method frame, channel 0
      assert.deepStrictEqual([...reply.subarray(7, 11)], [0, 10, 0, 10]) // connection.start
      assert.match(node.url, new RegExp(`^amqp://guest:guest@127\\.0\\.0\\.1:${node.amqpPort}$`))
    }))

  it.live("tunes to the configured channel_max, frame_max and heartbeat", () =>
    Effect.gen(function*() {
      const client = yield* rawClient(node.amqpPort)
      const { tune } = yield* handshake(client)
      assert.deepStrictEqual(tune, { channelMax: 99, frameMax: 16384, heartbeat: 7 })
    }))

  it.live("lists connections with user, peer port and client-provided name, and closes one by name", () =>
    Effect.gen(function*() {
      const client = yield* rawClient(node.amqpPort)
      yield* handshake(client, { connectionName: "broker-node-test" })
      const connections = yield* node.listConnections
      const mine = connections.find((c) => c.peerPort === client.socket.localPort)
      assert.isDefined(mine)
      assert.strictEqual(mine!.user, "guest")
      assert.strictEqual(mine!.clientProvidedName, "broker-node-test")
      assert.strictEqual(mine!.name, `127.0.0.1:${client.socket.localPort} -> 127.0.0.1:${node.amqpPort}`)
      assert.strictEqual(yield* node.closeConnection("broker-node-test", "closed by the test"), 1)
      const close = yield* client.next("connection.close")
      assert.deepStrictEqual([close.classId, close.methodId, close.payload.readUInt16BE(4)], [10, 50, 320])
      assert.include(close.payload.toString("latin1"), "closed by the test")
    }))

  it.live("verifies the TLS listener with the generated CA and client certificate (openssl s_client)", () =>
    Effect.gen(function*() {
      const args = ["s_client", "-connect", `127.0.0.1:${node.amqpsPort}`, "-servername", "localhost"]
      const withCa = yield* Process.run("openssl", [
        ...args,
        "-CAfile",
        node.tls.caPath,
        "-cert",
        node.tls.certPath,
        "-key",
        node.tls.keyPath
      ])
      assert.include(withCa.stdout, "Verify return code: 0 (ok)")
      // The client certificate is no CA: the server's chain does not verify against it.
      const wrongCa = yield* Process.run("openssl", [...args, "-CAfile", node.tls.certPath])
      assert.notInclude(wrongCa.stdout, "Verify return code: 0 (ok)")
      assert.match(wrongCa.stdout, /Verify return code: [1-9]/)
    }))

  it.live("offers EXTERNAL and logs the client certificate's CN in over TLS", () =>
    Effect.gen(function*() {
      const client = yield* rawClient(node.amqpsPort, {
        ca: node.tlsFiles.ca,
        cert: node.tlsFiles.cert,
        key: node.tlsFiles.key,
        servername: "localhost"
      })
      const { mechanisms } = yield* handshake(client, { mechanism: "EXTERNAL" })
      assert.deepStrictEqual(mechanisms.split(" ").toSorted(), ["AMQPLAIN", "EXTERNAL", "PLAIN"])
      const mine = (yield* node.listConnections).find((c) => c.peerPort === client.socket.localPort)
      assert.strictEqual(mine?.user, "effect-amqp-client")
    }))

  it.live("sets and clears the memory alarm", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* node.alarms, "[]")
      yield* node.setMemoryAlarm
      const raised = yield* eventually(node.alarms, (a) => a !== "[]")
      assert.include(raised, `{resource_limit,memory,'${node.nodeName}'}`)
      yield* node.clearMemoryAlarm
      assert.strictEqual(yield* eventually(node.alarms, (a) => a === "[]"), "[]")
    }))

  it.live("lists channels and queues, deletes a queue", () =>
    Effect.gen(function*() {
      const client = yield* rawClient(node.amqpPort)
      yield* handshake(client)
      assert.strictEqual(yield* declareQueue(client, 3, "broker-node-listed", true), "broker-node-listed")
      const channels = yield* node.listChannels
      const connection = (yield* node.listConnections).find((c) => c.peerPort === client.socket.localPort)!
      const channel = channels.find((c) => c.connection === connection.pid)
      assert.strictEqual(channel?.number, 3)
      assert.strictEqual(channel?.name, `${connection.name} (3)`)
      const queue = (yield* node.listQueues()).find((q) => q.name === "broker-node-listed")
      assert.deepStrictEqual(queue, {
        name: "broker-node-listed",
        messages: 0,
        consumers: 0,
        durable: true,
        autoDelete: false,
        exclusive: false
      })
      yield* node.deleteQueue("broker-node-listed")
      assert.isUndefined((yield* node.listQueues()).find((q) => q.name === "broker-node-listed"))
    }))

  it.live("adds a user with permissions who can then log in", () =>
    Effect.gen(function*() {
      yield* node.addUser("alice", "s3cret")
      yield* node.setPermissions("alice")
      const client = yield* rawClient(node.amqpPort)
      yield* handshake(client, { user: "alice", password: "s3cret" })
      const mine = (yield* node.listConnections).find((c) => c.peerPort === client.socket.localPort)
      assert.strictEqual(mine?.user, "alice")
    }))

  it.live("evaluates Erlang expressions on the node", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* node.eval("6 * 7.")).trim(), "42")
      assert.strictEqual((yield* node.eval("node().")).trim(), `'${node.nodeName}'`)
    }))
})

describe("BrokerNode lifecycle", () => {
  it.live(
    "stops, starts with the same data, restarts, survives kill -9, and cleans up with its scope",
    () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const node = yield* Scope.provide(BrokerNode.start(), scope)
        const dir = node.dir
        assert.isTrue(NodeFs.existsSync(Path.join(dir, "rabbitmq.conf")))
        const first = yield* Effect.scoped(Effect.gen(function*() {
          const client = yield* rawClient(node.amqpPort)
          yield* handshake(client)
          return yield* declareQueue(client, 1, "survivor", true)
        }))
        assert.strictEqual(first, "survivor")

        yield* node.stop
        assert.isFalse(yield* node.isRunning)
        assert.strictEqual((yield* attempt(node.amqpPort)).errorCode, "ECONNREFUSED")

        yield* node.start
        assert.isTrue((yield* node.listQueues()).some((q) => q.name === "survivor" && q.durable))

        const connected = yield* Effect.scoped(Effect.gen(function*() {
          const client = yield* rawClient(node.amqpPort)
          yield* handshake(client)
          const watch = new Watch()
          client.socket.on("close", () => watch.notify())
          yield* node.restart
          return yield* watch.until(() => (client.closed() ? true : undefined), "close on restart")
        }))
        assert.isTrue(connected)

        const pid = yield* node.osPid
        assert.isDefined(pid)
        yield* node.kill9
        assert.throws(() => process.kill(pid!, 0), /ESRCH/)
        assert.strictEqual((yield* attempt(node.amqpPort)).errorCode, "ECONNREFUSED")

        yield* node.start
        const client = yield* Effect.scoped(Effect.flatMap(rawClient(node.amqpPort), handshake))
        assert.strictEqual(client.tune.frameMax, 131072) // RabbitMQ's default
        const lastPid = yield* node.osPid

        yield* Scope.close(scope, Exit.void)
        assert.isFalse(NodeFs.existsSync(dir))
        assert.throws(() => process.kill(lastPid!, 0), /ESRCH/)
      }),
    120_000
  )
})

describe("BrokerNode installation", () => {
  it.effect("finds the real start script beside Debian's wrapper", () =>
    Effect.gen(function*() {
      const dir = yield* BrokerNode.findScriptsDir()
      assert.match(dir, /^\/usr\/lib\/rabbitmq\/lib\/rabbitmq_server-[\d.]+\/sbin$/)
      assert.isTrue(NodeFs.existsSync(Path.join(dir, "rabbitmqctl")))
    }))

  it.effect("says how to install rabbitmq-server when it is missing", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(BrokerNode.start({ rabbitmqPrefix: "/nonexistent/rabbitmq" })))
      assert.strictEqual(error.reason, "NotInstalled")
      assert.strictEqual(
        error.message,
        "rabbitmq-server is not installed: run `apt-get update && apt-get install -y rabbitmq-server`"
      )
    }))
})

describe("SharedBroker", () => {
  it.live("gives test files the run's shared node", () =>
    Effect.gen(function*() {
      const shared = yield* SharedBroker.get
      const reply = yield* firstReply(shared.amqpPort)
      assert.deepStrictEqual([...reply.subarray(7, 11)], [0, 10, 0, 10])
      assert.strictEqual((yield* shared.eval("node().")).trim(), `'${shared.nodeName}'`)
      assert.include(shared.tlsFiles.ca, "BEGIN CERTIFICATE")
    }))
})
