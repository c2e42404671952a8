/**
 * Lua scripts as typed descriptors: the source, which parameters are keys and which are arguments, and how the reply
 * is read, in one value. {@link run} sends `EVALSHA` with the SHA-1 computed here once per script; a server that does
 * not have the script cached (a restart, a failover, `SCRIPT FLUSH`) answers `NOSCRIPT` without running anything, and
 * the call is sent again once as `EVAL` with the source, which caches it there for the next calls.
 *
 * The key count is the length of what `keys` returns, so argument positions are no longer counted by hand.
 *
 * A caller that sends many calls in one round trip (the sink, per cluster node) builds each call's command with
 * {@link evalsha} and mends a `NOSCRIPT` answer with {@link mendNoScript}.
 */
import { createHash } from "node:crypto"
import * as Effect from "effect/Effect"
import type { Command } from "ioredis"
import type { Client, RedisConnection } from "../RedisConnection.ts"
import type { RedisError } from "../RedisError.ts"
import * as StreamAdmin from "../StreamAdmin.ts"
import * as Commands from "./commands.ts"

type Arg = Commands.Arg

/** A Lua script taking `Params`, answering an `A`. */
export interface Script<Params extends ReadonlyArray<unknown>, A> {
  /** For error messages and logs. */
  readonly name: string
  readonly source: string
  /** SHA-1 of `source`, as `SCRIPT LOAD` would answer. */
  readonly sha: string
  /** The keys of a call (`KEYS[1]`, …): every key the script touches, in its hash slot on a cluster. */
  readonly keys: (...params: Params) => ReadonlyArray<string>
  /** The arguments of a call (`ARGV[1]`, …). */
  readonly args: (...params: Params) => ReadonlyArray<Arg>
  readonly parse: (reply: unknown) => A
}

/** A script descriptor; its SHA is computed here, once. */
export const make = <Params extends ReadonlyArray<unknown>, A>(options: {
  readonly name: string
  readonly source: string
  readonly keys: (...params: Params) => ReadonlyArray<string>
  readonly args: (...params: Params) => ReadonlyArray<Arg>
  readonly parse: (reply: unknown) => A
}): Script<Params, A> => ({ ...options, sha: createHash("sha1").update(options.source).digest("hex") })

const isNoScript = (error: RedisError) => error._tag === "RedisCommandError" && error.code === "NOSCRIPT"

/** `head` (the SHA or the source), then the `KEYS` count, the keys and `ARGV` of a call. */
const commandArgs = <Params extends ReadonlyArray<unknown>>(
  head: string,
  script: Script<Params, unknown>,
  params: Params
): Array<Arg> => {
  const keys = script.keys(...params)
  const out: Array<Arg> = [head, keys.length]
  for (const k of keys) out.push(k)
  for (const a of script.args(...params)) out.push(a)
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// Pipelined calls: many calls of a script in one round trip, on a raw client (the sink's write path)
// ---------------------------------------------------------------------------------------------------------------

/**
 * One call as a raw `EVALSHA` command, to be queued in a pipeline with others (`Commands.pipeline`). The command
 * owns its arguments: they are let go of once it is answered (see `commands.ts`).
 */
export const evalsha = <Params extends ReadonlyArray<unknown>>(
  script: Script<Params, unknown>,
  ...params: Params
): Command => Commands.make("evalsha", commandArgs(script.sha, script, params))

/** Whether a raw reply error says the server does not have the script cached. */
export const isNoScriptReply = (error: unknown): boolean => error instanceof Error && /^NOSCRIPT\b/.test(error.message)

/**
 * A pipelined call's raw reply, mended: when the server answered `NOSCRIPT` (it ran nothing), the call is sent again
 * alone with `EVAL` and the source, which also caches the script there for the next `EVALSHA`.
 */
export const mendNoScript = async <Params extends ReadonlyArray<unknown>>(
  client: Client,
  script: Script<Params, unknown>,
  reply: Commands.Reply,
  ...params: Params
): Promise<Commands.Reply> => {
  if (!isNoScriptReply(reply[0])) return reply
  return Commands.send(client, Commands.make("eval", commandArgs(script.source, script, params))).then(
    (r): Commands.Reply => [null, r],
    (e: Error): Commands.Reply => [e, null]
  )
}

/** The arguments of a call sent through `StreamAdmin.command`, which takes no {@link Commands.Framed} ones. */
const plain = (args: ReadonlyArray<Arg>): ReadonlyArray<string | number> => {
  if (args.some((a) => a instanceof Commands.Framed)) throw new Error("framed arguments are for pipelined calls only")
  return args as ReadonlyArray<string | number>
}

/** Runs the script on the connection in context: `EVALSHA`, and `EVAL` once when the server answers `NOSCRIPT`. */
export const run = <Params extends ReadonlyArray<unknown>, A>(
  script: Script<Params, A>,
  ...params: Params
): Effect.Effect<A, RedisError, RedisConnection> => {
  const key = script.keys(...params)[0] ?? script.name
  return StreamAdmin.command("EVALSHA", key, plain(commandArgs(script.sha, script, params)), script.parse).pipe(
    Effect.catchIf(isNoScript, () =>
      StreamAdmin.command("EVAL", key, plain(commandArgs(script.source, script, params)), script.parse)
    )
  )
}
