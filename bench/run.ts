/**
 * `pnpm bench`: effect-amqp against amqplib, @cloudamqp/amqp-client and rabbitmq-client (and the
 * raw reference), on the same broker in the same run, clients alternating, each client-scenario in
 * a fresh `bench/worker.ts` process. Scenarios run against RabbitMQ, again against the null broker
 * (a child process) to measure the clients alone, and over TLS against a private RabbitMQ node.
 *
 *   pnpm bench [--help] [--reps 3] [--quick] [--scenario name[,name]] [--client name[,name]]
 *              [--broker rabbitmq,null,tls] [--url amqp://guest:guest@127.0.0.1:5672] [--no-null] [--no-tls]
 *              [--out bench/results] [--messages N] [--cpu-prof] [--ref HEAD]
 *
 * Every queue is fresh, uniquely named, declared with x-expires as a safety net and deleted after
 * its run; a count that does not add up stops the run with a non-zero exit. `--cpu-prof` runs
 * every worker under `node --cpu-prof` (with `--messages N` to make the measured part dominate);
 * profiles go to <out>/profiles, and bench/profileSummary.ts summarises them. The profiler slows
 * the clients, so such a run's numbers are not results.
 * effect-amqp runs compiled to JavaScript, as a published package would (Node does not strip
 * types under node_modules). `--ref REV` compiles it as committed at REV (a `git archive` of
 * packages/protocol and packages/client) rather than the work tree, which others may be editing.
 * Each worker's progress line also says where its CPU went (on Linux): kernel time, time on threads
 * other than the main one (V8 compiling or collecting during the measured part), read and write
 * system calls and minor page faults per message, and the collections run.
 */
import { BrokerNode } from "@effect-amqp/testing"
import { Effect, Exit, Scope } from "effect"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { makeBody } from "./adapter.ts"
import { RawConnection } from "./clients/raw.ts"
import { consoleTable, type Sample, summarise, writeResults } from "./report.ts"
import {
  awaitCount,
  type BrokerKind,
  expectedAfter,
  messagesOf,
  type Scenario,
  scenarios,
  WARMUP_PASSES,
  warmupPassOf
} from "./scenarios.ts"
import { clientModules, PACKAGES_ENV, type WorkerResult } from "./worker.ts"

const here = import.meta.dirname
const WORKER_TIMEOUT_MS = 240_000

interface Broker {
  readonly kind: BrokerKind
  /** What the clients connect to. */
  readonly url: string
  readonly tlsCaPath?: string
  /** Plain-TCP admin connection for queue management and prefill. */
  readonly admin: RawConnection
}

const USAGE = `usage: pnpm bench [--help] [--reps 3] [--quick] [--scenario name[,name]] [--client name[,name]]
                  [--broker rabbitmq,null,tls] [--url amqp://guest:guest@127.0.0.1:5672] [--no-null] [--no-tls]
                  [--out bench/results] [--messages N] [--cpu-prof] [--ref HEAD]
scenarios: ${scenarios.map((s) => s.name).join(", ")}
clients: ${Object.keys(clientModules).join(", ")}`

/** Stops with the reason and the usage, before anything was started: exit code 2. */
const usageError = (reason: string): never => {
  process.stderr.write(`pnpm bench: ${reason}\n${USAGE}\n`)
  process.exit(2)
}

const commandLine = (() => {
  try {
    return parseArgs({
      options: {
        help: { type: "boolean", default: false },
        reps: { type: "string" },
        quick: { type: "boolean", default: false },
        scenario: { type: "string", multiple: true },
        client: { type: "string", multiple: true },
        broker: { type: "string", multiple: true },
        url: { type: "string", default: "amqp://guest:guest@127.0.0.1:5672" },
        "no-null": { type: "boolean", default: false },
        "no-tls": { type: "boolean", default: false },
        "cpu-prof": { type: "boolean", default: false },
        messages: { type: "string" },
        ref: { type: "string" },
        out: { type: "string", default: Path.join(here, "results") }
      }
    })
  } catch (error) {
    return usageError(error instanceof Error ? error.message : String(error))
  }
})()
const values = commandLine.values
if (values.help) {
  process.stdout.write(`${USAGE}\n`)
  process.exit(0)
}

