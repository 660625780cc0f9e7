/**
 * Summarises V8 `.cpuprofile` files (from `node --cpu-prof`, or `pnpm bench --cpu-prof`): the
 * functions with the most self time, and the same grouped by package, so a hot spot can be named
 * with evidence. When the worker left `<file>.window.json` beside a profile, only the samples of
 * the measured part count (connect, module loading and close are left out).
 *
 *   node bench/profileSummary.ts file.cpuprofile [more files] [--top 25] [--callers name [--depth 6]]
 *
 * `--callers name` shows, for the samples whose own frame is the function `name`, the call chains
 * above it, heaviest first: where a hot spot is reached from.
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { parseArgs } from "node:util"

interface ProfileNode {
  readonly id: number
  readonly children?: ReadonlyArray<number>
  readonly callFrame: {
    readonly functionName: string
    readonly url: string
    readonly lineNumber: number
  }
}

interface Profile {
  readonly startTime: number
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const root = Path.resolve(import.meta.dirname, "..")

const place = (url: string): string => {
  if (url === "") return "(native)"
  const path = url.startsWith("file://") ? new URL(url).pathname : url
  // A `--ref` snapshot lives in a temporary folder; name its files as the work tree's.
  const local = path.startsWith(root) ? Path.relative(root, path) : path.replace(/^.*\/effect-amqp-bench-[^/]+\//, "")
  return local.replace(/^node_modules\/\.pnpm\/[^/]+\/node_modules\//, "").replace(/^.*\/node_modules\//, "")
}

/** The package (or workspace folder) a source place belongs to. */
const packageOf = (where: string): string => {
  if (where.startsWith("node:") || where === "(native)") return where === "(native)" ? "(native, GC, idle)" : "node"
  const parts = where.split("/")
  if (parts[0] === "packages") return `packages/${parts[1]}`
  if (parts[0]?.startsWith("@") === true) return `${parts[0]}/${parts[1]}`
  return parts[0] ?? where
}

/** Monotonic microseconds, the clock of both `process.hrtime` and V8's profiler on Linux. */
export interface Window {
  readonly startUs: number
  readonly endUs: number
}

/** Each sample's node and duration, inside the window when one is given. */
const samplesOf = function*(profile: Profile, window: Window | undefined) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  let at = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]!)
    const dt = profile.timeDeltas[i] ?? 0
    at += dt
    if (window !== undefined && (at < window.startUs || at > window.endUs)) continue
    if (node !== undefined) yield { node, dt }
  }
}

const frameName = (node: ProfileNode): string =>
  `${node.callFrame.functionName || "(anonymous)"}  ${place(node.callFrame.url)}:${node.callFrame.lineNumber + 1}`

const sortedEntries = (m: Map<string, number>) => [...m.entries()].toSorted((a, b) => b[1] - a[1])

export const summarise = (profile: Profile, window?: Window) => {
  const self = new Map<string, number>()
  const packages = new Map<string, number>()
  let total = 0
  for (const { dt, node } of samplesOf(profile, window)) {
    total += dt
    const where = place(node.callFrame.url)
    const key = frameName(node)
    self.set(key, (self.get(key) ?? 0) + dt)
    const pkg = node.callFrame.url === "" ? `(${node.callFrame.functionName})` : packageOf(where)
    packages.set(pkg, (packages.get(pkg) ?? 0) + dt)
  }
  return { total, functions: sortedEntries(self), packages: sortedEntries(packages) }
}

/** The call chains (up to `depth` frames) above the samples whose own frame is `name`. */
export const callers = (profile: Profile, name: string, depth: number, window?: Window) => {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const chains = new Map<string, number>()
  let total = 0
  for (const { dt, node } of samplesOf(profile, window)) {
    if (node.callFrame.functionName !== name) continue
    total += dt
    const chain: Array<string> = []
    for (let id = parent.get(node.id); id !== undefined && chain.length < depth; id = parent.get(id)) {
      const frame = byId.get(id)
      if (frame !== undefined) chain.push(frameName(frame))
    }
    const key = chain.join("\n      < ")
    chains.set(key, (chains.get(key) ?? 0) + dt)
  }
  return { total, chains: sortedEntries(chains) }
}

const ms = (t: number) => `${(t / 1000).toFixed(0).padStart(6)} ms`

const main = () => {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      top: { type: "string", default: "25" },
      callers: { type: "string" },
      depth: { type: "string", default: "6" }
    }
  })
  const top = Number(values.top)
  for (const file of positionals) {
    const windowFile = `${file}.window.json`
    const window = Fs.existsSync(windowFile) ? (JSON.parse(Fs.readFileSync(windowFile, "utf8")) as Window) : undefined
    const profile = JSON.parse(Fs.readFileSync(file, "utf8")) as Profile
    if (values.callers !== undefined) {
      const { chains, total } = callers(profile, values.callers, Number(values.depth), window)
      process.stdout.write(`\n${file}: ${values.callers}, ${(total / 1000).toFixed(1)} ms self time, reached from:\n`)
      for (const [chain, t] of chains.slice(0, 8)) {
        process.stdout.write(`${(t / 1000).toFixed(1).padStart(8)} ms  ${chain}\n`)
      }
      continue
    }
    const { functions, packages, total } = summarise(profile, window)
    const pct = (t: number) => `${((100 * t) / total).toFixed(1).padStart(5)}%`
    const scope = window === undefined ? "whole process" : "measured part only"
    process.stdout.write(`\n${file}: ${(total / 1000).toFixed(0)} ms sampled (${scope})\n\nself time by package:\n`)
    for (const [name, t] of packages.slice(0, 12)) process.stdout.write(`${pct(t)} ${ms(t)}  ${name}\n`)
    process.stdout.write(`\ntop ${top} functions by self time:\n`)
    for (const [name, t] of functions.slice(0, top)) process.stdout.write(`${pct(t)} ${ms(t)}  ${name}\n`)
  }
}

if (process.argv[1] !== undefined && Path.resolve(process.argv[1]) === import.meta.filename) main()
