/**
 * Plain and TLS connections to private RabbitMQ nodes: certificate verification against the
 * node's CA, SASL EXTERNAL with the client certificate, and each way a TLS session fails, as a
 * typed `TlsFailure` kind with OpenSSL's or Node's code (an expired server certificate included),
 * or a `Timeout` at the TLS step.
 */
import {
  AmqpConnection,
  type AmqpConnectionError,
  ClosedByApplication,
  Timeout,
  type TlsFailure
} from "@effect-amqp/client"
import { BrokerNode, FaultProxy, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("connection-tls")

/** How the broker sees the connections of this file, by client-provided name. */
const brokerViews = (broker: BrokerNode.Control) =>
  Effect.gen(function*() {
    const out = yield* broker.rabbitmqctl([
      "-q",
      "list_connections",
      "client_properties",
      "user",
      "auth_mechanism",
      "ssl",
      "ssl_protocol",
      "--formatter",
      "json"
    ])
    const views = new Map<string, { user: unknown; authMechanism: unknown; ssl: unknown; sslProtocol: unknown }>()
    for (const row of JSON.parse(out) as Array<Record<string, unknown>>) {
      const name = /"connection_name","longstr","([^"]*)"|"connection_name":"([^"]*)"/.exec(
        JSON.stringify(row["client_properties"])
      )
      const view = {
        user: row["user"],
        authMechanism: row["auth_mechanism"],
        ssl: row["ssl"],
        sslProtocol: row["ssl_protocol"]
      }
      if (name !== null) views.set(name[1] ?? name[2]!, view)
    }
    return views
  })

/** Expects the attempt to fail with a TlsFailure. */
const tlsFailure = <A, E>(attempt: Effect.Effect<A, E, Scope.Scope>) =>
  Effect.gen(function*() {
    const error = yield* Effect.scoped(attempt).pipe(Effect.flip)
    assert.strictEqual((error as { _tag?: string })._tag, "AmqpConnectionError")
    const connectionError = error as AmqpConnectionError
    assert.strictEqual(connectionError.reason._tag, "TlsFailure", connectionError.message)
    return { error: connectionError, reason: connectionError.reason as TlsFailure }
  })

describe("connections that open", () => {
  it.live("opens plain connections with PLAIN and AMQPLAIN and negotiates the lower of each limit", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const [plain, amqplain] = [names.next("plain"), names.next("amqplain")]
      const closed = yield* leakChecked(
        Effect.gen(function*() {
          const connection = yield* AmqpConnection.fromUrl(broker.url, { connectionName: plain })
          // Client defaults 2047 / 131072 / 60 s; RabbitMQ's defaults are the same numbers.
          assert.deepStrictEqual(connection.tuned, { channelMax: 2047, frameMax: 131072, heartbeat: 60 })
          assert.strictEqual(connection.serverProperties["product"], "RabbitMQ")
          assert.isTrue(yield* connection.isOpen)
          yield* AmqpConnection.fromUrl(broker.url, { connectionName: amqplain, authMechanism: "AMQPLAIN" })
          const views = yield* brokerViews(broker)
          assert.deepStrictEqual(views.get(plain), {
            user: "guest",
            authMechanism: "PLAIN",
            ssl: false,
            sslProtocol: ""
          })
          assert.deepStrictEqual(views.get(amqplain), {
            user: "guest",
            authMechanism: "AMQPLAIN",
            ssl: false,
            sslProtocol: ""
          })
          return connection.closed
        }),
        names.own(broker)
      )
      assert.deepStrictEqual((yield* closed).reason, new ClosedByApplication({}))
    }))

  it.live("opens TLS connections verified against the node's CA, by servername, URL host or IP address", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const ca = broker.tlsFiles.ca
      const byIp = `amqps://guest:guest@127.0.0.1:${broker.amqpsPort}`
      const attempts = [
        { name: names.next("servername"), url: byIp, tls: { ca, servername: "localhost" } },
        // "amqps://guest:guest@localhost:port": the host name is the servername.
        { name: names.next("url-host"), url: broker.tlsUrl, tls: { ca } },
        // No SNI for an IP address; the certificate names 127.0.0.1 too.
        { name: names.next("ip"), url: byIp, tls: { ca } },
        { name: names.next("unverified"), url: byIp, tls: { rejectUnauthorized: false } }
      ]
      yield* leakChecked(
        Effect.gen(function*() {
          for (const { name, tls, url } of attempts) {
            const connection = yield* AmqpConnection.fromUrl(url, { connectionName: name, tls })
            assert.isTrue(yield* connection.isOpen, name)
          }
          const views = yield* brokerViews(broker)
          for (const { name } of attempts) {
            assert.deepStrictEqual(views.get(name), {
              user: "guest",
              authMechanism: "PLAIN",
              ssl: true,
              sslProtocol: "tlsv1.3"
            }, name)
          }
        }),
        names.own(broker)
      )
    }))

  it.live("logs in with SASL EXTERNAL as the common name of the client certificate", () =>
    Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const name = names.next("external")
      yield* leakChecked(
        Effect.gen(function*() {
          yield* AmqpConnection.fromUrl(`amqps://127.0.0.1:${broker.amqpsPort}`, {
            connectionName: name,
            authMechanism: "EXTERNAL",
            tls: {
              ca: broker.tlsFiles.ca,
              servername: "localhost",
              cert: broker.tlsFiles.cert,
              key: broker.tlsFiles.key
            }
          })
          assert.deepStrictEqual((yield* brokerViews(broker)).get(name), {
            user: broker.tls.clientCommonName,
            authMechanism: "EXTERNAL",
            ssl: true,
            sslProtocol: "tlsv1.3"
          })
        }),
        names.own(broker)
      )
    }))
})