/** A whole number of at least 1 from `--name`, or the usage error saying why not. */
const positive = (name: string, text: string | undefined): number | undefined => {
  if (text === undefined) return undefined
  const value = Number(text)
  return Number.isInteger(value) && value >= 1 ? value : usageError(`--${name} takes a whole number of at least 1`)
}

const quick = values.quick
const reps = positive("reps", values.reps) ?? (quick ? 1 : 3)
const messagesOption = positive("messages", values.messages)
const split = (list: ReadonlyArray<string> | undefined) => list?.flatMap((s) => s.split(",")).filter((s) => s !== "")
const selected: ReadonlyArray<Scenario> =
  split(values.scenario)?.map((name) =>
    scenarios.find((s) => s.name === name) ?? usageError(`unknown scenario ${name}`)
  ) ?? scenarios
const clients = split(values.client) ?? Object.keys(clientModules)
for (const c of clients) if (clientModules[c] === undefined) usageError(`unknown client ${c}`)
const brokerKinds = split(values.broker) ?? ["rabbitmq", "null", "tls"]
for (const kind of brokerKinds) {
  if (!["rabbitmq", "null", "tls"].includes(kind)) usageError(`unknown broker ${kind}: rabbitmq, null or tls`)
}
const wants = (kind: BrokerKind) => brokerKinds.includes(kind) && selected.some((s) => s.brokers.includes(kind))

// -------------------------------------------------------------------------------------------------
// resources we start, and their cleanup
// -------------------------------------------------------------------------------------------------

const cleanups: Array<() => Promise<void>> = []
let cleaning: Promise<void> | undefined
const cleanup = (): Promise<void> => {
  cleaning ??= (async () => {
    for (const step of cleanups.splice(0).toReversed()) {
      await step().catch((error: unknown) => process.stderr.write(`cleanup: ${String(error)}\n`))
    }
  })()
  return cleaning
}
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    process.stderr.write(`\n${signal}: cleaning up\n`)
    void cleanup().then(() => process.exit(130))
  })
}

const openAdmin = async (url: string): Promise<RawConnection> => {
  const admin = await RawConnection.open({ url })
  cleanups.push(() => admin.close())
  return admin
}

const startNullBroker = async (): Promise<number> => {
  const child = ChildProcess.spawn(process.execPath, [Path.join(here, "nullBroker.ts")], {
    stdio: ["pipe", "pipe", "inherit"]
  })
  cleanups.push(async () => {
    child.stdin.end()
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid)
  })
  return new Promise((resolve, reject) => {
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      const line = out.split("\n")[0]
      if (out.includes("\n") && line !== undefined) resolve((JSON.parse(line) as { port: number }).port)
    })
    child.once("exit", (code) => reject(new Error(`null broker exited with ${code}`)))
  })
}

const startTlsNode = async () => {
  const scope = await Effect.runPromise(Scope.make())
  cleanups.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
  return Effect.runPromise(Scope.provide(BrokerNode.start({ tls: { verifyPeer: false } }), scope))
}

/**
 * effect-amqp as a published package runs it: `packages/protocol` and `packages/client` compiled
 * to JavaScript (types dropped, no type check) in a temporary folder whose node_modules lends
 * them the work tree's installed dependencies. The sources are the work tree's, or with `ref` as
 * committed at that revision. Returns the folder holding `protocol/` and `client/`.
 */
