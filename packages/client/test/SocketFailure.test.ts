import { assert, describe, it } from "@effect/vitest"
import { AmqpConnectionError } from "../src/AmqpError.ts"
import { socketFailure } from "../src/internal/transport.ts"

/** An error as Node's TLS socket raises it: OpenSSL's reason in the message, the code beside it. */
const sslError = (code: string, message: string): Error & { code: string } =>
  Object.assign(new Error(message), { code })

const wrongVersion = sslError("ERR_SSL_WRONG_VERSION_NUMBER", "wrong version number")
const badRecordMac = sslError("ERR_SSL_DECRYPTION_FAILED_OR_BAD_RECORD_MAC", "decryption failed or bad record mac")
const certificateRequired = sslError(
  "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED",
  "tlsv13 alert certificate required"
)
const badRecordMacAlert = sslError("ERR_SSL_SSL/TLS_ALERT_BAD_RECORD_MAC", "ssl/tls alert bad record mac")
const unknownCa = sslError("ERR_SSL_TLSV1_ALERT_UNKNOWN_CA", "tlsv1 alert unknown ca")

const kindOf = (error: Error & { code: string }, tls: "setup" | "established", sentCertificate = false) => {
  const reason = socketFailure(error, false, tls, sentCertificate)
  return {
    kind: reason._tag === "TlsFailure" ? reason.kind : reason._tag,
    permanent: new AmqpConnectionError({ reason, connectionName: undefined }).isPermanent
  }
}

describe("a TLS error", () => {
  it("while the session is set up names what failed, and only a failed handshake may be retried", () => {
    assert.deepStrictEqual(kindOf(wrongVersion, "setup"), { kind: "NotTls", permanent: true })
    assert.deepStrictEqual(kindOf(badRecordMac, "setup"), { kind: "HandshakeFailed", permanent: false })
    assert.deepStrictEqual(kindOf(certificateRequired, "setup"), { kind: "ClientCertificateRequired", permanent: true })
  })

  it("once the session is up is that session's failure, which a new connection may not meet", () => {
    assert.deepStrictEqual(kindOf(wrongVersion, "established"), { kind: "SessionFailed", permanent: false })
    assert.deepStrictEqual(kindOf(badRecordMac, "established"), { kind: "SessionFailed", permanent: false })
    assert.deepStrictEqual(kindOf(badRecordMacAlert, "established"), { kind: "SessionFailed", permanent: false })
  })

  it("once the session is up still names an alert about certificates (TLS 1.3 checks them after)", () => {
    assert.deepStrictEqual(kindOf(certificateRequired, "established"), {
      kind: "ClientCertificateRequired",
      permanent: true
    })
    // The broker did not trust the client's certificate: a retry cannot fix that.
    assert.deepStrictEqual(kindOf(unknownCa, "established", true), { kind: "UntrustedCertificate", permanent: true })
  })

  it("on a plain connection is no TLS failure", () => {
    const reason = socketFailure(
      Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }),
      false,
      undefined,
      false
    )
    assert.strictEqual(reason._tag, "TransportClosed")
  })
})
