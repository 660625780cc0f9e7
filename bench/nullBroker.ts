/**
 * A null broker: a loopback AMQP 0-9-1 server that does as little as a peer can, so that a
 * benchmark against it measures the client alone.
 *
 * It speaks the handshake, channel.open/close, queue.declare/delete/purge (a queue is only a
 * message count and a body size), basic.qos, confirm.select, basic.publish (counted once its
 * content is complete and, in confirm mode, acked with one multiple=true `basic.ack` per read
 * chunk), basic.consume (the queue's messages, pre-encoded, pushed as fast as the socket drains)
 * and basic.cancel. Acks from the client are ignored; prefetch is not enforced.
 *
 * Run as a program (`node bench/nullBroker.ts`) it listens on 127.0.0.1, port 0, prints
 * `{"port":N}` and exits when its standard input closes.
 */
import { encodeMethod, type Method, Methods } from "@effect-amqp/protocol"
import * as Net from "node:net"
import * as Path from "node:path"
import { makeBody } from "./adapter.ts"
import {
  BASIC,
  BASIC_PUBLISH,
  copiesFor,
  decodeMethod,
  deliveryTagOffset,
  encodeMessage,
  FrameScanner,
  publishRoutingKey,
  repeat
} from "./wire.ts"

const FRAME_MAX = 131072
const BATCH_BYTES = 128 * 1024

interface QueueState {
  count: number
  bodySize: number
}

interface ChannelState {
  confirm: boolean
  published: number
  acked: number
  inPublish: boolean
  routingKey: string
  bodySize: number
  remaining: number
  deliveryTag: number
  readonly consumers: Map<string, { active: boolean }>
}

const queues = new Map<string, QueueState>()
let queueSeq = 0
let tagSeq = 0

const serverProperties = {
  product: "effect-amqp null broker",
  version: "0",
  capabilities: {
    publisher_confirms: true,
    "basic.nack": true,
    consumer_cancel_notify: true,
    exchange_exchange_bindings: true,
    "connection.blocked": true,
    authentication_failure_close: true,
    per_consumer_qos: true
  }
}

const queueOf = (name: string): QueueState => {
  let queue = queues.get(name)
  if (queue === undefined) {
    queue = { count: 0, bodySize: 0 }
    queues.set(name, queue)
  }
  return queue
}

