/**
 * One client, one scenario, one fresh process: connects and runs the warm-up passes (not measured),
 * runs the measured part while sampling RSS every 10 ms, closes, and prints one JSON line. The
 * orchestrator owns the queues: it declared them (and prefilled them) before, and checks and
 * deletes them after.
 *
 *   node bench/worker.ts --client effect-amqp --scenario publish-16B --url amqp://... --queue q
 *     [--messages N] [--warmup-queue q1 --warmup-queue q2 --warmup N] [--tls-ca file]
 */
import * as Fs from "node:fs"
import * as Module from "node:module"
import * as Path from "node:path"
import { constants as PerfConstants, type PerformanceEntry, PerformanceObserver } from "node:perf_hooks"
import * as Url from "node:url"
import { parseArgs } from "node:util"
import { type BenchClient, check, makeBody, type Target } from "./adapter.ts"
import { runScenario, scenarioByName } from "./scenarios.ts"

export interface WorkerResult {
  readonly ok: true
  readonly client: string
  readonly scenario: string
  readonly messages: number
  readonly seconds: number
  /** Messages per second. */
  readonly rate: number
  readonly cpuPerMessageUs: number
  /** The part of `cpuPerMessageUs` spent in the kernel (system time). */
  readonly systemPerMessageUs: number
  /** The part of `cpuPerMessageUs` spent off the main thread: V8's compiler and collector, libuv's pool. */
  readonly otherThreadsPerMessageUs?: number
  /** Collections during the measured part: scavenges, mark-compacts, and their pauses on the main thread. */
  readonly collections: { readonly scavenges: number; readonly markCompacts: number; readonly pauseMs: number }
  /** Read and write system calls per message (Linux's /proc/self/io), when the system tells them. */
  readonly syscallsPerMessage?: { readonly reads: number; readonly writes: number }
  /** Minor page faults per message: memory first touched (new buffers, a growing heap), each paid in the kernel. */
  readonly pageFaultsPerMessage: number
  /** Highest RSS seen by the 10 ms sampler during the measured part, in bytes. */
  readonly peakRss: number
  /** RSS just before the measured part. */
  readonly startRss: number
  readonly p50Us?: number
  readonly p99Us?: number
}

export const clientModules: Record<string, string> = {
  "effect-amqp": "./clients/effect-amqp.ts",
  amqplib: "./clients/amqplib.ts",
  "@cloudamqp/amqp-client": "./clients/cloudamqp.ts",
  "rabbitmq-client": "./clients/rabbitmq-client.ts",
  raw: "./clients/raw.ts"
}

/**
 * `EFFECT_AMQP_BENCH_PACKAGES`, set by the orchestrator, names a folder holding `protocol/` and
 * `client/` compiled to JavaScript: `@effect-amqp/*` resolve there, as a published package would.
 */
export const PACKAGES_ENV = "EFFECT_AMQP_BENCH_PACKAGES"

const useCompiled = (dir: string): void => {
  Module.registerHooks({
    resolve: (specifier, context, next) => {
      const match = /^@effect-amqp\/(protocol|client)$/.exec(specifier)
      if (match === null) return next(specifier, context)
      return { url: Url.pathToFileURL(Path.join(dir, match[1]!, "src", "index.js")).href, shortCircuit: true }
    }
  })
}

/** The process's read and write system calls so far, from Linux's /proc/self/io. */
const syscalls = (): { readonly reads: number; readonly writes: number } | undefined => {
  try {
    const io = Fs.readFileSync("/proc/self/io", "latin1")
    const count = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(io)?.[1])
    const counts = { reads: count("syscr"), writes: count("syscw") }
    return Number.isFinite(counts.reads) && Number.isFinite(counts.writes) ? counts : undefined
  } catch {
    return undefined
  }
}

/**
 * CPU time in microseconds of the threads other than the main one: the first field of Linux's
 * /proc/self/task/<id>/schedstat, each thread's time on a CPU in nanoseconds.
 */
const otherThreadsCpuUs = (): number | undefined => {
  try {
    let nanoseconds = 0
    for (const task of Fs.readdirSync("/proc/self/task")) {
      if (Number(task) === process.pid) continue
      nanoseconds += Number(Fs.readFileSync(`/proc/self/task/${task}/schedstat`, "latin1").split(" ")[0])
    }
    return Number.isFinite(nanoseconds) ? nanoseconds / 1000 : undefined
  } catch {
    return undefined
  }
}

/** Under `--cpu-prof`, where the profile will be written, so the measured window can sit beside it. */
const profilePath = (): string | undefined => {
  const args = process.execArgv
  if (!args.includes("--cpu-prof")) return undefined
  const after = (flag: string) => {
    const at = args.indexOf(flag)
    return at >= 0 ? args[at + 1] : undefined
  }
  const name = after("--cpu-prof-name")
  return name === undefined ? undefined : Path.join(after("--cpu-prof-dir") ?? ".", name)
}

const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n)

const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!

