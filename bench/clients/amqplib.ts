/**
 * amqplib (promise API) behind the bench interface, used as its documentation shows: `publish`
 * until it returns false, then wait for the channel's `drain`; a `ConfirmChannel` with publish
 * callbacks for confirms; `consume` with a callback and `ack(message, allUpTo)`. TCP_NODELAY is
 * turned on, as effect-amqp does by default (amqplib leaves Nagle on: ~40 ms round trips).
 */
import amqplib from "amqplib"
import { type BenchClient, check, deferred, type Session } from "../adapter.ts"

const drained = (channel: amqplib.Channel) => new Promise<void>((resolve) => channel.once("drain", () => resolve()))

const connect = async (target: { readonly url: string; readonly tlsCa?: string }): Promise<Session> => {
  const connection = await amqplib.connect(target.url, {
    noDelay: true,
    ...(target.tlsCa !== undefined ? { ca: [target.tlsCa] } : {})
  })
  const channel = await connection.createChannel()

  return {
    messageCount: async (queue) => (await channel.checkQueue(queue)).messageCount,

    publish: async (queue, body, count) => {
      const content = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
      for (let i = 0; i < count; i++) {
        if (!channel.sendToQueue(queue, content)) await drained(channel)
      }
    },

    publishConfirmed: async (queue, body, count, window) => {
      const confirming = await connection.createConfirmChannel()
      const content = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
      let acked = 0
      await new Promise<void>((resolve, reject) => {
        let sent = 0
        let blocked = false
        const pump = () => {
          while (sent < count && sent - acked < window && !blocked) {
            sent++
            if (!confirming.sendToQueue(queue, content, {}, onConfirm)) {
              blocked = true
              confirming.once("drain", () => {
                blocked = false
                pump()
              })
            }
          }
        }
        const onConfirm = (error: unknown) => {
          if (error !== null && error !== undefined) return reject(new Error(`amqplib publish nacked: ${error}`))
          acked++
          if (acked === count) resolve()
          else pump()
        }
        pump()
      })
      await confirming.close()
      check(acked === count, `amqplib confirmed ${acked} of ${count}`)
    },

    consume: async (queue, count, options) => {
      await channel.prefetch(options.prefetch)
      let received = 0
      const { promise: done, reject, resolve } = deferred()
      const ok = await channel.consume(queue, (message) => {
        if (message === null) return reject(new Error("amqplib consumer cancelled"))
        received++
        if (message.content.length !== options.bodySize) {
          return reject(new Error(`body of ${message.content.length} bytes`))
        }
        if (options.ackEvery === 1) channel.ack(message)
        else if (received % options.ackEvery === 0 || received === count) channel.ack(message, true)
        if (received === count) resolve()
      })
      await done
      await channel.cancel(ok.consumerTag)
      check(received === count, `amqplib consumed ${received} of ${count}`)
    },

    pingPong: async (queue, body, count) => {
      const content = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
      const times: Array<number> = []
      let sentAt = process.hrtime.bigint()
      channel.sendToQueue(queue, content)
      const { promise: done, reject, resolve } = deferred()
      const ok = await channel.consume(queue, (message) => {
        if (message === null) return reject(new Error("amqplib consumer cancelled"))
        times.push(Number(process.hrtime.bigint() - sentAt))
        if (message.content.length !== body.length) return reject(new Error(`body of ${message.content.length}`))
        channel.ack(message)
        if (times.length === count) return resolve()
        sentAt = process.hrtime.bigint()
        channel.sendToQueue(queue, content)
      })
      await done
      await channel.cancel(ok.consumerTag)
      return times
    },

    close: async () => {
      await channel.close()
      await connection.close()
    }
  }
}

export const client: BenchClient = { name: "amqplib", connect }
