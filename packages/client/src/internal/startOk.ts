/**
 * What the client says of itself in `connection.start-ok`: its properties and capabilities, and
 * the SASL response of its mechanism. The handshake sends it, and the options check measures it:
 * before tune a server need not take a frame over 4096 bytes.
 */
import { type FieldTable, Methods } from "@effect-amqp/protocol"
import * as Redacted from "effect/Redacted"
import type { AuthMechanism, ConnectionOptions } from "../ConnectionConfig.ts"

const version = "0.1.0"

/** A field value as a table, or an empty one when it is not a table. */
export const tableOrEmpty = (value: unknown): FieldTable =>
  typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
    ? value as FieldTable
    : {}

/** The client's properties; a `capabilities` table of the application's adds to the client's own. */
export const clientProperties = (
  options: Pick<ConnectionOptions, "clientProperties" | "connectionName">
): FieldTable => {
  const own = options.clientProperties ?? {}
  return {
    product: "effect-amqp",
    version,
    platform: `Node.js ${process.version}`,
    information: "https://www.npmjs.com/package/@effect-amqp/client",
    ...(options.connectionName !== undefined ? { connection_name: options.connectionName } : {}),
    ...own,
    capabilities: {
      publisher_confirms: true,
      exchange_exchange_bindings: true,
      "basic.nack": true,
      consumer_cancel_notify: true,
      "connection.blocked": true,
      authentication_failure_close: true,
      per_consumer_qos: true,
      ...tableOrEmpty(own["capabilities"])
    }
  }
}

/** The SASL response for `mechanism`: PLAIN and AMQPLAIN carry the credentials, EXTERNAL nothing. */
export const saslResponse = (mechanism: string, user: string, secret: Redacted.Redacted<string>): Uint8Array => {
  const password = Redacted.value(secret)
  switch (mechanism) {
    case "PLAIN":
      return Buffer.from(`\u0000${user}\u0000${password}`, "utf8")
    case "AMQPLAIN": {
      const userBytes = Buffer.from(user, "utf8")
      const passwordBytes = Buffer.from(password, "utf8")
      const out = Buffer.alloc(2 * (1 + 1 + 4) + 5 + 8 + userBytes.length + passwordBytes.length)
      let at = 0
      at = out.writeUInt8(5, at)
      at += out.write("LOGIN", at, "latin1")
      at = out.writeUInt8(0x53, at)
      at = out.writeUInt32BE(userBytes.length, at)
      at += userBytes.copy(out, at)
      at = out.writeUInt8(8, at)
      at += out.write("PASSWORD", at, "latin1")
      at = out.writeUInt8(0x53, at)
      at = out.writeUInt32BE(passwordBytes.length, at)
      passwordBytes.copy(out, at)
      return out
    }
    default:
      return new Uint8Array(0)
  }
}

/** The whole `connection.start-ok` for these options, with the secret given. */
export const startOk = (
  options: Pick<ConnectionOptions, "clientProperties" | "connectionName" | "username">,
  mechanism: AuthMechanism,
  secret: Redacted.Redacted<string>
) =>
  Methods.connectionStartOk({
    clientProperties: clientProperties(options),
    mechanism,
    response: saslResponse(mechanism, options.username, secret),
    locale: "en_US"
  })
