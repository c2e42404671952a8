/**
 * Commands whose arguments are let go of as soon as they are answered.
 *
 * ioredis keeps a command object reachable for a while after it has settled, and the command holds the arguments it
 * was sent with: for the sink, a whole write's encoded events, which then outlive V8's young-generation collections
 * and are promoted to the old generation. Emptying the arguments once the reply is in lets them die young
 * (bench/RESULTS.md, "What the outage RSS is made of", has the measurements).
 */
import * as Net from "node:net"
import { Command } from "ioredis"
import type { Client } from "../RedisConnection.ts"

export type Reply = [Error | null, unknown]

/**
 * Arguments already in RESP bytes (`$<length>\r\n<value>\r\n` each), encoded once when an entry is prepared: a
 * write sends them as they are, however often it is retried. ioredis would otherwise re-encode every string argument
 * on every write (with Buffer arguments it copies them twice more, into the command and again into the pipeline).
 */
export class Framed {
  /** `count` arguments, framed, in `parts` (one part per entry). */
  readonly parts: ReadonlyArray<Buffer>
  readonly count: number
  constructor(parts: ReadonlyArray<Buffer>, count: number) {
    this.parts = parts
    this.count = count
  }
}

export type Arg = string | number | Framed

const CRLF = "\r\n"

/** Frames `values` as RESP bulk strings into one buffer (allocated from Node's pool when small). */
export const frame = (values: ReadonlyArray<string>, lengths: ReadonlyArray<number>): Buffer => {
  let total = 0
  for (let i = 0; i < values.length; i++) {
    const n = lengths[i]!
    total += n + String(n).length + 5
  }
  const out = Buffer.allocUnsafe(total)
  let at = 0
  for (let i = 0; i < values.length; i++) {
    at += out.write(`$${lengths[i]!}${CRLF}`, at, "latin1")
    at += out.write(values[i]!, at, "utf8")
    at += out.write(CRLF, at, "latin1")
  }
  return out
}

/** Frames `values` as RESP bulk strings into one buffer, measuring their UTF-8 lengths. */
export const frameValues = (values: ReadonlyArray<string>): Buffer => {
  const lengths = new Array<number>(values.length)
  for (let i = 0; i < values.length; i++) lengths[i] = Buffer.byteLength(values[i]!)
  return frame(values, lengths)
}

/** Entries are framed into slices of slabs this large (a slab is let go of once no slice of it is alive). */
const SLAB_BYTES = 64 * 1024
let slab = Buffer.allocUnsafe(0)
let slabAt = 0

const digitsOf = (n: number): number =>
  n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10_000 ? 4 : n < 100_000 ? 5 : String(n).length

/**
 * {@link frameValues} in one pass over each value: every value is written as UTF-8 straight into a slice of a shared
 * slab (room for its worst case, 3 bytes per UTF-16 unit, is made first), its header written before it once its
 * length is known. The header's width is guessed from the value's length in UTF-16 units, right for ASCII; when the
 * UTF-8 length has more digits, the value is moved up to make room. Measuring each value first (`Buffer.byteLength`)
 * and writing headers through strings cost more than the writing itself: 2.7 µs an entry of 1.5 KB against 0.75 to
 * 1.05 µs here (bench/RESULTS.md, "Issue 16: framing in one pass"). Values too large for a slab take the measuring
 * path.
 */
export const frameEntry = (values: ReadonlyArray<string>): Buffer => {
  let bound = 0
  for (let i = 0; i < values.length; i++) bound += 3 * values[i]!.length + 16
  if (bound > SLAB_BYTES / 4) return frameValues(values)
  if (slab.length - slabAt < bound) {
    slab = Buffer.allocUnsafe(SLAB_BYTES)
    slabAt = 0
  }
  const out = slab
  const start = slabAt
  let at = start
  for (let i = 0; i < values.length; i++) {
    const value = values[i]!
    const guess = digitsOf(value.length)
    const dataAt = at + guess + 3
    const n = value.length === 0 ? 0 : out.write(value, dataAt, "utf8")
    const digits = n === value.length ? guess : digitsOf(n)
    if (digits !== guess) out.copyWithin(at + digits + 3, dataAt, dataAt + n)
    out[at] = 36 // $
    for (let d = digits, rest = n; d > 0; d--, rest = Math.floor(rest / 10)) out[at + d] = 48 + (rest % 10)
    out[at + digits + 1] = 13
    out[at + digits + 2] = 10
    at += digits + 3 + n
    out[at++] = 13
    out[at++] = 10
  }
  slabAt = at
  return out.subarray(start, at)
}

