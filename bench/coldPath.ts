/**
 * What one delivery costs to decode when the process has just woken up, as it has in a round trip,
 * against what it costs in a tight loop. A round trip's client work runs once per wake-up: the
 * process sleeps in the event loop while the broker routes the message, then decodes one delivery
 * and writes one ack and one publish. Figures per message taken from a throughput run do not say
 * what that costs.
 *
 * Two things are timed, each hot (back to back after a warm-up) and cold (each after a 1 ms
 * `setTimeout`):
 * - decode: the 130-byte chunk of one 16-byte `basic.deliver` (method, content header and body
 *   frames), fed to `FrameDecoder.pushEach` and a `CommandAssembler`, as the client does with a read;
 * - baseline: a copy of the same chunk and a sum of its bytes, a few lines of plain JavaScript, to
 *   show how much of the cold cost is the machine's and not the decoder's.
 *
 * Run with `pnpm bench:cold`; it prints medians in µs and the cold/hot ratios. This is not a
 * test: it asserts only that every chunk decoded to one command.
 */
import { CommandAssembler, FrameDecoder, MessageEncoder, Methods } from "@effect-amqp/protocol"

const WARMUP = 200_000
const HOT_SAMPLES = 5_000
const COLD_SAMPLES = 2_000

const delivery = Methods.basicDeliver({
  consumerTag: "amq.ctag-suOmSxN5wTk0000000000",
  deliveryTag: 1,
  redelivered: false,
  exchange: "",
  routingKey: "amq.gen-0000000000000000000000"
})
const encoded = new MessageEncoder().message(1, delivery, {}, new Uint8Array(16))
const chunk = Buffer.concat(encoded instanceof Uint8Array ? [encoded] : encoded)

const decoder = new FrameDecoder()
const assembler = new CommandAssembler(1, { joinInPlace: true })
let commands = 0
const onFrame = (frame: Parameters<CommandAssembler["push"]>[0]) => {
  if (assembler.push(frame) !== undefined) commands++
}

const timed = (f: () => void): number => {
  const start = process.hrtime.bigint()
  f()
  return Number(process.hrtime.bigint() - start) / 1000
}

let checksum = 0
const cases = {
  decode: () => decoder.pushEach(Buffer.from(chunk), onFrame),
  baseline: () => {
    const copy = Buffer.from(chunk)
    for (let i = 0; i < copy.length; i++) checksum = (checksum + copy[i]!) | 0
  }
}

const median = (xs: ReadonlyArray<number>): number => xs.toSorted((a, b) => a - b)[xs.length >> 1]!

const sleep = () => new Promise((resolve) => setTimeout(resolve, 1))

const measure = async (f: () => void) => {
  for (let i = 0; i < WARMUP; i++) f()
  const hot: Array<number> = []
  for (let i = 0; i < HOT_SAMPLES; i++) hot.push(timed(f))
  const cold: Array<number> = []
  for (let i = 0; i < COLD_SAMPLES; i++) {
    await sleep()
    cold.push(timed(f))
  }
  return { hot: median(hot), cold: median(cold) }
}

console.log(`one ${chunk.length}-byte delivery chunk; medians in µs`)
console.log("case       hot     cold    cold/hot")
for (const [name, f] of Object.entries(cases)) {
  const { cold, hot } = await measure(f)
  console.log(
    `${name.padEnd(8)} ${hot.toFixed(2).padStart(6)} ${cold.toFixed(2).padStart(8)} ${(cold / hot).toFixed(1)}x`
  )
}
const expected = WARMUP + HOT_SAMPLES + COLD_SAMPLES
if (commands !== expected) throw new Error(`decoded ${commands} commands, expected ${expected}`)
