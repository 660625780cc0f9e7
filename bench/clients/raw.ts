/**
 * The reference "client": pre-encoded frames written straight to a socket, the handshake done by
 * hand with `@effect-amqp/protocol`, publishes in writes of about 256 KiB, acks patched into a
 * template and sent once per read chunk. What it reaches is the broker's ceiling, not a client's.
 *
 * It is also the orchestrator's tool to declare, prefill, count and delete the bench queues.
 * One channel (1), no heartbeats, no recovery, nothing a real client would need.
 */
import { encodeMethod, type FieldTable, type Method, Methods, PROTOCOL_HEADER } from "@effect-amqp/protocol"
import * as Net from "node:net"
import * as Tls from "node:tls"
import { type BenchClient, check, type ConsumeOptions, type Session, type Target } from "../adapter.ts"
import {
  BASIC,
  BASIC_ACK,
  BASIC_DELIVER,
  copiesFor,
  decodeMethod,
  deliveryTagOffset,
  encodeMessage,
  FrameScanner,
  readLonglong,
  repeat
} from "../wire.ts"

const CHANNEL = 1

/** `basic.ack` frames with their delivery tag patched in, `count` of them back to back. */
const ackFrames = (template: Buffer, tags: ReadonlyArray<number>): Buffer => {
  const out = repeat(template, tags.length)
  for (let i = 0; i < tags.length; i++) writeTag(out, i * template.length + 11, tags[i]!)
  return out
}

const writeTag = (buf: Buffer, at: number, tag: number): void => {
  buf.writeUInt32BE(Math.floor(tag / 0x1_0000_0000), at)
  buf.writeUInt32BE(tag >>> 0, at + 4)
}

const ACK_ONE = encodeMethod(CHANNEL, Methods.basicAck({ deliveryTag: 0, multiple: false }))
const ACK_MULTIPLE = encodeMethod(CHANNEL, Methods.basicAck({ deliveryTag: 0, multiple: true }))

export class RawConnection implements Session {
  readonly socket: Net.Socket
  frameMax = 131072
  private readonly scanner: FrameScanner
  private waiter: { readonly resolve: (m: Method) => void; readonly reject: (e: Error) => void } | undefined
  private failure: Error | undefined
  private closing = false
  private readonly failListeners = new Set<(e: Error) => void>()
  private inDelivery = false
  private deliveryTag = 0
  private deliverySize = 0
  private remaining = 0
  private onDelivery: ((tag: number, size: number) => void) | undefined
  private onAck: ((tag: number, multiple: boolean) => void) | undefined
  private onChunkEnd: (() => void) | undefined
  /** Delivery tags issued on the confirm channel by earlier calls. */
  private confirmTags = 0

  private constructor(socket: Net.Socket) {
    this.socket = socket
    this.scanner = new FrameScanner({
      method: (_channel, classId, methodId, buf, start, end) => {
        if (classId === BASIC && methodId === BASIC_DELIVER) {
          this.deliveryTag = readLonglong(buf, deliveryTagOffset(buf, start))
          this.inDelivery = true
          return
        }
        if (classId === BASIC && methodId === BASIC_ACK) {
          this.onAck?.(readLonglong(buf, start + 4), (buf[start + 12]! & 1) === 1)
          return
        }
        this.onMethod(decodeMethod(buf, start, end))
      },
      header: (_channel, bodySize) => {
        if (!this.inDelivery) return
        this.deliverySize = bodySize
        this.remaining = bodySize
        if (bodySize === 0) this.delivered()
      },
      body: (_channel, size) => {
        if (!this.inDelivery) return
        this.remaining -= size
        if (this.remaining === 0) this.delivered()
      }
    })
    socket.on("data", (chunk: Buffer) => {
      try {
        this.scanner.push(chunk)
        this.onChunkEnd?.()
      } catch (error) {
        this.fail(error instanceof Error ? error : new Error(String(error)))
        socket.destroy()
      }
    })
    socket.on("error", (error) => this.fail(error))
    socket.on("close", () => this.fail(new Error("socket closed")))
  }