describe("TLS failures", () => {
  it.live("rejects the server certificate as untrusted when no CA is given", () =>
    leakChecked(Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const { error, reason } = yield* tlsFailure(
        AmqpConnection.fromUrl(`amqps://guest:guest@127.0.0.1:${broker.amqpsPort}`, {
          tls: { servername: "localhost" }
        })
      )
      // The node sends its chain with the self-signed test CA in it.
      assert.strictEqual(reason.kind, "UntrustedCertificate")
      assert.strictEqual(reason.code, "SELF_SIGNED_CERT_IN_CHAIN")
      assert.isTrue(error.isPermanent)
    })))

  it.live("rejects a certificate that does not name the servername", () =>
    leakChecked(Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const { error, reason } = yield* tlsFailure(
        AmqpConnection.fromUrl(`amqps://guest:guest@127.0.0.1:${broker.amqpsPort}`, {
          tls: { ca: broker.tlsFiles.ca, servername: "wrong.example" }
        })
      )
      assert.strictEqual(reason.kind, "HostnameMismatch")
      assert.strictEqual(reason.code, "ERR_TLS_CERT_ALTNAME_INVALID")
      assert.include(reason.message, "wrong.example")
      assert.isTrue(error.isPermanent)
    })))

  it.live("reports NotTls when a TLS client reaches the plain AMQP port", () =>
    leakChecked(Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      // The broker answers the ClientHello with "AMQP\0\0\x09\x01", which is no TLS record.
      const { reason } = yield* tlsFailure(
        AmqpConnection.fromUrl(`amqps://guest:guest@127.0.0.1:${broker.amqpPort}`, {
          tls: { ca: broker.tlsFiles.ca, servername: "localhost" }
        })
      )
      assert.strictEqual(reason.kind, "NotTls")
      assert.strictEqual(reason.code, "ERR_SSL_WRONG_VERSION_NUMBER")
    })))

  it.live("reports ServerRequiresTls when a plain client reaches the TLS port", () =>
    leakChecked(Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      // The TLS listener answers the AMQP header with a TLS alert record (0x15 0x03 ...).
      const { reason } = yield* tlsFailure(
        AmqpConnection.fromUrl(`amqp://guest:guest@127.0.0.1:${broker.amqpsPort}`, { handshakeTimeout: 5_000 })
      )
      assert.strictEqual(reason.kind, "ServerRequiresTls")
      assert.strictEqual(reason.code, undefined)
    })))

  it.live("reports ClientCertificateRequired when the node requires a certificate and none is sent", () =>
    Effect.gen(function*() {
      const node = yield* BrokerNode.start({ tls: { failIfNoPeerCert: true } })
      const name = names.next("with-certificate")
      yield* leakChecked(
        Effect.gen(function*() {
          const url = `amqps://guest:guest@127.0.0.1:${node.amqpsPort}`
          const { error, reason } = yield* tlsFailure(
            AmqpConnection.fromUrl(url, { tls: { ca: node.tlsFiles.ca, servername: "localhost" } })
          )
          // TLS 1.3: the server checks the client's certificate after the client's handshake is done.
          assert.strictEqual(reason.kind, "ClientCertificateRequired")
          assert.strictEqual(reason.code, "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED")
          assert.isTrue(error.isPermanent)

          const tls = {
            ca: node.tlsFiles.ca,
            servername: "localhost",
            cert: node.tlsFiles.cert,
            key: node.tlsFiles.key
          }
          const connection = yield* AmqpConnection.fromUrl(url, { connectionName: name, tls })
          assert.isTrue(yield* connection.isOpen)
        }),
        names.own(node)
      )
    }))

  it.live("reports CertificateExpired when the node serves a server certificate that has expired", () =>
    Effect.gen(function*() {
      const day = 24 * 60 * 60 * 1000
      const node = yield* BrokerNode.start({
        tls: { serverValidity: { notBefore: new Date(Date.now() - 3 * day), notAfter: new Date(Date.now() - day) } }
      })
      const name = names.next("expired-unverified")
      yield* leakChecked(
        Effect.gen(function*() {
          const url = `amqps://guest:guest@127.0.0.1:${node.amqpsPort}`
          const { error, reason } = yield* tlsFailure(
            AmqpConnection.fromUrl(url, { tls: { ca: node.tlsFiles.ca, servername: "localhost" } })
          )
          assert.strictEqual(reason.kind, "CertificateExpired")
          assert.strictEqual(reason.code, "CERT_HAS_EXPIRED")
          assert.isTrue(error.isPermanent)

          // Only the dates are wrong: without verification the same listener opens.
          const connection = yield* AmqpConnection.fromUrl(url, {
            connectionName: name,
            tls: { rejectUnauthorized: false }
          })
          assert.isTrue(yield* connection.isOpen)
        }),
        names.own(node)
      )
    }))

  it.live("times out at the tls step when the TLS handshake gets no answer", () =>
    leakChecked(Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const proxy = yield* FaultProxy.make({ target: { host: "127.0.0.1", port: broker.amqpsPort } })
      yield* proxy.setBlackhole(true)
      const started = Date.now()
      const error = yield* Effect.scoped(
        AmqpConnection.fromUrl(`amqps://guest:guest@127.0.0.1:${proxy.port}`, {
          connectionTimeout: 500,
          tls: { ca: broker.tlsFiles.ca, servername: "localhost" }
        })
      ).pipe(Effect.flip)
      const millis = Date.now() - started

      // The TCP connect to the proxy succeeded, so the deadline passed during the TLS handshake.
      assert.deepStrictEqual((error as AmqpConnectionError).reason, new Timeout({ step: "tls", afterMillis: 500 }))
      assert.isAtLeast(millis, 490)
      assert.isBelow(millis, 1_500)
      // The TCP connection was made and the ClientHello sent; nothing came back.
      const stats = yield* proxy.stats
      assert.strictEqual(stats.accepted, 1)
      assert.isAbove(stats.connections[0]!.received.clientToServer, 0)
      assert.strictEqual(stats.connections[0]!.forwarded.serverToClient, 0)
    })))
})
