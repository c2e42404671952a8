/** Helpers shared by the Redis integration tests: reading streams back, unique names, the usual layers. */
import { Cluster, Redis } from "ioredis"
import { Layer, Tracer } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as RedisConnection from "../src/RedisConnection.ts"

let counter = 0
/** A stream-name prefix no other test uses. */
export const uniquePrefix = (label: string) => `t${process.pid}.${Date.now().toString(36)}.${counter++}.${label}`

export interface Entry {
  readonly id: string
  readonly fields: Readonly<Record<string, string>>
}

/** Every entry of a stream, oldest first, read with XRANGE in pages. */
export const readStream = async (url: string, stream: string): Promise<Array<Entry>> => {
  const client = new Redis(url, { lazyConnect: true })
  await client.connect()
  try {
    return await readWith(client, stream)
  } finally {
    client.disconnect()
  }
}

/** {@link readStream} through a cluster client that follows the slot of `stream`. */
export const readClusterStream = async (
  nodes: ReadonlyArray<{ readonly host: string; readonly port: number }>,
  stream: string
): Promise<Array<Entry>> => {
  const client = new Cluster(
    nodes.map((n) => ({ host: n.host, port: n.port })),
    { lazyConnect: true }
  )
  await client.connect()
  try {
    return await readWith(client, stream)
  } finally {
    client.disconnect()
  }
}

const readWith = async (client: Redis | Cluster, stream: string): Promise<Array<Entry>> => {
  {
    const out: Array<Entry> = []
    let start = "-"
    for (;;) {
      const page = (await client.xrange(stream, start, "+", "COUNT", 5000)) as Array<[string, Array<string>]>
      for (const [id, flat] of page) {
        const fields: Record<string, string> = {}
        for (let i = 0; i < flat.length; i += 2) fields[flat[i]!] = flat[i + 1]!
        out.push({ id, fields })
      }
      if (page.length < 5000) return out
      start = `(${page[page.length - 1]![0]}`
    }
  }
}

/** Runs one command on a short-lived client. */
export const withClient = async <A>(url: string, f: (client: Redis) => Promise<A>): Promise<A> => {
  const client = new Redis(url, { lazyConnect: true })
  await client.connect()
  try {
    return await f(client)
  } finally {
    client.disconnect()
  }
}

/** A connection to `url` and an in-memory checkpoint store. */
export const sinkLayers = (url: string, options: Omit<RedisConnection.Options, "url"> = {}) =>
  Layer.mergeAll(RedisConnection.layer({ url, ...options }), CheckpointStore.layerMemory)

/** An in-memory tracer: keeps every span it makes, in order. */
export const collecting = () => {
  const spans: Array<Tracer.NativeSpan> = []
  const tracer = Tracer.make({
    span(options) {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    }
  })
  return { spans, tracer }
}
