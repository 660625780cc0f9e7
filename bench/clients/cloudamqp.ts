/**
 * @cloudamqp/amqp-client behind the bench interface, with its low-level `AMQPClient` API: every
 * `basicPublish` returns a promise (written, or confirmed in confirm mode), so publishes run in a
 * sliding window; `basicConsume` with a callback and `message.ack(multiple)`. frame_max is set to
 * 131072 like the other clients (its default is 8 KiB) and TCP_NODELAY turned on like
 * effect-amqp's default.
 */
import { AMQPClient } from "@cloudamqp/amqp-client"
import { type BenchClient, check, deferred, inWindow, type Session, UNCONFIRMED_WINDOW, withQuery } from "../adapter.ts"

const connect = async (target: { readonly url: string; readonly tlsCa?: string }): Promise<Session> => {
  const connection = new AMQPClient(
    withQuery(target.url, "frameMax", "131072"),
    target.tlsCa !== undefined ? { ca: target.tlsCa } : undefined
  )
  await connection.connect()
  connection.socket?.setNoDelay(true)
  const channel = await connection.channel()

  return {
    messageCount: async (queue) => (await channel.queueDeclare(queue, { passive: true })).messageCount,

    publish: async (queue, body, count) => {
      await inWindow(count, UNCONFIRMED_WINDOW, () => channel.basicPublish("", queue, body))
    },

    publishConfirmed: async (queue, body, count, window) => {
      const confirming = await connection.channel()
      await confirming.confirmSelect()
      const acked = await inWindow(count, window, () => confirming.basicPublish("", queue, body))
      await confirming.close()
      check(acked === count, `cloudamqp confirmed ${acked} of ${count}`)
    },

    consume: async (queue, count, options) => {
      await channel.prefetch(options.prefetch)
      let received = 0
      const { promise: done, reject, resolve } = deferred()
      const consumer = await channel.basicConsume(queue, { noAck: false }, (message) => {
        received++
        if (message.bodySize !== options.bodySize) return reject(new Error(`body of ${message.bodySize} bytes`))
        if (options.ackEvery === 1) message.ack().catch(reject)
        else if (received % options.ackEvery === 0 || received === count) message.ack(true).catch(reject)
        if (received === count) resolve()
      })
      await done
      await consumer.cancel()
      check(received === count, `cloudamqp consumed ${received} of ${count}`)
    },

    pingPong: async (queue, body, count) => {
      const times: Array<number> = []
      let sentAt = process.hrtime.bigint()
      await channel.basicPublish("", queue, body)
      const { promise: done, reject, resolve } = deferred()
      const consumer = await channel.basicConsume(queue, { noAck: false }, (message) => {
        times.push(Number(process.hrtime.bigint() - sentAt))
        if (message.bodySize !== body.length) return reject(new Error(`body of ${message.bodySize} bytes`))
        message.ack().catch(reject)
        if (times.length === count) return resolve()
        sentAt = process.hrtime.bigint()
        channel.basicPublish("", queue, body).catch(reject)
      })
      await done
      await consumer.cancel()
      return times
    },

    close: async () => {
      await channel.close()
      await connection.close()
    }
  }
}

export const client: BenchClient = { name: "@cloudamqp/amqp-client", connect }
