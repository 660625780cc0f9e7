/**
 * rabbitmq-client behind the bench interface, with its low-level `Channel` API (the `Publisher`
 * and `Consumer` helpers add retries and handler bookkeeping on top): `basicPublish` returns a
 * promise (written, or confirmed in confirm mode), so publishes run in a sliding window;
 * `basicConsume` with a callback and `basicAck`. frame_max is set to 131072 like the other clients
 * (its default is 8 KiB) and TCP_NODELAY turned on like effect-amqp's default; automatic
 * reconnection is left on, as it is the library's default.
 */
import { Connection } from "rabbitmq-client"
import { type BenchClient, check, deferred, inWindow, type Session, UNCONFIRMED_WINDOW } from "../adapter.ts"

const connect = async (target: { readonly url: string; readonly tlsCa?: string }): Promise<Session> => {
  const connection = new Connection({
    url: target.url,
    frameMax: 131072,
    noDelay: true,
    ...(target.tlsCa !== undefined ? { tls: { ca: target.tlsCa } } : {})
  })
  connection.on("error", (error) => {
    process.stderr.write(`rabbitmq-client: ${String(error)}\n`)
  })
  await connection.onConnect()
  const channel = await connection.acquire()

  return {
    messageCount: async (queue) => (await channel.queueDeclare({ queue, passive: true })).messageCount,

    publish: async (queue, body, count) => {
      const content = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
      await inWindow(count, UNCONFIRMED_WINDOW, () => channel.basicPublish({ routingKey: queue }, content))
    },

    publishConfirmed: async (queue, body, count, window) => {
      const content = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
      const confirming = await connection.acquire()
      await confirming.confirmSelect()
      const acked = await inWindow(count, window, () => confirming.basicPublish({ routingKey: queue }, content))
      await confirming.close()
      check(acked === count, `rabbitmq-client confirmed ${acked} of ${count}`)
    },

    consume: async (queue, count, options) => {
      await channel.basicQos({ prefetchCount: options.prefetch })
      let received = 0
      const { promise: done, reject, resolve } = deferred()
      const ok = await channel.basicConsume({ queue }, (message) => {
        received++
        const size = Buffer.isBuffer(message.body) ? message.body.length : -1
        if (size !== options.bodySize) return reject(new Error(`body of ${size} bytes`))
        if (options.ackEvery === 1) channel.basicAck({ deliveryTag: message.deliveryTag })
        else if (received % options.ackEvery === 0 || received === count) {
          channel.basicAck({ deliveryTag: message.deliveryTag, multiple: true })
        }
        if (received === count) resolve()
      })
      await done
      await channel.basicCancel(ok.consumerTag)
      check(received === count, `rabbitmq-client consumed ${received} of ${count}`)
    },

    pingPong: async (queue, body, count) => {
      const content = Buffer.from(body.buffer, body.byteOffset, body.byteLength)
      const times: Array<number> = []
      let sentAt = process.hrtime.bigint()
      await channel.basicPublish({ routingKey: queue }, content)
      const { promise: done, reject, resolve } = deferred()
      const ok = await channel.basicConsume({ queue }, (message) => {
        times.push(Number(process.hrtime.bigint() - sentAt))
        const size = Buffer.isBuffer(message.body) ? message.body.length : -1
        if (size !== body.length) return reject(new Error(`body of ${size} bytes`))
        channel.basicAck({ deliveryTag: message.deliveryTag })
        if (times.length === count) return resolve()
        sentAt = process.hrtime.bigint()
        channel.basicPublish({ routingKey: queue }, content).catch(reject)
      })
      await done
      await channel.basicCancel(ok.consumerTag)
      return times
    },

    close: async () => {
      await channel.close()
      await connection.close()
    }
  }
}

export const client: BenchClient = { name: "rabbitmq-client", connect }
