/**
 * A TCP proxy in the test process, between a client and a server on 127.0.0.1, that makes network faults for real.
 *
 * | mode          | open connections                                  | new connections                           |
 * |---------------|---------------------------------------------------|-------------------------------------------|
 * | `pass`        | bytes flow both ways                              | accepted, connected upstream              |
 * | `blackhole`   | bytes held both ways, released in order on heal   | accepted, held, connected upstream on heal |
 * | `dropReplies` | client → server flows, server → client discarded  | accepted                                  |
 * | `refuse`      | untouched (bytes flow)                            | reset at once (ECONNRESET)                |
 *
 * Real TCP never drops bytes silently, so `blackhole` holds them rather than dropping them (a partition that heals
 * delivers late, it does not lose). `dropReplies` does lose them: a connection that lost a reply is out of step
 * with its client's command queue, so `heal()` resets it (RST) rather than let a reply be matched to the wrong
 * command. `resetAll()` destroys every open connection with RST.
 *
 * Mode changes are synchronous and take effect at once.
 *
 * @example
 * ```ts
 * const proxy = yield* ChaosProxy.make({ target: server })
 * const client = new Redis(proxy.url)
 * proxy.blackhole()
 * const reply = client.ping() // held
 * proxy.heal() // reply === "PONG"
 * ```
 *
 * @since 0.1.0
 */
import * as Net from "node:net"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import { ChaosProxyFailed } from "./TestingError.ts"

/**
 * What the proxy does to connections: `pass`, `blackhole`, `dropReplies` or `refuse` (the module comment's table
 * says how each treats open and new connections).
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "pass" | "blackhole" | "dropReplies" | "refuse"

/**
 * The server a proxy forwards to.
 *
 * @since 0.1.0
 * @category models
 */
export interface Target {
  readonly host: string
  readonly port: number
}

/**
 * Options of {@link make} and {@link start}: the server to proxy to, the port, the initial mode, and how much is held
 * per connection.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** The server to proxy to: an address or a `redis://host:port` URL. */
  readonly target: Target | string
  /** Port to listen on. Default: a free one from the OS. */
  readonly port?: number | undefined
  /** Initial mode. Default `pass`. */
  readonly mode?: Mode | undefined
  /**
   * Bytes held per connection and direction before the proxy stops reading from the sender (TCP backpressure then
   * does the rest, as on a real partition). Default 16 MiB.
   */
  readonly holdLimitBytes?: number | undefined
}

/**
 * What a proxy has done so far: connections open, accepted, refused and reset, and the bytes delivered, held and
 * dropped.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Connections open now. */
  readonly connections: number
  readonly accepted: number
  /** New connections reset in `refuse` mode. */
  readonly refused: number
  /** Connections reset by `resetAll()` or by `heal()` after lost replies. */
  readonly reset: number
  /** Bytes delivered to the server. */
  readonly bytesToServer: number
  /** Bytes delivered to the client. */
  readonly bytesToClient: number
  /** Bytes held now (blackhole, or waiting for the upstream connect). */
  readonly heldBytes: number
  /** Server → client bytes discarded in `dropReplies` mode. */
  readonly droppedBytes: number
}

/**
 * A running proxy: where it listens, its mode and the methods that change it, its statistics, and `close`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChaosProxy {
  readonly host: string
  readonly port: number
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
  readonly target: Target
  readonly mode: Mode
  readonly setMode: (mode: Mode) => void
  readonly blackhole: () => void
  readonly dropReplies: () => void
  readonly refuse: () => void
  /** Back to `pass`: held bytes go out in order, connections that lost replies are reset. */
  readonly heal: () => void
  /** Destroys every open connection with RST on both sides; returns how many. */
  readonly resetAll: () => number
  /** Connections open now. */
  readonly connectionCount: number
  readonly stats: () => Stats
  readonly close: () => Promise<void>
}

type Policy = "flow" | "hold" | "drop"

interface Direction {
  readonly queue: Array<Buffer>
  queued: number
  /** A FIN from the sender, to pass on after the queued bytes. */
  ended: boolean
  paused: boolean
}

interface Link {
  readonly client: Net.Socket
  upstream: Net.Socket | undefined
  upstreamReady: boolean
  readonly toServer: Direction
  readonly toClient: Direction
  lostReplies: boolean
  closed: boolean
}

const toTarget = (target: Target | string): Target => {
  if (typeof target !== "string") return { host: target.host, port: target.port }
  const url = new URL(target)
  return { host: url.hostname, port: url.port === "" ? 6379 : Number(url.port) }
}

const direction = (): Direction => ({ queue: [], queued: 0, ended: false, paused: false })

const listen = (server: Net.Server, port: number): Promise<number> =>
  new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen({ host: "127.0.0.1", port }, () => {
      server.off("error", reject)
      const address = server.address()
      resolve(typeof address === "object" && address !== null ? address.port : port)
    })
  })