const buildPackages = (ref: string | undefined): string => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-amqp-bench-"))
  cleanups.push(async () => Fs.rmSync(dir, { recursive: true, force: true }))
  const repo = Path.resolve(here, "..")
  let sources = repo
  if (ref !== undefined) {
    sources = Path.join(dir, "source")
    Fs.mkdirSync(sources)
    const tar = Path.join(dir, "source.tar")
    ChildProcess.execFileSync("git", ["archive", "-o", tar, ref, "packages/protocol", "packages/client"], { cwd: repo })
    ChildProcess.execFileSync("tar", ["-xf", tar, "-C", sources])
  }
  const modules = Path.join(dir, "node_modules")
  Fs.mkdirSync(Path.join(modules, "@effect"), { recursive: true })
  for (const name of ["effect", "@effect/platform-node", "@types"]) {
    Fs.symlinkSync(Fs.realpathSync(Path.join(repo, "node_modules", name)), Path.join(modules, name))
  }
  const tsconfig = Path.join(dir, "tsconfig.json")
  Fs.writeFileSync(
    tsconfig,
    JSON.stringify({
      extends: Path.join(repo, "tsconfig.base.json"),
      compilerOptions: {
        composite: false,
        declaration: false,
        declarationMap: false,
        noCheck: true,
        plugins: [],
        rootDir: Path.join(sources, "packages"),
        outDir: Path.join(dir, "packages"),
        typeRoots: [Path.join(modules, "@types")]
      },
      include: ["protocol", "client"].map((name) => Path.join(sources, "packages", name, "src"))
    })
  )
  ChildProcess.execFileSync(Path.join(repo, "node_modules", ".bin", "tsc"), ["-p", tsconfig], { stdio: "inherit" })
  return Path.join(dir, "packages")
}

const resolveRef = (ref: string): string =>
  ChildProcess.execFileSync("git", ["rev-parse", "--short", ref], { cwd: here, encoding: "utf8" }).trim()

// -------------------------------------------------------------------------------------------------
// one run
// -------------------------------------------------------------------------------------------------

let queueSeq = 0
const queueName = (scenario: Scenario, client: string) =>
  `effect-amqp-bench-${process.pid}-${++queueSeq}-${scenario.name}-${client.replace(/[^a-z0-9-]/gi, "")}`

/** The compiled packages the workers load. */
let built = ""

const runWorker = (nodeArgs: ReadonlyArray<string>, args: ReadonlyArray<string>): Promise<WorkerResult> =>
  new Promise((resolve, reject) => {
    const child = ChildProcess.spawn(process.execPath, [...nodeArgs, Path.join(here, "worker.ts"), ...args], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, [PACKAGES_ENV]: built }
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    const timer = setTimeout(() => {
      if (child.pid !== undefined) process.kill(child.pid, "SIGKILL")
    }, WORKER_TIMEOUT_MS)
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      const line = stdout.trim().split("\n").pop() ?? ""
      try {
        const parsed = JSON.parse(line) as WorkerResult | { ok: false; error: string }
        if (parsed.ok) return resolve(parsed)
        return reject(new Error(`worker failed: ${parsed.error}\n${stderr}`))
      } catch {
        return reject(new Error(`worker exited with ${code ?? signal} and no result\n${stdout}\n${stderr}`))
      }
    })
  })

