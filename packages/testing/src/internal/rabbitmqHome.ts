/**
 * Pure helpers for laying out a private RabbitMQ node: which plugin folders its trimmed home
 * needs, and the definitions file with its users. Internal to the testing package.
 */
import * as Crypto from "node:crypto"
import * as NodeFs from "node:fs"
import * as Path from "node:path"

/** rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)). */
export const passwordHash = (password: string): string => {
  const salt = Crypto.randomBytes(4)
  const digest = Crypto.createHash("sha256").update(salt).update(password, "utf8").digest()
  return Buffer.concat([salt, digest]).toString("base64")
}

/** The applications `roots` need, read from the .app files in RabbitMQ's plugins folder. */
export const pluginClosure = (pluginsDir: string, roots: ReadonlyArray<string>): Map<string, string> => {
  const entries = new Map<string, string>()
  for (const entry of NodeFs.readdirSync(pluginsDir)) {
    const match = /^(.+?)-\d[^/]*?(\.ez)?$/.exec(entry)
    if (match !== null && !entries.has(match[1]!)) entries.set(match[1]!, entry)
  }
  const needed = new Map<string, string>()
  const visit = (app: string) => {
    const entry = entries.get(app)
    if (entry === undefined || needed.has(app)) return
    needed.set(app, entry)
    let text = ""
    try {
      text = NodeFs.readFileSync(Path.join(pluginsDir, entry, "ebin", `${app}.app`), "utf8")
    } catch {
      return
    }
    const deps = /\{\s*applications\s*,\s*\[([^\]]*)\]/.exec(text)?.[1] ?? ""
    for (const dep of deps.split(",")) visit(dep.trim())
  }
  for (const root of roots) visit(root)
  return needed
}

export const definitionsJson = (clientUser: string, guestPassword: string) =>
  JSON.stringify({
    users: [
      {
        name: "guest",
        password_hash: passwordHash(guestPassword),
        hashing_algorithm: "rabbit_password_hashing_sha256",
        tags: ["administrator"]
      },
      { name: clientUser, password_hash: "", hashing_algorithm: "rabbit_password_hashing_sha256", tags: [] }
    ],
    vhosts: [{ name: "/" }],
    permissions: ["guest", clientUser].map((user) => ({
      user,
      vhost: "/",
      configure: ".*",
      write: ".*",
      read: ".*"
    }))
  })
