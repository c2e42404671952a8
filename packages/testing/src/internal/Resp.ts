/**
 * A minimal RESP2 client for driving test servers: readiness probes, INFO, CLUSTER and SENTINEL commands.
 *
 * Not ioredis on purpose: a probe must not reconnect, queue offline, send HELLO 3 or run a ready check, and it
 * must hand back error replies (MOVED, ASK, NOAUTH) as values rather than throw them.
 *
 * @internal
 */
import * as Net from "node:net"

/** An error reply (`-ERR …`, `-MOVED …`) as a value. */
export class ReplyError {
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
  toString(): string {
    return this.message
  }
}

export type Reply = string | number | null | ReplyError | ReadonlyArray<Reply>

export interface Address {
  readonly host: string
  readonly port: number
}

export interface Connection {
  readonly send: (args: ReadonlyArray<string | number>) => Promise<Reply>
  readonly close: () => void
}

export interface ConnectOptions {
  /** Bounds connect and every reply; a paused server would otherwise hang the probe forever. */
  readonly timeoutMs?: number | undefined
  readonly password?: string | undefined
}

const CRLF = "\r\n"

export const encode = (args: ReadonlyArray<string | number>): Buffer => {
  const parts: Array<Buffer> = [Buffer.from(`*${args.length}${CRLF}`)]
  for (const arg of args) {
    const bytes = Buffer.from(String(arg))
    parts.push(Buffer.from(`$${bytes.length}${CRLF}`), bytes, Buffer.from(CRLF))
  }
  return Buffer.concat(parts)
}

/** Parses one reply at `offset`; `undefined` when the buffer does not hold a whole reply yet. */
export const parse = (buffer: Buffer, offset: number): readonly [Reply, number] | undefined => {
  const lineEnd = buffer.indexOf(CRLF, offset)
  if (lineEnd < 0) return undefined
  const type = String.fromCharCode(buffer[offset] ?? 0)
  const line = buffer.toString("utf8", offset + 1, lineEnd)
  const next = lineEnd + 2
  switch (type) {
    case "+":
      return [line, next]
    case "-":
      return [new ReplyError(line), next]
    case ":":
      return [Number(line), next]
    case "$": {
      const length = Number(line)
      if (length < 0) return [null, next]
      if (buffer.length < next + length + 2) return undefined
      return [buffer.toString("utf8", next, next + length), next + length + 2]
    }
    case "*": {
      const count = Number(line)
      if (count < 0) return [null, next]
      const items: Array<Reply> = []
      let position = next
      for (let i = 0; i < count; i++) {
        const item = parse(buffer, position)
        if (item === undefined) return undefined
        items.push(item[0])
        position = item[1]
      }
      return [items, position]
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`)
  }
}

/** Opens one connection; replies are matched to commands in order. */
export const connect = (address: Address, options: ConnectOptions = {}): Promise<Connection> =>
  new Promise((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? 2_000
    const socket = Net.connect({ host: address.host, port: address.port })
    const waiting: Array<{ resolve: (reply: Reply) => void; reject: (error: Error) => void }> = []
    let buffer = Buffer.alloc(0)
    let failure: Error | undefined
    let connected = false

    const fail = (error: Error) => {
      if (failure !== undefined) return
      failure = error
      socket.destroy()
      for (const w of waiting.splice(0)) w.reject(error)
      if (!connected) reject(error)
    }

    socket.setNoDelay(true)
    socket.setTimeout(timeoutMs, () =>
      fail(new Error(`no reply from ${address.host}:${address.port} within ${timeoutMs} ms`))
    )
    socket.on("error", fail)
    socket.on("close", () => fail(new Error(`connection to ${address.host}:${address.port} closed`)))
    socket.on("data", (chunk) => {
      buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk])
      let offset = 0
      for (;;) {
        let parsed: readonly [Reply, number] | undefined
        try {
          parsed = parse(buffer, offset)
        } catch (error) {
          return fail(error instanceof Error ? error : new Error(String(error)))
        }
        if (parsed === undefined) break
        offset = parsed[1]
        waiting.shift()?.resolve(parsed[0])
      }
      buffer = buffer.subarray(offset)
      // Idle connections must not time out between commands.
      if (waiting.length === 0) socket.setTimeout(0)
    })

    const send = (args: ReadonlyArray<string | number>): Promise<Reply> =>
      new Promise<Reply>((res, rej) => {
        if (failure !== undefined) return rej(failure)
        waiting.push({ resolve: res, reject: rej })
        socket.setTimeout(timeoutMs)
        socket.write(encode(args))
      })

    const close = () => {
      failure ??= new Error("connection closed by the caller")
      socket.destroy()
    }

    socket.once("connect", () => {
      connected = true
      socket.setTimeout(0)
      const connection: Connection = { send, close }
      if (options.password === undefined) return resolve(connection)
      send(["AUTH", options.password]).then((reply) => {
        if (reply instanceof ReplyError) {
          close()
          reject(new Error(`AUTH failed on ${address.host}:${address.port}: ${reply.message}`))
        } else {
          resolve(connection)
        }
      }, reject)
    })
  })

/** Sends one command on a fresh connection and closes it. */
export const command = async (
  address: Address,
  args: ReadonlyArray<string | number>,
  options: ConnectOptions = {}
): Promise<Reply> => {
  const connection = await connect(address, options)
  try {
    return await connection.send(args)
  } finally {
    connection.close()
  }
}

/** Parses `INFO` text into a field map. */
export const parseInfo = (text: string): ReadonlyMap<string, string> => {
  const fields = new Map<string, string>()
  for (const line of text.split(/\r?\n/)) {
    if (line === "" || line.startsWith("#")) continue
    const colon = line.indexOf(":")
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1))
  }
  return fields
}

/** Turns a flat `[field, value, …]` reply (SENTINEL MASTER) into a map. */
export const pairs = (reply: Reply): ReadonlyMap<string, string> => {
  const fields = new Map<string, string>()
  if (!Array.isArray(reply)) return fields
  for (let i = 0; i + 1 < reply.length; i += 2) fields.set(String(reply[i]), String(reply[i + 1]))
  return fields
}