  static async open(target: Target): Promise<RawConnection> {
    const url = new URL(target.url)
    const secure = url.protocol === "amqps:"
    const host = url.hostname.replace(/^\[|\]$/g, "")
    const port = Number(url.port || (secure ? 5671 : 5672))
    const socket = secure
      ? Tls.connect({ host, port, ...(target.tlsCa !== undefined ? { ca: target.tlsCa } : {}) }).setNoDelay(true)
      : Net.connect({ host, port, noDelay: true })
    const conn = new RawConnection(socket)
    await new Promise<void>((resolve, reject) => {
      socket.once(secure ? "secureConnect" : "connect", () => resolve())
      socket.once("error", reject)
    })
    const started = conn.next()
    socket.write(PROTOCOL_HEADER)
    await started
    const user = decodeURIComponent(url.username || "guest")
    const pass = decodeURIComponent(url.password || "guest")
    const tune = await conn.call(
      0,
      Methods.connectionStartOk({
        clientProperties: { product: "effect-amqp bench raw" },
        response: `\u0000${user}\u0000${pass}`
      })
    )
    if (tune._tag !== "connection.tune") throw new Error(`expected connection.tune, got ${tune._tag}`)
    conn.frameMax = tune.frameMax === 0 ? 131072 : Math.min(tune.frameMax, 131072)
    socket.write(encodeMethod(0, Methods.connectionTuneOk({ channelMax: tune.channelMax, frameMax: conn.frameMax })))
    await conn.call(0, Methods.connectionOpen({ virtualHost: decodeURIComponent(url.pathname.slice(1)) || "/" }))
    await conn.call(CHANNEL, Methods.channelOpen())
    return conn
  }

  // -----------------------------------------------------------------------------------------------
  // plumbing
  // -----------------------------------------------------------------------------------------------

  private onMethod(method: Method): void {
    switch (method._tag) {
      case "connection.close":
        this.socket.write(encodeMethod(0, Methods.connectionCloseOk()))
        return this.fail(new Error(`broker closed the connection: ${method.replyCode} ${method.replyText}`))
      case "channel.close":
        this.socket.write(encodeMethod(CHANNEL, Methods.channelCloseOk()))
        return this.fail(new Error(`broker closed the channel: ${method.replyCode} ${method.replyText}`))
      case "basic.nack":
        return this.fail(new Error(`broker nacked publish ${method.deliveryTag}`))
      case "connection.blocked":
      case "connection.unblocked":
        return
      default: {
        const waiter = this.waiter
        this.waiter = undefined
        waiter?.resolve(method)
      }
    }
  }

  private delivered(): void {
    this.inDelivery = false
    this.onDelivery?.(this.deliveryTag, this.deliverySize)
  }

  private fail(error: Error): void {
    if (this.failure !== undefined) return
    this.failure = this.closing ? new Error("connection closed") : error
    this.waiter?.reject(this.failure)
    this.waiter = undefined
    for (const listener of this.failListeners) listener(this.failure)
  }