/**
 * A command with {@link Framed} arguments: written as one buffer, the framed parts copied in as they are and the
 * other arguments encoded once.
 */
class FramedCommand extends Command {
  /** ioredis turns every argument that is not a string or a Buffer into a string when the command is made. */
  override stringifyArguments(): void {
    const args = this.args as Array<unknown>
    for (let i = 0; i < args.length; i++) if (!(args[i] instanceof Framed)) args[i] = String(args[i])
  }

  /**
   * On a socket, the parts are written as they are, corked so that Node hands them to the kernel in one `writev`:
   * ioredis writes what this returns right after (see its `Redis.sendCommand`), and nothing else is written in
   * between. Into anything else they are copied into one buffer. Never queued in an ioredis pipeline, which passes the
   * socket here while it collects the bytes for a later write ({@link pipeline} sends such commands one by one).
   */
  override toWritable(socket?: unknown): Buffer {
    let count = 0
    for (const a of this.args as Array<unknown>) count += a instanceof Framed ? a.count : 1
    const parts: Array<Buffer> = []
    let text = `*${count + 1}${CRLF}$${this.name.length}${CRLF}${this.name}${CRLF}`
    for (const a of this.args as Array<unknown>) {
      if (a instanceof Framed) {
        parts.push(Buffer.from(text, "utf8"))
        text = ""
        for (const part of a.parts) parts.push(part)
      } else {
        const s = String(a)
        text += `$${Buffer.byteLength(s)}${CRLF}${s}${CRLF}`
      }
    }
    if (text !== "") parts.push(Buffer.from(text, "utf8"))
    if (!(socket instanceof Net.Socket) || parts.length === 1) return Buffer.concat(parts)
    socket.cork()
    for (let i = 0; i < parts.length - 1; i++) socket.write(parts[i]!)
    process.nextTick(uncork, socket)
    return parts[parts.length - 1]!
  }
}

const uncork = (socket: Net.Socket) => socket.uncork()

/**
 * A command with string replies, as ioredis's own `client.<command>(…)` methods make it. It takes `args` over: the
 * command keeps a copy, and `args` is emptied.
 */
export const make = (name: string, args: Array<Arg>): Command => {
  const command = args.some((a) => a instanceof Framed)
    ? new FramedCommand(name, args as Array<string>, { replyEncoding: "utf8" })
    : new Command(name, args as Array<string | number>, { replyEncoding: "utf8" })
  args.length = 0
  return command
}

/** Drops the command's arguments: the encoded events it carried can then be collected young. */
export const release = (command: Command): void => {
  command.args = []
}

/** Sends one command; its arguments are released once it settles. */
export const send = (client: Client, command: Command): Promise<unknown> =>
  (client.sendCommand(command) as Promise<unknown>).then(
    (reply) => {
      release(command)
      return reply
    },
    (error: unknown) => {
      release(command)
      throw error
    }
  )

/**
 * Sends the commands in one round trip; their arguments are released once it settles. When any
 * command has {@link Framed} arguments they are all sent one by one in the same tick (they reach the socket back to
 * back, so still in one round trip): an ioredis pipeline would copy their bytes into one more buffer, and a framed
 * command writes its parts to the socket itself.
 */
export const pipeline = async (client: Client, commands: ReadonlyArray<Command>): Promise<Array<Reply>> => {
  if (commands.length === 1 || commands.some((c) => c instanceof FramedCommand)) {
    return Promise.all(
      commands.map((command) =>
        send(client, command).then(
          (r): Reply => [null, r],
          (e: Error): Reply => [e, null]
        )
      )
    )
  }
  // A pipeline is a Commander: `sendCommand` queues a command made here, as its own `evalsha(…)` would.
  const p = client.pipeline() as unknown as { sendCommand(c: Command): void; exec(): Promise<Array<Reply> | null> }
  for (const command of commands) p.sendCommand(command)
  try {
    return (await p.exec()) ?? []
  } finally {
    for (const command of commands) release(command)
  }
}
