/**
 * A client certificate the broker refuses. The run's shared node verifies a client certificate
 * when one is offered (verify_peer); under TLS 1.3 it checks it after the client saw its handshake
 * finish, and answers with an alert: unknown_ca for a certificate of another CA,
 * certificate_expired for one out of date. Each is a `TlsFailure` naming the problem
 * (`UntrustedCertificate`, `CertificateExpired`) and `isPermanent`, as the same problems with the
 * server's certificate are: a retry cannot fix them.
 */
import { AmqpConnection, type AmqpConnectionError } from "@effect-amqp/client"
import { Certificates, SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { leakChecked } from "../support/Probe.ts"

const outcome = (error: AmqpConnectionError) => ({
  tag: error.reason._tag,
  kind: error.reason._tag === "TlsFailure" ? error.reason.kind : undefined,
  permanent: error.isPermanent
})

/** A time as `openssl ca` takes it: YYYYMMDDHHMMSSZ. */
const opensslTime = (d: Date) => d.toISOString().replace(/[-:T]/g, "").replace(/\.\d{3}Z$/, "Z")

/** A client certificate signed by `caPath`/`caKeyPath` whose validity ended yesterday. */
const expiredClientCertificate = (caPath: string, caKeyPath: string) => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "expired-client-cert-"))
  const run = (args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })
  Fs.writeFileSync(
    Path.join(dir, "ca.cnf"),
    [
      "[ca]",
      "default_ca = c",
      "[c]",
      "database = index.txt",
      "new_certs_dir = .",
      "serial = serial.txt",
      "policy = p",
      "default_md = sha256",
      "unique_subject = no",
      "[p]",
      "commonName = supplied",
      ""
    ].join("\n")
  )
  Fs.writeFileSync(Path.join(dir, "index.txt"), "")
  Fs.writeFileSync(
    Path.join(dir, "client.ext"),
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
  )
  run([
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    "client.key",
    "-out",
    "client.csr",
    "-subj",
    "/CN=expired-client"
  ])
  const day = 24 * 60 * 60 * 1000
  run([
    "ca",
    "-batch",
    "-config",
    "ca.cnf",
    "-cert",
    caPath,
    "-keyfile",
    caKeyPath,
    "-in",
    "client.csr",
    "-out",
    "client.pem",
    "-startdate",
    opensslTime(new Date(Date.now() - 3 * day)),
    "-enddate",
    opensslTime(new Date(Date.now() - day)),
    "-extfile",
    "client.ext",
    "-notext",
    "-rand_serial"
  ])
  const files = {
    cert: Fs.readFileSync(Path.join(dir, "client.pem"), "utf8"),
    key: Fs.readFileSync(Path.join(dir, "client.key"), "utf8")
  }
  Fs.rmSync(dir, { recursive: true, force: true })
  return files
}

describe("a client certificate the broker refuses", () => {
  it.live("signed by a CA the broker does not trust: a permanent TlsFailure", () =>
    leakChecked(Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "other-ca-"))
      const other = yield* Certificates.generate(dir)
      const error = yield* Effect.scoped(
        AmqpConnection.fromUrl(`amqps://guest:guest@127.0.0.1:${broker.amqpsPort}`, {
          tls: { ca: broker.tlsFiles.ca, servername: "localhost", cert: other.cert, key: other.key }
        })
      ).pipe(Effect.flip)
      Fs.rmSync(dir, { recursive: true, force: true })
      const e = error as AmqpConnectionError
      assert.strictEqual(e._tag, "AmqpConnectionError")
      assert.deepStrictEqual(
        outcome(e),
        { tag: "TlsFailure", kind: "UntrustedCertificate", permanent: true },
        e.message
      )
    })))

  it.live("expired: a permanent TlsFailure CertificateExpired", () =>
    leakChecked(Effect.gen(function*() {
      const broker = yield* SharedBroker.acquire
      const caKey = Path.join(Path.dirname(broker.tls.caPath), "ca.key")
      const expired = expiredClientCertificate(broker.tls.caPath, caKey)
      const error = yield* Effect.scoped(
        AmqpConnection.fromUrl(`amqps://guest:guest@127.0.0.1:${broker.amqpsPort}`, {
          tls: { ca: broker.tlsFiles.ca, servername: "localhost", cert: expired.cert, key: expired.key }
        })
      ).pipe(Effect.flip)
      const e = error as AmqpConnectionError
      assert.strictEqual(e._tag, "AmqpConnectionError")
      assert.deepStrictEqual(outcome(e), { tag: "TlsFailure", kind: "CertificateExpired", permanent: true }, e.message)
    })))
})