const open = async (options: Options): Promise<ChaosProxy> => {
  const target = toTarget(options.target)
  const holdLimit = options.holdLimitBytes ?? 16 * 1024 * 1024
  const links = new Set<Link>()
  let mode: Mode = options.mode ?? "pass"
  const counters = { accepted: 0, refused: 0, reset: 0, bytesToServer: 0, bytesToClient: 0, droppedBytes: 0 }

  const toServerPolicy = (): Policy => (mode === "blackhole" ? "hold" : "flow")
  const toClientPolicy = (): Policy => (mode === "blackhole" ? "hold" : mode === "dropReplies" ? "drop" : "flow")

  const resetLink = (link: Link) => {
    if (link.closed) return
    link.closed = true
    links.delete(link)
    counters.reset++
    link.client.resetAndDestroy()
    link.upstream?.resetAndDestroy()
  }

  const closeLink = (link: Link) => {
    if (link.closed) return
    link.closed = true
    links.delete(link)
    link.client.destroy()
    link.upstream?.destroy()
  }

  /** Applies the current policy to what a direction holds. */
  const flush = (
    link: Link,
    dir: Direction,
    policy: Policy,
    from: Net.Socket | undefined,
    to: Net.Socket | undefined
  ) => {
    if (link.closed) return
    if (policy === "hold" || (policy === "flow" && to === undefined)) {
      if (!dir.paused && dir.queued > holdLimit && from !== undefined) {
        dir.paused = true
        from.pause()
      }
      return
    }
    const chunks = dir.queue.splice(0)
    const bytes = dir.queued
    dir.queued = 0
    if (policy === "drop") {
      counters.droppedBytes += bytes
      if (bytes > 0 && dir === link.toClient) link.lostReplies = true
    } else if (to !== undefined) {
      for (const chunk of chunks) to.write(chunk)
      if (dir === link.toServer) counters.bytesToServer += bytes
      else counters.bytesToClient += bytes
    }
    if (dir.ended) {
      dir.ended = false
      to?.end()
    }
    if (dir.paused && from !== undefined) {
      dir.paused = false
      from.resume()
    }
  }

  const flushToServer = (link: Link) =>
    flush(link, link.toServer, toServerPolicy(), link.client, link.upstreamReady ? link.upstream : undefined)
  const flushToClient = (link: Link) => flush(link, link.toClient, toClientPolicy(), link.upstream, link.client)

  const connectUpstream = (link: Link) => {
    const upstream = Net.connect({ host: target.host, port: target.port, allowHalfOpen: true })
    link.upstream = upstream
    upstream.setNoDelay(true)
    upstream.once("connect", () => {
      link.upstreamReady = true
      flushToServer(link)
    })
    upstream.on("data", (chunk: Buffer) => {
      link.toClient.queue.push(chunk)
      link.toClient.queued += chunk.length
      flushToClient(link)
    })
    upstream.on("end", () => {
      link.toClient.ended = true
      flushToClient(link)
    })
    // The server went away (or refused): the client sees its connection reset, as it would without the proxy.
    upstream.on("error", () => resetLink(link))
    upstream.on("close", () => {
      if (link.toClient.queued === 0) closeLink(link)
    })
  }

  const server = Net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (client) => {
    if (mode === "refuse") {
      counters.refused++
      client.resetAndDestroy()
      return
    }
    counters.accepted++
    client.setNoDelay(true)
    const link: Link = {
      client,
      upstream: undefined,
      upstreamReady: false,
      toServer: direction(),
      toClient: direction(),
      lostReplies: false,
      closed: false
    }
    links.add(link)
    client.on("data", (chunk: Buffer) => {
      link.toServer.queue.push(chunk)
      link.toServer.queued += chunk.length
      flushToServer(link)
    })
    client.on("end", () => {
      link.toServer.ended = true
      flushToServer(link)
    })
    client.on("error", () => resetLink(link))
    client.on("close", () => {
      if (link.toServer.queued === 0) closeLink(link)
    })
    // A partitioned server cannot be reached: the upstream connect waits for the heal too.
    if (toServerPolicy() === "flow") connectUpstream(link)
  })

  const port = await listen(server, options.port ?? 0)

  const setMode = (next: Mode) => {
    mode = next
    for (const link of [...links]) {
      if (link.lostReplies && toClientPolicy() === "flow") {
        resetLink(link)
        continue
      }
      if (link.upstream === undefined && toServerPolicy() === "flow") connectUpstream(link)
      flushToServer(link)
      flushToClient(link)
    }
  }

  const resetAll = () => {
    const open = [...links]
    for (const link of open) resetLink(link)
    return open.length
  }

  const stats = (): Stats => {
    let heldBytes = 0
    for (const link of links) heldBytes += link.toServer.queued + link.toClient.queued
    return { connections: links.size, heldBytes, ...counters }
  }

  const close = () =>
    new Promise<void>((resolve) => {
      for (const link of [...links]) closeLink(link)
      server.close(() => resolve())
    })

  return {
    host: "127.0.0.1",
    port,
    url: `redis://127.0.0.1:${port}`,
    target,
    get mode() {
      return mode
    },
    setMode,
    blackhole: () => setMode("blackhole"),
    dropReplies: () => setMode("dropReplies"),
    refuse: () => setMode("refuse"),
    heal: () => setMode("pass"),
    resetAll,
    get connectionCount() {
      return links.size
    },
    stats,
    close
  }
}

/**
 * A proxy for the current scope, listening on 127.0.0.1 (a free port unless `port` is given); closed, with every
 * connection destroyed, when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<ChaosProxy, ChaosProxyFailed, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => open(options),
      catch: (cause) =>
        new ChaosProxyFailed({
          cause,
          message: `the chaos proxy could not listen: ${cause instanceof Error ? cause.message : String(cause)}`
        })
    }),
    (proxy) => Effect.promise(() => proxy.close())
  )

/**
 * {@link make} outside Effect; call `close()` when done.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = (options: Options): Promise<ChaosProxy> => open(options)
