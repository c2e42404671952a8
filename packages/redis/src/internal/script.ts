/**
 * Lua scripts as typed descriptors: the source, which parameters are keys and which are arguments, and how the reply
 * is read, in one value. {@link run} sends `EVALSHA` with the SHA-1 computed here once per script; a server that does
 * not have the script cached (a restart, a failover, `SCRIPT FLUSH`) answers `NOSCRIPT` without running anything, and
 * the call is sent again once as `EVAL` with the source, which caches it there for the next calls.
 *
 * The key count is the length of what `keys` returns, so argument positions are no longer counted by hand.
 */
import { createHash } from "node:crypto"
import * as Effect from "effect/Effect"
import { RedisConnection } from "../RedisConnection.ts"
import type { RedisError } from "../RedisError.ts"
import * as StreamAdmin from "../StreamAdmin.ts"

type Arg = string | number

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

/** Runs the script on the connection in context: `EVALSHA`, and `EVAL` once when the server answers `NOSCRIPT`. */
export const run = <Params extends ReadonlyArray<unknown>, A>(
  script: Script<Params, A>,
  ...params: Params
): Effect.Effect<A, RedisError, RedisConnection> => {
  const keys = script.keys(...params)
  const tail: Array<Arg> = [keys.length, ...keys, ...script.args(...params)]
  const key = keys[0] ?? script.name
  return StreamAdmin.command("EVALSHA", key, [script.sha, ...tail], script.parse).pipe(
    Effect.catchIf(isNoScript, () => StreamAdmin.command("EVAL", key, [script.source, ...tail], script.parse))
  )
}