const serve = (socket: Net.Socket): void => {
  socket.setNoDelay(true)
  const channels = new Map<number, ChannelState>()
  let headerLeft = 8
  let closed = false
  const send = (channel: number, method: Method) => {
    if (!closed) socket.write(encodeMethod(channel, method))
  }

  let drainWaiters: Array<() => void> = []
  const wakeDrainWaiters = () => {
    const waiters = drainWaiters
    drainWaiters = []
    for (const wake of waiters) wake()
  }
  socket.on("drain", wakeDrainWaiters)
  socket.on("close", () => {
    closed = true
    wakeDrainWaiters()
  })
  socket.on("error", () => {
    closed = true
  })
  const drained = () => new Promise<void>((resolve) => drainWaiters.push(resolve))

  const deliver = async (channel: number, state: ChannelState, queueName: string, consumerTag: string) => {
    const consumer = { active: true }
    state.consumers.set(consumerTag, consumer)
    const queue = queueOf(queueName)
    const message = encodeMessage(
      channel,
      Methods.basicDeliver({ consumerTag, deliveryTag: 0, exchange: "", routingKey: queueName }),
      makeBody(queue.bodySize),
      FRAME_MAX
    )
    const tagAt = deliveryTagOffset(message, 7)
    const copies = copiesFor(message.length, BATCH_BYTES)
    const batch = repeat(message, copies)
    let sinceYield = 0
    while (consumer.active && socket.writable && queue.count > 0) {
      const k = Math.min(copies, queue.count)
      queue.count -= k
      const out = Buffer.from(batch.subarray(0, k * message.length))
      for (let i = 0; i < k; i++) {
        const tag = ++state.deliveryTag
        const at = i * message.length + tagAt
        out.writeUInt32BE(Math.floor(tag / 0x1_0000_0000), at)
        out.writeUInt32BE(tag >>> 0, at + 4)
      }
      if (!socket.write(out)) {
        sinceYield = 0
        await drained()
      } else if (++sinceYield >= 8) {
        sinceYield = 0
        await new Promise((resolve) => setImmediate(resolve))
      }
    }
  }

  const complete = (state: ChannelState) => {
    state.inPublish = false
    const queue = queueOf(state.routingKey)
    queue.count++
    queue.bodySize = state.bodySize
    if (state.confirm) state.published++
  }

  const onMethod = (channel: number, method: Method) => {
    const state = channels.get(channel)
    switch (method._tag) {
      case "connection.start-ok":
        return send(0, Methods.connectionTune({ channelMax: 2047, frameMax: FRAME_MAX, heartbeat: 0 }))
      case "connection.tune-ok":
        return
      case "connection.open":
        return send(0, Methods.connectionOpenOk())
      case "connection.close":
        send(0, Methods.connectionCloseOk())
        closed = true
        socket.end()
        return
      case "connection.close-ok":
        socket.end()
        return
      case "channel.open":
        channels.set(channel, {
          confirm: false,
          published: 0,
          acked: 0,
          inPublish: false,
          routingKey: "",
          bodySize: 0,
          remaining: 0,
          deliveryTag: 0,
          consumers: new Map()
        })
        return send(channel, Methods.channelOpenOk())
      case "channel.close":
        for (const consumer of state?.consumers.values() ?? []) consumer.active = false
        channels.delete(channel)
        return send(channel, Methods.channelCloseOk())
      case "channel.close-ok":
        channels.delete(channel)
        return
      case "exchange.declare":
        if (!method.nowait) send(channel, Methods.exchangeDeclareOk())
        return
      case "queue.declare": {
        const name = method.queue === "" ? `null-queue-${++queueSeq}` : method.queue
        if (method.passive && !queues.has(name)) {
          return send(
            channel,
            Methods.channelClose({
              replyCode: 404,
              replyText: `NOT_FOUND - no queue '${name}'`,
              classId: 50,
              methodId: 10
            })
          )
        }
        const queue = queueOf(name)
        let consumerCount = 0
        for (const other of channels.values()) consumerCount += other.consumers.size
        if (!method.nowait) {
          send(channel, Methods.queueDeclareOk({ queue: name, messageCount: queue.count, consumerCount }))
        }
        return
      }
      case "queue.delete": {
        const count = queues.get(method.queue)?.count ?? 0
        queues.delete(method.queue)
        if (!method.nowait) send(channel, Methods.queueDeleteOk({ messageCount: count }))
        return
      }
      case "queue.purge": {
        const queue = queueOf(method.queue)
        const count = queue.count
        queue.count = 0
        if (!method.nowait) send(channel, Methods.queuePurgeOk({ messageCount: count }))
        return
      }
      case "basic.qos":
        return send(channel, Methods.basicQosOk())
      case "confirm.select":
        if (state !== undefined) state.confirm = true
        if (!method.nowait) send(channel, Methods.confirmSelectOk())
        return
      case "basic.consume": {
        if (state === undefined) return
        const consumerTag = method.consumerTag === "" ? `null-ctag-${++tagSeq}` : method.consumerTag
        if (!method.nowait) send(channel, Methods.basicConsumeOk({ consumerTag }))
        void deliver(channel, state, method.queue, consumerTag)
        return
      }
      case "basic.cancel": {
        const consumer = state?.consumers.get(method.consumerTag)
        if (consumer !== undefined) consumer.active = false
        state?.consumers.delete(method.consumerTag)
        if (!method.nowait) send(channel, Methods.basicCancelOk({ consumerTag: method.consumerTag }))
        return
      }
      case "basic.ack":
      case "basic.nack":
      case "basic.reject":
        return
      default:
        process.stderr.write(`null broker: ignoring ${method._tag}\n`)
    }
  }

  const scanner = new FrameScanner({
    method: (channel, classId, methodId, buf, start, end) => {
      if (classId === BASIC && methodId === BASIC_PUBLISH) {
        const state = channels.get(channel)
        if (state === undefined) return
        state.routingKey = publishRoutingKey(buf, start)
        state.inPublish = true
        return
      }
      onMethod(channel, decodeMethod(buf, start, end))
    },
    header: (channel, bodySize) => {
      const state = channels.get(channel)
      if (state === undefined || !state.inPublish) return
      state.bodySize = bodySize
      state.remaining = bodySize
      if (bodySize === 0) complete(state)
    },
    body: (channel, size) => {
      const state = channels.get(channel)
      if (state === undefined || !state.inPublish) return
      state.remaining -= size
      if (state.remaining === 0) complete(state)
    }
  })

  socket.on("data", (chunk: Buffer) => {
    let data = chunk
    if (headerLeft > 0) {
      const skip = Math.min(headerLeft, data.length)
      headerLeft -= skip
      data = data.subarray(skip)
      if (headerLeft === 0) send(0, Methods.connectionStart({ serverProperties, mechanisms: "PLAIN AMQPLAIN" }))
    }
    try {
      if (data.length > 0) scanner.push(data)
    } catch (error) {
      process.stderr.write(`null broker: ${String(error)}\n`)
      socket.destroy()
      return
    }
    for (const [channel, state] of channels) {
      if (state.confirm && state.published > state.acked) {
        state.acked = state.published
        send(channel, Methods.basicAck({ deliveryTag: state.published, multiple: true }))
      }
    }
  })
}

/** Starts a null broker in this process on 127.0.0.1 and returns its port. */
export const startNullBroker = (): Promise<{ readonly port: number; readonly server: Net.Server }> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer(serve)
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      if (address === null || typeof address === "string") return reject(new Error("no port"))
      resolve({ port: address.port, server })
    })
  })

if (process.argv[1] !== undefined && Path.resolve(process.argv[1]) === import.meta.filename) {
  const { port } = await startNullBroker()
  process.stdout.write(`${JSON.stringify({ port })}\n`)
  process.stdin.on("end", () => process.exit(0))
  process.stdin.resume()
}
