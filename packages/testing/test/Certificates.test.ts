import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Certificates from "../src/Certificates.ts"

/** A temporary folder for this test's scope. */
const tempDir = Effect.acquireRelease(
  Effect.promise(() => Fs.mkdtemp(Path.join(Os.tmpdir(), "effamqp-certs-"))),
  (dir) => Effect.promise(() => Fs.rm(dir, { recursive: true, force: true }))
)

const x509 = (path: string) => Effect.promise(async () => new Crypto.X509Certificate(await Fs.readFile(path)))

describe("Certificates", () => {
  it.live("signs the server certificate for the validity given, by the same CA and for the same names", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const certs = yield* Certificates.generate(dir, {
        serverValidity: { notBefore: new Date("2020-01-01T00:00:00Z"), notAfter: new Date("2020-01-02T12:30:45Z") }
      })
      const [ca, server, client] = [
        yield* x509(certs.caPath),
        yield* x509(certs.serverCertPath),
        yield* x509(certs.certPath)
      ]
      assert.deepStrictEqual([server.validFrom, server.validTo], [
        "Jan  1 00:00:00 2020 GMT",
        "Jan  2 12:30:45 2020 GMT"
      ])
      assert.isTrue(server.verify(ca.publicKey))
      assert.strictEqual(server.subject, "CN=localhost")
      assert.strictEqual(server.subjectAltName, "DNS:localhost, IP Address:127.0.0.1")
      // The client certificate keeps the default: valid from now for two days.
      const days = (Date.parse(client.validTo) - Date.parse(client.validFrom)) / (24 * 60 * 60 * 1000)
      assert.strictEqual(days, 2)
    }))
})
