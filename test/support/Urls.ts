/**
 * What `ConnectionConfig.fromUrl` made of a URL, as plain values to compare in one assertion (the
 * password unwrapped), or its error as text; and the defaults in that form.
 */
import { ConnectionConfig } from "@effect-amqp/client"
import { Effect, Exit, Redacted } from "effect"

export const parse = (url: string) =>
  Effect.map(Effect.exit(ConnectionConfig.fromUrl(url)), (exit) =>
    Exit.isSuccess(exit)
      ? {
        host: exit.value.host,
        port: exit.value.port,
        username: exit.value.username,
        password: Redacted.value(exit.value.password),
        vhost: exit.value.vhost,
        heartbeat: exit.value.heartbeat,
        connectionName: exit.value.connectionName,
        authMechanism: exit.value.authMechanism as string,
        tls: exit.value.tls !== undefined
      }
      : { error: String(exit.cause) })

/** The defaults as `parse` shows them. */
export const base = {
  host: "127.0.0.1",
  port: 5672,
  username: "guest",
  password: "guest",
  vhost: "/",
  heartbeat: 60,
  connectionName: undefined,
  authMechanism: "PLAIN",
  tls: false
}