const runOne = async (broker: Broker, scenario: Scenario, client: string, rep: number): Promise<WorkerResult> => {
  const messages = messagesOption ?? messagesOf(scenario, quick, broker.kind)
  const queue = queueName(scenario, client)
  const warmup = warmupPassOf(scenario, messages)
  const warmupQueues = warmup > 0
    ? Array.from({ length: WARMUP_PASSES }, (_, pass) => `${queue}-warmup-${pass + 1}`)
    : []
  const used: ReadonlyArray<readonly [string, number]> = [
    ...warmupQueues.map((name) => [name, warmup] as const),
    [queue, messages]
  ]
  for (const [name] of used) await broker.admin.declareQueue(name, { "x-expires": 30 * 60 * 1000 })
  try {
    if (scenario.kind === "consume") {
      for (const [name, count] of used) await broker.admin.publish(name, makeBody(scenario.bodySize), count)
      for (const [name, count] of used) await awaitCount(broker.admin, name, count)
    }
    const profile = `${broker.kind}-${scenario.name}-${client.replace(/[^a-z0-9-]/gi, "")}-${rep + 1}.cpuprofile`
    const nodeArgs = values["cpu-prof"]
      ? [
        "--cpu-prof",
        "--cpu-prof-interval",
        "100",
        "--cpu-prof-dir",
        Path.join(values.out, "profiles"),
        "--cpu-prof-name",
        profile
      ]
      : []
    const result = await runWorker(nodeArgs, [
      "--client",
      client,
      "--scenario",
      scenario.name,
      "--url",
      broker.url,
      "--queue",
      queue,
      "--messages",
      String(messages),
      ...warmupQueues.flatMap((name) => ["--warmup-queue", name]),
      ...(warmup > 0 ? ["--warmup", String(warmup)] : []),
      ...(broker.tlsCaPath !== undefined ? ["--tls-ca", broker.tlsCaPath] : [])
    ])
    for (const [name, count] of used) {
      await awaitCount(broker.admin, name, expectedAfter(scenario, count), 10_000).catch((error: unknown) => {
        throw new Error(`${client} ${scenario.name} on ${broker.kind}: ${String(error)}`)
      })
    }
    return result
  } finally {
    for (const [name] of used) await broker.admin.deleteQueue(name)
  }
}

/**
 * Where a worker's CPU went, per message: in the kernel, on threads other than the main one (V8's
 * compiler and collector), in read and write system calls, in page faults; and the collections it ran.
 */
const whereCpuWent = (result: WorkerResult): string => {
  const parts = [`sys ${result.systemPerMessageUs.toFixed(2)}`]
  if (result.otherThreadsPerMessageUs !== undefined) parts.push(`threads ${result.otherThreadsPerMessageUs.toFixed(2)}`)
  const calls = result.syscallsPerMessage
  if (calls !== undefined) parts.push(`reads ${calls.reads.toFixed(3)} writes ${calls.writes.toFixed(3)}`)
  parts.push(`faults ${result.pageFaultsPerMessage.toFixed(3)}`)
  const gc = result.collections
  return `(${parts.join(", ")} /msg; gc ${gc.scavenges}+${gc.markCompacts} ${gc.pauseMs.toFixed(0)} ms)`
}

// -------------------------------------------------------------------------------------------------
// main
// -------------------------------------------------------------------------------------------------

const commit = (): string => {
  try {
    return ChildProcess.execFileSync("git", ["describe", "--always", "--dirty"], { cwd: here, encoding: "utf8" }).trim()
  } catch {
    return "unknown"
  }
}