const main = async () => {
  const { values } = parseArgs({
    options: {
      client: { type: "string" },
      scenario: { type: "string" },
      url: { type: "string" },
      queue: { type: "string" },
      messages: { type: "string" },
      warmup: { type: "string" },
      "warmup-queue": { type: "string", multiple: true },
      "tls-ca": { type: "string" }
    }
  })
  const clientName = values.client ?? ""
  const modulePath = clientModules[clientName]
  if (modulePath === undefined) throw new Error(`unknown client ${clientName}`)
  if (values.url === undefined || values.queue === undefined || values.scenario === undefined) {
    throw new Error("--url, --queue and --scenario are required")
  }
  const scenario = scenarioByName(values.scenario)
  const messages = Number(values.messages ?? scenario.messages)
  const target: Target = {
    url: values.url,
    ...(values["tls-ca"] !== undefined ? { tlsCa: Fs.readFileSync(values["tls-ca"], "utf8") } : {})
  }
  const compiled = process.env[PACKAGES_ENV]
  if (compiled !== undefined && compiled !== "") useCompiled(compiled)
  const { client } = (await import(modulePath)) as { readonly client: BenchClient }
  const body = makeBody(scenario.bodySize)
  const session = await client.connect(target)
  for (const warmupQueue of values["warmup-queue"] ?? []) {
    await runScenario(session, scenario, warmupQueue, body, Number(values.warmup ?? 0))
  }

  const startRss = process.memoryUsage.rss()
  let peakRss = startRss
  const sampler = setInterval(() => {
    const rss = process.memoryUsage.rss()
    if (rss > peakRss) peakRss = rss
  }, 10)
  const collections = { scavenges: 0, markCompacts: 0, pauseMs: 0 }
  const gcObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = (entry as PerformanceEntry & { readonly detail?: { readonly kind?: number } }).detail?.kind
      if (kind === PerfConstants.NODE_PERFORMANCE_GC_MINOR) collections.scavenges++
      if (kind === PerfConstants.NODE_PERFORMANCE_GC_MAJOR) collections.markCompacts++
      collections.pauseMs += entry.duration
    }
  })
  gcObserver.observe({ entryTypes: ["gc"] })
  const syscallsBefore = syscalls()
  const otherThreadsBefore = otherThreadsCpuUs()
  const faultsBefore = process.resourceUsage().minorPageFault
  const cpuBefore = process.cpuUsage()
  const startUs = monotonicUs()
  const began = performance.now()
  const measured = await runScenario(session, scenario, values.queue, body, messages)
  const seconds = (performance.now() - began) / 1000
  const cpu = process.cpuUsage(cpuBefore)
  const faults = process.resourceUsage().minorPageFault - faultsBefore
  const syscallsAfter = syscalls()
  const otherThreadsAfter = otherThreadsCpuUs()
  gcObserver.disconnect()
  const profile = profilePath()
  if (profile !== undefined) {
    Fs.mkdirSync(Path.dirname(profile), { recursive: true })
    Fs.writeFileSync(`${profile}.window.json`, JSON.stringify({ startUs, endUs: monotonicUs() }))
  }
  clearInterval(sampler)
  peakRss = Math.max(peakRss, process.memoryUsage.rss())
  await session.close()

  const latencies = measured.latencies
  let rate = messages / seconds
  let p50Us: number | undefined
  let p99Us: number | undefined
  let operations = messages
  if (latencies !== undefined) {
    check(latencies.length === messages, `${latencies.length} latencies for ${messages} round trips`)
    const sorted = latencies.toSorted((a, b) => a - b)
    p50Us = percentile(sorted, 50) / 1000
    p99Us = percentile(sorted, 99) / 1000
    rate = 1e9 / (latencies.reduce((a, b) => a + b, 0) / latencies.length)
    operations = messages + 1
  }
  const result: WorkerResult = {
    ok: true,
    client: client.name,
    scenario: scenario.name,
    messages,
    seconds,
    rate,
    cpuPerMessageUs: (cpu.user + cpu.system) / operations,
    systemPerMessageUs: cpu.system / operations,
    pageFaultsPerMessage: faults / operations,
    collections,
    ...(otherThreadsBefore !== undefined && otherThreadsAfter !== undefined
      ? { otherThreadsPerMessageUs: (otherThreadsAfter - otherThreadsBefore) / operations }
      : {}),
    ...(syscallsBefore !== undefined && syscallsAfter !== undefined
      ? {
        syscallsPerMessage: {
          reads: (syscallsAfter.reads - syscallsBefore.reads) / operations,
          writes: (syscallsAfter.writes - syscallsBefore.writes) / operations
        }
      }
      : {}),
    peakRss,
    startRss,
    ...(p50Us !== undefined ? { p50Us } : {}),
    ...(p99Us !== undefined ? { p99Us } : {})
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

if (process.argv[1] !== undefined && Path.resolve(process.argv[1]) === import.meta.filename) {
  main().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stdout.write(
        `${
          JSON.stringify({ ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) })
        }\n`
      )
      process.exit(1)
    }
  )
}
