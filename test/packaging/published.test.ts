/**
 * The packages as npm would ship them: `pnpm pack` each one (its `prepack` compiles it), install
 * the tarballs into a new application outside the workspace, type-check a program against the
 * shipped declarations, and run it on the shared broker. effect is a peer dependency, so the
 * application's copy is the only one. Node does not strip types under node_modules, so this fails
 * if a package points anywhere but at its compiled JavaScript.
 */
import { SharedBroker } from "@effect-amqp/testing"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as ChildProcess from "node:child_process"
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { leakChecked, Names } from "../support/Probe.ts"

const names = new Names("packaging")

const root = fileURLToPath(new URL("../../", import.meta.url))
const packages = ["protocol", "client", "testing", "cli"] as const

const run = (command: string, args: ReadonlyArray<string>, cwd: string): Effect.Effect<string> =>
  Effect.callback<string>((resume) => {
    const child = ChildProcess.spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.on("close", (code) =>
      resume(
        code === 0
          ? Effect.succeed(output)
          : Effect.die(new Error(`${command} ${args.join(" ")} exited with ${code}:\n${output}`))
      ))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const listTarball = (tarball: string) =>
  run("tar", ["-tzf", tarball], root).pipe(Effect.map((out) => out.split("\n").filter((line) => line !== "")))

/** A program written as a user of the published client writes it, run with the URL and a name. */
const program = `
import { AmqpChannel, AmqpConnection } from "@effect-amqp/client"
import { Effect, Stream } from "effect"
import { createHash } from "node:crypto"

const [url, connectionName] = process.argv.slice(2) as [string, string]
const bodies = ["one", "two", "three"].map((text) => new TextEncoder().encode(text))

const main = Effect.gen(function*() {
  const connection = yield* AmqpConnection.fromUrl(url, { connectionName })
  const channel = yield* AmqpChannel.make(connection)
  const { queue } = yield* channel.queueDeclare("", { exclusive: true })
  yield* channel.confirmSelect
  for (const body of bodies) yield* channel.publish("", queue, body)
  const hashes = yield* channel.consume(queue).pipe(
    Stream.take(bodies.length),
    Stream.mapEffect((delivery) =>
      delivery.ack().pipe(Effect.as(createHash("sha256").update(delivery.body).digest("hex")))
    ),
    Stream.runCollect
  )
  console.log(JSON.stringify(hashes))
}).pipe(Effect.scoped)

const refused: Effect.Effect<string, never> = AmqpConnection.fromUrl("amqp://127.0.0.1:1").pipe(
  Effect.scoped,
  Effect.match({
    onFailure: (error) => error._tag === "AmqpConnectionError" ? error.reason._tag : error._tag,
    onSuccess: () => "connected"
  })
)

await Effect.runPromise(main)
console.log(await Effect.runPromise(refused))
`

describe("the published packages", () => {
  it.live(
    "install from their tarballs outside the workspace, type-check and run on the broker",
    () =>
      Effect.gen(function*() {
        const broker = yield* SharedBroker.acquire
        const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-amqp-packaging-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true })))
        const tarballs = Path.join(dir, "tarballs")

        for (const name of packages) {
          yield* run("pnpm", ["pack", "--pack-destination", tarballs], Path.join(root, "packages", name))
        }
        const tarball = (name: string) => Path.join(tarballs, `effect-amqp-${name}-0.1.0.tgz`)
        const client = yield* listTarball(tarball("client"))
        assert.include(client, "package/dist/src/index.js")
        assert.include(client, "package/dist/src/index.d.ts")
        assert.deepStrictEqual(client.filter((file) => /^package\/(test|dist\/test)\/|tsconfig/.test(file)), [])
        const cli = yield* listTarball(tarball("cli"))
        assert.include(cli, "package/dist/src/bin.js")

        const app = Path.join(dir, "app")
        Fs.mkdirSync(app)
        const local = Object.fromEntries(packages.map((name) => [`@effect-amqp/${name}`, `file:${tarball(name)}`]))
        const versions = JSON.parse(Fs.readFileSync(Path.join(root, "package.json"), "utf8")).devDependencies
        Fs.writeFileSync(
          Path.join(app, "package.json"),
          JSON.stringify({
            name: "app",
            private: true,
            type: "module",
            dependencies: {
              ...local,
              effect: versions.effect,
              "@effect/platform-node": versions["@effect/platform-node"],
              "@types/node": versions["@types/node"]
            }
          })
        )
        // The tarballs' own dependencies on each other resolve to the tarballs, not to the registry.
        Fs.writeFileSync(
          Path.join(app, "pnpm-workspace.yaml"),
          `overrides:\n${Object.entries(local).map(([name, spec]) => `  "${name}": "${spec}"\n`).join("")}`
        )
        Fs.writeFileSync(Path.join(app, "main.ts"), program)
        Fs.writeFileSync(
          Path.join(app, "tsconfig.json"),
          JSON.stringify({
            compilerOptions: {
              target: "ES2023",
              module: "NodeNext",
              strict: true,
              exactOptionalPropertyTypes: true,
              noEmit: true,
              allowImportingTsExtensions: true,
              types: ["node"]
            },
            files: ["main.ts"]
          })
        )
        yield* run("pnpm", ["install", "--prefer-offline", "--config.confirmModulesPurge=false"], app)
        // effect is a peer of the packages: the application's own copy is the only one.
        const effects = Fs.readdirSync(Path.join(app, "node_modules", ".pnpm")).filter((n) => n.startsWith("effect@"))
        assert.deepStrictEqual(effects, [`effect@${versions.effect}`])

        const typeErrors = yield* run(Path.join(root, "node_modules", ".bin", "tsc"), ["-p", app], app)
        assert.strictEqual(typeErrors, "")

        yield* leakChecked(
          Effect.gen(function*() {
            const url = `amqp://guest:guest@127.0.0.1:${broker.amqpPort}`
            const output = yield* run(process.execPath, ["main.ts", url, names.next("app")], app)
            const expected = ["one", "two", "three"].map((text) =>
              Crypto.createHash("sha256").update(text).digest("hex")
            )
            assert.deepStrictEqual(output.trim().split("\n"), [JSON.stringify(expected), "ConnectFailed"])

            const help = yield* run(Path.join(app, "node_modules", ".bin", "effect-amqp"), ["--help"], app)
            assert.include(help, "perf")
          }),
          names.own(broker)
        )
      }).pipe(Effect.scoped),
    180_000
  )
})
