/**
 * Turns the workers' results into medians, our ratio to the best other client, a console table,
 * and `latest.json` / `latest.md` under bench/results/.
 *
 * `ratioToBest` compares effect-amqp with the best of the other real clients (not the raw
 * reference) and reads the same way for every metric: above 1 we are better (rate ours/theirs,
 * time and cost theirs/ours).
 */
import * as Fs from "node:fs"
import * as Path from "node:path"
import type { BrokerKind, Scenario } from "./scenarios.ts"
import type { WorkerResult } from "./worker.ts"

export const OURS = "effect-amqp"
export const REFERENCE = "raw"

export interface Sample {
  readonly broker: BrokerKind
  readonly scenario: Scenario
  readonly rep: number
  readonly result: WorkerResult
}

export interface ClientMedians {
  readonly value: number
  readonly rate: number
  readonly cpuPerMessageUs: number
  readonly peakRssMiB: number
  /** Peak RSS above the RSS before the measured part, over the body size. */
  readonly rssGrowthPerBody: number
  readonly reps: number
}

export interface Row {
  readonly id: string
  readonly broker: BrokerKind
  readonly scenario: string
  readonly title: string
  readonly messages: number
  readonly bodySize: number
  readonly metric: "rate" | "p50" | "p99"
  readonly unit: string
  readonly higherIsBetter: boolean
  readonly medians: Record<string, ClientMedians>
  readonly samples: Record<string, ReadonlyArray<number>>
  readonly best: string | undefined
  readonly ratioToBest: number | undefined
  readonly cpuRatioToBest: number | undefined
  /** Peak RSS of the leanest other client over ours; above 1 we use less memory. */
  readonly rssRatioToBest: number | undefined
}

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = values.toSorted((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const metricsOf = (scenario: Scenario): ReadonlyArray<Row["metric"]> =>
  scenario.kind === "pingPong" && scenario.bodySize <= 1024 ? ["rate", "p50", "p99"] : ["rate"]

const valueOf = (result: WorkerResult, metric: Row["metric"]): number =>
  metric === "rate" ? result.rate : metric === "p50" ? (result.p50Us ?? NaN) : (result.p99Us ?? NaN)

/** Medians per broker, scenario and metric, in the order the samples first appeared. */
export const summarise = (samples: ReadonlyArray<Sample>, clients: ReadonlyArray<string>): Array<Row> => {
  const groups = new Map<string, Array<Sample>>()
  for (const sample of samples) {
    const key = `${sample.broker}/${sample.scenario.name}`
    const group = groups.get(key) ?? []
    group.push(sample)
    groups.set(key, group)
  }
  const rows: Array<Row> = []
  for (const [key, group] of groups) {
    const scenario = group[0]!.scenario
    for (const metric of metricsOf(scenario)) {
      const higherIsBetter = metric === "rate"
      const medians: Record<string, ClientMedians> = {}
      const values: Record<string, ReadonlyArray<number>> = {}
      for (const client of clients) {
        const mine = group.filter((s) => s.result.client === client).map((s) => s.result)
        if (mine.length === 0) continue
        values[client] = mine.map((r) => valueOf(r, metric))
        medians[client] = {
          value: median(values[client]),
          rate: median(mine.map((r) => r.rate)),
          cpuPerMessageUs: median(mine.map((r) => r.cpuPerMessageUs)),
          peakRssMiB: median(mine.map((r) => r.peakRss / 1024 / 1024)),
          rssGrowthPerBody: median(mine.map((r) => (r.peakRss - r.startRss) / scenario.bodySize)),
          reps: mine.length
        }
      }
      const others = Object.keys(medians).filter((c) => c !== OURS && c !== REFERENCE)
      const better = (a: number, b: number) => (higherIsBetter ? a > b : a < b)
      let best: string | undefined
      for (const other of others) {
        if (best === undefined || better(medians[other]!.value, medians[best]!.value)) best = other
      }
      const lowest = (of: (m: ClientMedians) => number) =>
        others.reduce<string | undefined>(
          (a, c) => (a === undefined || of(medians[c]!) < of(medians[a]!) ? c : a),
          undefined
        )
      const cheapest = lowest((m) => m.cpuPerMessageUs)
      const leanest = lowest((m) => m.peakRssMiB)
      const ours = medians[OURS]
      const ratioToBest = ours === undefined || best === undefined
        ? undefined
        : higherIsBetter
        ? ours.value / medians[best]!.value
        : medians[best]!.value / ours.value
      const cpuRatioToBest = ours === undefined || cheapest === undefined
        ? undefined
        : medians[cheapest]!.cpuPerMessageUs / ours.cpuPerMessageUs
      const rssRatioToBest = ours === undefined || leanest === undefined
        ? undefined
        : medians[leanest]!.peakRssMiB / ours.peakRssMiB
      rows.push({
        id: metric === "rate" ? key : `${key} ${metric}`,
        broker: group[0]!.broker,
        scenario: scenario.name,
        title: metric === "rate" ? scenario.title : `${scenario.title} ${metric}`,
        messages: group[0]!.result.messages,
        bodySize: scenario.bodySize,
        metric,
        unit: metric === "rate" ? "msg/s" : "µs",
        higherIsBetter,
        medians,
        samples: values,
        best,
        ratioToBest,
        cpuRatioToBest,
        rssRatioToBest
      })
    }
  }
  return rows
}

const brokerTitle: Record<BrokerKind, string> = {
  rabbitmq: "RabbitMQ",
  null: "null broker",
  tls: "RabbitMQ over TLS (private node)"
}

const formatValue = (n: number | undefined, unit: string): string => {
  if (n === undefined || Number.isNaN(n)) return "-"
  if (unit === "µs") return n < 100 ? n.toFixed(1) : Math.round(n).toLocaleString("en-US")
  if (n < 10) return n.toFixed(2)
  if (n < 100) return n.toFixed(1)
  return Math.round(n).toLocaleString("en-US")
}

const formatRatio = (n: number | undefined): string => (n === undefined ? "-" : `${n.toFixed(2)}x`)

/** How a table shows a row: one client's cell, the ratio column, the unit. */
type Cells = readonly [
  cell: (row: Row, client: string) => string,
  ratio: (row: Row) => string,
  unitOf: (row: Row) => string
]

const table = (
  rows: ReadonlyArray<Row>,
  clients: ReadonlyArray<string>,
  [cell, ratio, unitOf]: Cells
): Array<string> => {
  const lines = [
    `| scenario | ${clients.join(" | ")} | ours/best |`,
    `| --- | ${clients.map(() => "---:").join(" | ")} | ---: |`
  ]
  for (const row of rows) {
    lines.push(`| ${row.title} (${unitOf(row)}) | ${clients.map((c) => cell(row, c)).join(" | ")} | ${ratio(row)} |`)
  }
  return lines
}

/** The smallest growth of the other clients over ours; above 1 we grow less. */
const growthRatio = (row: Row): number | undefined => {
  const ours = row.medians[OURS]
  const others = Object.entries(row.medians).filter(([c]) => c !== OURS && c !== REFERENCE).map(([, m]) => m)
  if (ours === undefined || others.length === 0) return undefined
  return Math.min(...others.map((m) => m.rssGrowthPerBody)) / ours.rssGrowthPerBody
}

export interface RunInfo {
  readonly generatedAt: string
  /** `git describe --always --dirty` of the work tree the clients were loaded from. */
  readonly commit: string
  readonly node: string
  readonly reps: number
  readonly quick: boolean
  readonly url: string
  readonly cpus: number
  readonly loadAverage: ReadonlyArray<number>
  readonly durationSeconds: number
  readonly notes: ReadonlyArray<string>
}

export const markdown = (info: RunInfo, rows: ReadonlyArray<Row>, clients: ReadonlyArray<string>): string => {
  const out: Array<string> = [
    "# effect-amqp benchmark",
    "",
    `${info.generatedAt}, commit ${info.commit}, Node ${info.node}, ${info.cpus} CPUs, ${info.reps} repetition(s)${
      info.quick ? " (quick)" : ""
    }, ${Math.round(info.durationSeconds)} s. Medians; each client-scenario ran in a fresh process.`,
    "`ours/best` compares effect-amqp with the best of amqplib, @cloudamqp/amqp-client and rabbitmq-client;",
    "above 1 means effect-amqp is better. `raw` is pre-encoded frames on a bare socket: the ceiling.",
    ""
  ]
  for (const note of info.notes) out.push(`- ${note}`)
  if (info.notes.length > 0) out.push("")
  for (const broker of ["rabbitmq", "null", "tls"] as const) {
    const mine = rows.filter((r) => r.broker === broker)
    if (mine.length === 0) continue
    const rateRows = mine.filter((r) => r.metric === "rate")
    const sections: ReadonlyArray<readonly [string, ReadonlyArray<Row>, Cells]> = [
      [
        "Rate, or latency where the unit says µs:",
        mine,
        [
          (row, c) => formatValue(row.medians[c]?.value, row.unit),
          (row) => formatRatio(row.ratioToBest),
          (row) => row.unit
        ]
      ],
      [
        "Client CPU time per message (µs, user+system):",
        rateRows,
        [
          (row, c) => formatValue(row.medians[c]?.cpuPerMessageUs, "µs"),
          (row) => formatRatio(row.cpuRatioToBest),
          () => "µs/msg"
        ]
      ],
      [
        "Peak RSS during the scenario (MiB, sampled every 10 ms):",
        rateRows,
        [
          (row, c) => formatValue(row.medians[c]?.peakRssMiB, "MiB"),
          (row) => formatRatio(row.rssRatioToBest),
          () => "MiB"
        ]
      ]
    ]
    const largeRows = rateRows.filter((r) => r.bodySize >= 1024 * 1024)
    const growth: ReadonlyArray<readonly [string, ReadonlyArray<Row>, Cells]> = largeRows.length === 0 ? [] : [[
      "Large messages: peak RSS above the RSS before the measured part, in multiples of one message's size:",
      largeRows,
      [
        (row, c) => formatValue(row.medians[c]?.rssGrowthPerBody, "x"),
        (row) => formatRatio(growthRatio(row)),
        () => "x body"
      ]
    ]]
    out.push(`## ${brokerTitle[broker]}`)
    for (const [heading, sectionRows, cells] of [...sections, ...growth]) {
      out.push("", heading, "", ...table(sectionRows, clients, cells))
    }
    out.push("")
  }
  return out.join("\n")
}

/** A compact console table: medians and ours/best. */
export const consoleTable = (rows: ReadonlyArray<Row>, clients: ReadonlyArray<string>): string => {
  const header = ["scenario", ...clients, "ours/best"]
  const body = rows.map((row) => [
    `${row.broker === "rabbitmq" ? "" : `[${row.broker}] `}${row.title} (${row.unit})`,
    ...clients.map((c) => formatValue(row.medians[c]?.value, row.unit)),
    formatRatio(row.ratioToBest)
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")
  return [line(header), ...body.map(line)].join("\n")
}

export const writeResults = (
  dir: string,
  info: RunInfo,
  rows: ReadonlyArray<Row>,
  clients: ReadonlyArray<string>
): void => {
  Fs.mkdirSync(dir, { recursive: true })
  Fs.writeFileSync(Path.join(dir, "latest.json"), `${JSON.stringify({ ...info, clients, scenarios: rows }, null, 2)}\n`)
  Fs.writeFileSync(Path.join(dir, "latest.md"), `${markdown(info, rows, clients)}\n`)
}
