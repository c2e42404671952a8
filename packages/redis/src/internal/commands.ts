/**
 * Commands whose arguments are let go of as soon as they are answered.
 *
 * ioredis keeps a command object reachable for a while after it has settled, and the command holds the arguments it
 * was sent with: for the sink, a whole write's encoded events, which then outlive V8's young-generation collections
 * and are promoted to the old generation. Emptying the arguments once the reply is in lets them die young
 * (bench/RESULTS.md, "What the outage RSS is made of", has the measurements).
 */
import { Command } from "ioredis"
import type { Client } from "../RedisConnection.ts"

export type Reply = [Error | null, unknown]

/**
 * A command with string replies, as ioredis's own `client.<command>(…)` methods make it. It takes `args` over: the
 * command keeps a copy, and `args` is emptied.
 */
export const make = (name: string, args: Array<string | number>): Command => {
  const command = new Command(name, args, { replyEncoding: "utf8" })
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

/** Sends the commands in one pipeline (one round trip); their arguments are released once it settles. */
export const pipeline = async (client: Client, commands: ReadonlyArray<Command>): Promise<Array<Reply>> => {
  if (commands.length === 1) {
    return [
      await send(client, commands[0]!).then(
        (r): Reply => [null, r],
        (e: Error): Reply => [e, null]
      )
    ]
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
