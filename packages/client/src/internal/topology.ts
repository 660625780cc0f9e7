/**
 * The topology a client declared, recorded as it is declared and forgotten as it is deleted, so
 * that recovery can declare it again in dependency order: exchanges, queues, exchange-to-exchange
 * bindings, queue bindings. A server-named queue gets a new name on recovery; `rename` makes every
 * binding follow it.
 */
import { encodeTable, type FieldTable, type FieldValue, type Method } from "@effect-amqp/protocol"
import type { ExchangeDeclareOptions, QueueDeclareOptions } from "../AmqpChannel.ts"

export interface RecordedExchange {
  readonly name: string
  readonly type: string
  readonly options: ExchangeDeclareOptions
}

export interface RecordedQueue {
  name: string
  readonly serverNamed: boolean
  readonly options: QueueDeclareOptions
}

export interface RecordedBinding {
  readonly kind: "queue" | "exchange"
  destination: string
  readonly source: string
  readonly routingKey: string
  readonly arguments: FieldTable
}

/**
 * A binding's arguments as the broker tells them apart: encoded, with the keys in order, so that
 * `{ a, b }` and `{ b, a }` are one binding and a 64-bit value compares by its bytes.
 */
const argumentsKey = (table: FieldTable): string => {
  const sorted: Record<string, FieldValue> = Object.create(null)
  for (const key of Object.keys(table).toSorted()) sorted[key] = table[key] as FieldValue
  return Buffer.from(encodeTable(sorted)).toString("latin1")
}

const sameBinding = (a: RecordedBinding, b: RecordedBinding) =>
  a.kind === b.kind && a.destination === b.destination && a.source === b.source && a.routingKey === b.routingKey &&
  argumentsKey(a.arguments) === argumentsKey(b.arguments)

export class Topology {
  readonly exchanges = new Map<string, RecordedExchange>()
  readonly queues = new Map<string, RecordedQueue>()
  bindings: Array<RecordedBinding> = []

  exchangeDeclared(exchange: RecordedExchange): void {
    if (exchange.options.passive === true || exchange.name === "" || exchange.name.startsWith("amq.")) return
    this.exchanges.set(exchange.name, exchange)
  }

  exchangeDeleted(name: string): void {
    this.exchanges.delete(name)
    this.forgetBindings((b) => b.source === name || (b.kind === "exchange" && b.destination === name))
  }

  queueDeclared(queue: RecordedQueue): void {
    if (queue.options.passive === true) return
    this.queues.set(queue.name, queue)
  }

  queueDeleted(name: string): void {
    this.queues.delete(name)
    this.forgetBindings((b) => b.kind === "queue" && b.destination === name)
  }

  bound(binding: RecordedBinding): void {
    if (!this.bindings.some((b) => sameBinding(b, binding))) this.bindings.push(binding)
  }

  unbound(binding: RecordedBinding): void {
    this.forgetBindings((b) => sameBinding(b, binding))
  }

  /**
   * Forgets the bindings `gone` picks. RabbitMQ deletes an auto-delete exchange once the last
   * binding from it goes: such an exchange is forgotten too, or recovery would bring it back.
   */
  private forgetBindings(gone: (binding: RecordedBinding) => boolean): void {
    const sources = new Set<string>()
    this.bindings = this.bindings.filter((b) => {
      if (!gone(b)) return true
      sources.add(b.source)
      return false
    })
    for (const source of sources) {
      const autoDelete = this.exchanges.get(source)?.options.autoDelete === true
      if (autoDelete && !this.bindings.some((b) => b.source === source)) this.exchangeDeleted(source)
    }
  }

  /**
   * Records what `request` declared or deleted, once the broker has answered it with `reply`:
   * as the reply arrives, so that a caller who stopped waiting leaves no stale record behind.
   */
  answered(request: Method, reply: Method): void {
    switch (request._tag) {
      case "exchange.declare":
        return this.exchangeDeclared({
          name: request.exchange,
          type: request.type,
          options: {
            passive: request.passive,
            durable: request.durable,
            autoDelete: request.autoDelete,
            internal: request.internal,
            arguments: request.arguments
          }
        })
      case "exchange.delete":
        return this.exchangeDeleted(request.exchange)
      case "exchange.bind":
      case "exchange.unbind":
      case "queue.bind":
      case "queue.unbind": {
        const binding: RecordedBinding = {
          kind: request._tag.startsWith("queue") ? "queue" : "exchange",
          destination: "queue" in request ? request.queue : request.destination,
          source: "exchange" in request ? request.exchange : request.source,
          routingKey: request.routingKey,
          arguments: request.arguments
        }
        return request._tag.endsWith(".bind") ? this.bound(binding) : this.unbound(binding)
      }
      case "queue.declare":
        if (reply._tag !== "queue.declare-ok") return
        return this.queueDeclared({
          name: reply.queue,
          serverNamed: request.queue === "",
          options: {
            passive: request.passive,
            durable: request.durable,
            exclusive: request.exclusive,
            autoDelete: request.autoDelete,
            arguments: request.arguments
          }
        })
      case "queue.delete":
        return this.queueDeleted(request.queue)
    }
  }

  /** A server-named queue came back under a new name. */
  rename(from: string, to: string): void {
    const queue = this.queues.get(from)
    if (queue === undefined) return
    this.queues.delete(from)
    queue.name = to
    this.queues.set(to, queue)
    for (const binding of this.bindings) {
      if (binding.kind === "queue" && binding.destination === from) binding.destination = to
    }
  }
}