  /** The next method that is not a delivery, an ack or a close. */
  private next(): Promise<Method> {
    if (this.failure !== undefined) return Promise.reject(this.failure)
    if (this.waiter !== undefined) return Promise.reject(new Error("raw: one call at a time"))
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject }
    })
  }

  private call(channel: number, method: Method): Promise<Method> {
    const reply = this.next()
    this.socket.write(encodeMethod(channel, method))
    return reply
  }

  /** Runs `body` until it settles, rejecting it when the connection fails first. */
  private guarded<A>(body: (resolve: (a: A) => void, reject: (e: Error) => void) => void): Promise<A> {
    return new Promise<A>((resolve, reject) => {
      if (this.failure !== undefined) return reject(this.failure)
      const onFail = (error: Error) => reject(error)
      this.failListeners.add(onFail)
      const settle = () => {
        this.failListeners.delete(onFail)
        this.onDelivery = undefined
        this.onAck = undefined
        this.onChunkEnd = undefined
      }
      try {
        body((a) => {
          settle()
          resolve(a)
        }, (e) => {
          settle()
          reject(e)
        })
      } catch (error) {
        settle()
        reject(error)
      }
    })
  }

  private drained(): Promise<void> {
    return this.guarded((resolve) => {
      this.socket.once("drain", () => resolve())
    })
  }

  // -----------------------------------------------------------------------------------------------
  // queue management (used by the orchestrator too)
  // -----------------------------------------------------------------------------------------------

  async declareQueue(queue: string, args: FieldTable = {}): Promise<void> {
    await this.call(CHANNEL, Methods.queueDeclare({ queue, arguments: args }))
  }

  async deleteQueue(queue: string): Promise<number> {
    const ok = await this.call(CHANNEL, Methods.queueDelete({ queue }))
    return ok._tag === "queue.delete-ok" ? ok.messageCount : -1
  }

  async messageCount(queue: string): Promise<number> {
    const ok = await this.call(CHANNEL, Methods.queueDeclare({ queue, passive: true }))
    if (ok._tag !== "queue.declare-ok") throw new Error(`expected queue.declare-ok, got ${ok._tag}`)
    return ok.messageCount
  }

  // -----------------------------------------------------------------------------------------------
  // Session
  // -----------------------------------------------------------------------------------------------

  async publish(queue: string, body: Uint8Array, count: number): Promise<void> {
    const message = encodeMessage(CHANNEL, Methods.basicPublish({ routingKey: queue }), body, this.frameMax)
    const copies = copiesFor(message.length)
    const batch = repeat(message, copies)
    let left = count
    while (left > 0) {
      if (this.failure !== undefined) throw this.failure
      const k = Math.min(copies, left)
      left -= k
      if (!this.socket.write(k === copies ? batch : batch.subarray(0, k * message.length))) await this.drained()
    }
  }

  async publishConfirmed(queue: string, body: Uint8Array, count: number, window: number): Promise<void> {
    await this.call(CHANNEL, Methods.confirmSelect())
    const message = encodeMessage(CHANNEL, Methods.basicPublish({ routingKey: queue }), body, this.frameMax)
    const copies = copiesFor(message.length)
    const batch = repeat(message, copies)
    const confirmed = new Uint8Array(count + 1)
    // Delivery tags go on counting across calls on the same channel.
    const base = this.confirmTags
    this.confirmTags += count
    return this.guarded<void>((resolve, reject) => {
      let sent = 0
      let done = 0
      let low = 1
      const pump = () => {
        let room = Math.min(window - (sent - done), count - sent)
        sent += Math.max(room, 0)
        while (room > 0) {
          const k = Math.min(copies, room)
          room -= k
          this.socket.write(k === copies ? batch : batch.subarray(0, k * message.length))
        }
      }
      this.onAck = (channelTag, multiple) => {
        const tag = channelTag - base
        if (tag > sent || tag < 1) return reject(new Error(`ack for ${tag} but only ${sent} sent`))
        if (multiple) {
          for (let i = low; i <= tag; i++) {
            if (confirmed[i] === 0) {
              confirmed[i] = 1
              done++
            }
          }
        } else if (confirmed[tag] === 0) {
          confirmed[tag] = 1
          done++
        }
        while (low <= count && confirmed[low] === 1) low++
        if (done === count) resolve()
        else pump()
      }
      pump()
    })
  }

  async consume(queue: string, count: number, options: ConsumeOptions): Promise<void> {
    await this.call(CHANNEL, Methods.basicQos({ prefetchCount: options.prefetch }))
    const acks: Array<number> = []
    let received = 0
    const finished = this.guarded<void>((resolve, reject) => {
      this.onDelivery = (tag, size) => {
        if (size !== options.bodySize) return reject(new Error(`body of ${size} bytes, expected ${options.bodySize}`))
        received++
        if (received > count) return reject(new Error(`more than ${count} deliveries`))
        if (options.ackEvery === 1 || received % options.ackEvery === 0 || received === count) acks.push(tag)
      }
      this.onChunkEnd = () => {
        if (acks.length > 0) {
          this.socket.write(
            options.ackEvery === 1 ? ackFrames(ACK_ONE, acks) : ackFrames(ACK_MULTIPLE, [acks[acks.length - 1]!])
          )
          acks.length = 0
        }
        if (received === count) resolve()
      }
    })
    const ok = await this.call(CHANNEL, Methods.basicConsume({ queue }))
    await finished
    if (ok._tag !== "basic.consume-ok") throw new Error(`expected basic.consume-ok, got ${ok._tag}`)
    await this.call(CHANNEL, Methods.basicCancel({ consumerTag: ok.consumerTag }))
    check(received === count, `raw consumed ${received} of ${count}`)
  }

  async pingPong(queue: string, body: Uint8Array, count: number): Promise<Array<number>> {
    const message = encodeMessage(CHANNEL, Methods.basicPublish({ routingKey: queue }), body, this.frameMax)
    const times: Array<number> = []
    let sentAt = 0n
    const finished = this.guarded<void>((resolve, reject) => {
      this.onDelivery = (tag, size) => {
        times.push(Number(process.hrtime.bigint() - sentAt))
        if (size !== body.length) return reject(new Error(`body of ${size} bytes, expected ${body.length}`))
        const ack = ackFrames(ACK_ONE, [tag])
        if (times.length === count) {
          this.socket.write(ack)
          return resolve()
        }
        sentAt = process.hrtime.bigint()
        this.socket.write(Buffer.concat([ack, message]))
      }
    })
    const ok = await this.call(CHANNEL, Methods.basicConsume({ queue }))
    if (ok._tag !== "basic.consume-ok") throw new Error(`expected basic.consume-ok, got ${ok._tag}`)
    sentAt = process.hrtime.bigint()
    this.socket.write(message)
    await finished
    await this.call(CHANNEL, Methods.basicCancel({ consumerTag: ok.consumerTag }))
    return times
  }

  async close(): Promise<void> {
    if (this.failure === undefined) {
      await this.call(CHANNEL, Methods.channelClose({ replyCode: 200, classId: 0, methodId: 0 }))
      await this.call(0, Methods.connectionClose({ replyCode: 200, classId: 0, methodId: 0 }))
    }
    this.closing = true
    this.socket.end()
    this.socket.destroy()
  }
}

export const client: BenchClient = {
  name: "raw",
  connect: (target) => RawConnection.open(target)
}