const main = async () => {
  const began = performance.now()
  built = buildPackages(values.ref)
  const brokers: Array<Broker> = []
  const notes: Array<string> = [
    "Publish rate: N messages / time until a passive queue.declare counts all N in the queue.",
    "Publishes whose API returns a promise (cloudamqp, rabbitmq-client) keep 1,000 in flight;"
    + " amqplib waits for `drain`; effect-amqp awaits each `publish`"
    + " (it returns at once unless the socket is congested).",
    "effect-amqp runs compiled to JavaScript (tsc, types dropped), as a published package does;"
    + " the other clients ship JavaScript.",
    "Every worker first warms up, unmeasured, with a fifth of the scenario's messages (at most 10,000,"
    + " and 10,000 for the 64 KiB publish, the one-at-a-time confirm and the round trip, whose counts are over"
    + " before the JIT is done;"
    + " none for messages of 1 MiB and more, whose memory is measured from a process that never held one),"
    + ` in ${WARMUP_PASSES} passes, each the whole scenario on a queue of its own, so that each client is measured`
    + " after the JIT has compiled its hot code, and recompiled it after the first consumer or channel ended.",
    "Round trip: publish to a queue the same client consumes, next publish on delivery; rate = 1 / mean round trip.",
    "The null broker ignores acks and prefetch; it acks publishes (multiple=true) once per read chunk.",
    "Every client runs with TCP_NODELAY and frame_max 131072 (effect-amqp's and amqplib's defaults;"
    + " set explicitly for the others).",
    `Load average at start: ${Os.loadavg().map((n) => n.toFixed(1)).join(", ")} on ${Os.cpus().length} CPUs`
    + " (the machine is shared: rates are noisy, CPU time per message less so)."
  ]
  if (wants("rabbitmq")) {
    brokers.push({ kind: "rabbitmq", url: values.url, admin: await openAdmin(values.url) })
  }
  if (wants("null") && !values["no-null"]) {
    const port = await startNullBroker()
    const url = `amqp://guest:guest@127.0.0.1:${port}`
    brokers.push({ kind: "null", url, admin: await openAdmin(url) })
  }
  if (wants("tls") && !values["no-tls"]) {
    process.stderr.write("starting a private RabbitMQ node with a TLS listener...\n")
    const node = await startTlsNode()
    brokers.push({
      kind: "tls",
      url: `amqps://guest:guest@127.0.0.1:${node.amqpsPort}`,
      tlsCaPath: node.tls.caPath,
      admin: await openAdmin(node.url)
    })
    notes.push("TLS runs use a private RabbitMQ node (BrokerNode from @effect-amqp/testing), not the shared one.")
  }

  const samples: Array<Sample> = []
  let turn = 0
  for (let rep = 0; rep < reps; rep++) {
    for (const scenario of selected) {
      for (const broker of brokers) {
        if (!scenario.brokers.includes(broker.kind)) continue
        // Who goes first moves on by one per scenario and again per repetition, so that no client
        // always runs first (right after the previous scenario's queues were deleted).
        const offset = (turn++ + rep) % clients.length
        const order = [...clients.slice(offset), ...clients.slice(0, offset)]
        for (const client of order) {
          const result = await runOne(broker, scenario, client, rep)
          samples.push({ broker: broker.kind, scenario, rep, result })
          const latency = result.p50Us !== undefined
            ? ` p50 ${result.p50Us.toFixed(0)} µs p99 ${result.p99Us?.toFixed(0)} µs`
            : ""
          process.stderr.write(
            `[${rep + 1}/${reps}] ${broker.kind.padEnd(8)} ${scenario.name.padEnd(16)} ${client.padEnd(22)} `
              + `${Math.round(result.rate).toLocaleString("en-US").padStart(9)} msg/s${latency}  `
              + `cpu ${result.cpuPerMessageUs.toFixed(2)} µs/msg ${whereCpuWent(result)}  `
              + `rss ${(result.peakRss / 1048576).toFixed(0)} MiB  `
              + `(${result.seconds.toFixed(2)} s)\n`
          )
        }
      }
    }
  }

  const rows = summarise(samples, clients)
  writeResults(
    values.out,
    {
      generatedAt: new Date().toISOString(),
      commit: values.ref !== undefined ? `${resolveRef(values.ref)} (--ref ${values.ref})` : commit(),
      node: process.version,
      reps,
      quick,
      url: new URL(values.url).host,
      cpus: Os.cpus().length,
      loadAverage: Os.loadavg(),
      durationSeconds: (performance.now() - began) / 1000,
      notes
    },
    rows,
    clients
  )
  process.stdout.write(`\n${consoleTable(rows, clients)}\n\nwritten to ${values.out}/latest.{json,md}\n`)
}

main().then(
  () => cleanup().then(() => process.exit(0)),
  (error: unknown) => {
    process.stderr.write(`\nbench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    void cleanup().then(() => process.exit(1))
  }
)
