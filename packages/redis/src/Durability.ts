/**
 * What the server's persistence settings mean for the writes the sink has been told are done. Redis acknowledges a
 * write once it is in memory; whether it survives a restart depends on `appendonly` and `appendfsync`, which the
 * sink cannot change but can read, so it says once, plainly, at start when an acknowledged write can be lost.
 *
 * | settings | verdict | what a crash loses |
 * |---|---|---|
 * | `appendonly yes`, `appendfsync always` | `durable` | nothing acknowledged |
 * | `appendonly yes`, `appendfsync everysec` | `last-second-at-risk` | nothing on a Redis crash or restart (the kernel has the writes); up to about one second on a power loss or kernel crash |
 * | `appendonly yes`, `appendfsync no` | `acknowledged-writes-can-be-lost` | what the kernel had not flushed yet (often up to 30 seconds) on a power loss or kernel crash |
 * | `appendonly no` (RDB `save` points or none) | `acknowledged-writes-can-be-lost` | everything since the last snapshot (everything, without `save` points) on any crash or restart that is not a clean `SHUTDOWN` |
 * | `CONFIG GET` refused (ACL, a managed Redis that renames it) | `unknown` | cannot tell: ask the provider |
 *
 * `everysec` counts as durable for {@link check}'s `require`: it is Redis's recommended setting, it loses nothing
 * when Redis itself crashes or restarts (the case a pipeline operator meets), and `always` costs a disk sync per
 * write. An application that must survive a power loss asks for `verdict === "durable"` on {@link inspect}'s answer.
 *
 * On a cluster every master is read and the weakest decides. A replica promoted by a failover is a further way to
 * lose the writes it had not received; that is replication (`WAIT`, `min-replicas-to-write`), not persistence, and
 * not judged here.
 *
 * @example
 * ```ts
 * const report = yield* Durability.check({ require: false }) // logs the advice once when writes can be lost
 * ```
 *
 * @since 0.1.0
 */
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { type Client, RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"

/**
 * What a crash can take of the writes Redis acknowledged, read from its persistence settings (the module comment
 * has the table).
 *
 * @since 0.1.0
 * @category models
 */
export type Verdict = "durable" | "last-second-at-risk" | "acknowledged-writes-can-be-lost" | "unknown"

/**
 * What {@link inspect} found.
 *
 * @since 0.1.0
 * @category models
 */
export interface Report {
  /** `appendonly`; `undefined` when it could not be read. */
  readonly aof: boolean | undefined
  /** `always`, `everysec` or `no`; `undefined` when it could not be read. */
  readonly appendfsync: string | undefined
  /** The RDB `save` points, e.g. `["3600 1", "300 100"]`; empty when none; `undefined` when unread. */
  readonly rdbSaves: ReadonlyArray<string> | undefined
  readonly verdict: Verdict
  /** One or two plain sentences: what a crash or restart loses, and the fix. */
  readonly advice: string
}

/**
 * The server's persistence cannot keep acknowledged writes across a restart, and the application required it.
 *
 * @since 0.1.0
 * @category errors
 */
export class DurabilityError extends Schema.TaggedError<DurabilityError>()("DurabilityError", {
  verdict: Schema.Literals(["durable", "last-second-at-risk", "acknowledged-writes-can-be-lost", "unknown"]),
  advice: Schema.String
}) {
  override get message(): string {
    return `durability was required and the server's persistence is "${this.verdict}": ${this.advice}`
  }
}

const FIX_AOF = "Fix: CONFIG SET appendonly yes and CONFIG SET appendfsync everysec (or always), then CONFIG REWRITE."

const judge = (aof: boolean, appendfsync: string, rdbSaves: ReadonlyArray<string>): Report => {
  const base = { aof, appendfsync, rdbSaves }
  if (!aof) {
    const since =
      rdbSaves.length === 0 ? "every write (no RDB save points either)" : "every write since the last RDB snapshot"
    return {
      ...base,
      verdict: "acknowledged-writes-can-be-lost",
      advice:
        `Acknowledged writes can be lost: AOF is off (appendonly no), so a Redis crash or restart that is not a ` +
        `clean SHUTDOWN loses ${since}. ${FIX_AOF}`
    }
  }
  if (appendfsync === "always") {
    return {
      ...base,
      verdict: "durable",
      advice: "Durable: AOF with appendfsync always; an acknowledged write is on disk."
    }
  }
  if (appendfsync === "everysec") {
    return {
      ...base,
      verdict: "last-second-at-risk",
      advice:
        "AOF with appendfsync everysec: a Redis crash or restart loses no acknowledged write; a power loss or " +
        "kernel crash can lose about the last second. For none at all: CONFIG SET appendfsync always (a disk sync per write)."
    }
  }
  return {
    ...base,
    verdict: "acknowledged-writes-can-be-lost",
    advice:
      `Acknowledged writes can be lost: AOF with appendfsync ${appendfsync} leaves flushing to the kernel, so a power ` +
      `loss or kernel crash loses what it had not written yet (often up to 30 seconds). ` +
      `Fix: CONFIG SET appendfsync everysec (or always), then CONFIG REWRITE.`
  }
}

const unknown = (why: string): Report => ({
  aof: undefined,
  appendfsync: undefined,
  rdbSaves: undefined,
  verdict: "unknown",
  advice:
    `Cannot tell whether acknowledged writes survive a restart: ${why}. Check the server's persistence ` +
    `(appendonly yes, appendfsync everysec or always) with your provider, or allow CONFIG GET to this user.`
})

/** `CONFIG GET name` as a value: RESP2 answers `[name, value]`, RESP3 a map (`{ name: value }` or `[[name, value]]`). */
const configValue = (reply: unknown, name: string): string | undefined => {
  const flat = Array.isArray(reply) ? reply.flat() : reply
  if (Array.isArray(flat)) {
    for (let i = 0; i + 1 < flat.length; i += 2) {
      if (String(flat[i]).toLowerCase() === name) return String(flat[i + 1])
    }
    return undefined
  }
  if (reply instanceof Map) return reply.has(name) ? String(reply.get(name)) : undefined
  if (reply !== null && typeof reply === "object" && name in reply)
    return String((reply as Record<string, unknown>)[name])
  return undefined
}

const configGet = async (client: { call: (...args: Array<string>) => Promise<unknown> }, name: string) =>
  configValue(await client.call("CONFIG", "GET", name), name)

type Node = { call: (...args: Array<string>) => Promise<unknown> }

const inspectNode = async (node: Node): Promise<Report> => {
  const [appendonly, appendfsync, save] = await Promise.all([
    configGet(node, "appendonly"),
    configGet(node, "appendfsync"),
    configGet(node, "save")
  ])
  if (appendonly === undefined || appendfsync === undefined) return unknown("CONFIG GET answered without the setting")
  // `save` is "3600 1 300 100 60 10000": pairs of seconds and changes.
  const words = (save ?? "")
    .trim()
    .split(/\s+/)
    .filter((w) => w !== "")
  const saves: Array<string> = []
  for (let i = 0; i + 1 < words.length; i += 2) saves.push(`${words[i]} ${words[i + 1]}`)
  return judge(appendonly === "yes", appendfsync, saves)
}

const RANK: Record<Verdict, number> = {
  durable: 0,
  "last-second-at-risk": 1,
  unknown: 2,
  "acknowledged-writes-can-be-lost": 3
}

const inspectAll = async (client: Client): Promise<Report> => {
  const nodes: Array<Node> =
    "nodes" in client && typeof client.nodes === "function"
      ? (client.nodes("master") as unknown as Array<Node>)
      : [client as unknown as Node]
  const reports = await Promise.all(nodes.map(inspectNode))
  return reports.reduce((worst, r) => (RANK[r.verdict] > RANK[worst.verdict] ? r : worst))
}

/** A refusal of CONFIG itself (ACL, a renamed or disabled command): the settings are unknown, not an outage. */
const isRefusal = (error: RedisError) =>
  (error._tag === "RedisAuthFailed" && error.code === "NOPERM") || error._tag === "RedisCommandError"

/**
 * Reads `appendonly`, `appendfsync` and `save` with `CONFIG GET` and judges them (see the module's table). A server
 * that refuses `CONFIG` gives the verdict `unknown`; a server that cannot be reached fails with its `RedisError`.
 *
 * @since 0.1.0
 * @category inspecting
 */
export const inspect: Effect.Effect<Report, RedisError, RedisConnection> = RedisConnection.use((redis) =>
  redis.run(inspectAll, { command: "CONFIG" })
).pipe(
  Effect.catchIf(isRefusal, (error) => Effect.succeed(unknown(`the server refused CONFIG GET (${error.message})`)))
)

/** Verdicts that {@link check}'s `require` accepts: nothing acknowledged is lost when Redis crashes or restarts. */
const acceptable = (verdict: Verdict) => verdict === "durable" || verdict === "last-second-at-risk"

/**
 * {@link inspect}, then: logs the advice once as a warning when acknowledged writes can be lost (or it cannot tell),
 * shows it in `/health` as a condition `durability` when the application provides {@link PipelineHealth} (a warning:
 * it does not make the application not ready), and with `require` fails with {@link DurabilityError} unless the
 * verdict is `durable` or `last-second-at-risk` (`unknown` fails too: nothing shows the writes are safe).
 *
 * @since 0.1.0
 * @category inspecting
 */
export const check = (options: {
  readonly require: boolean
  /** Names the condition in `/health` (`<pipeline>/durability`); default `durability`. */
  readonly pipeline?: string
}): Effect.Effect<Report, DurabilityError | RedisError, RedisConnection> =>
  Effect.gen(function* () {
    const report = yield* inspect
    if (acceptable(report.verdict)) {
      yield* Effect.logInfo(report.advice)
      return report
    }
    yield* Effect.logWarning(report.advice).pipe(Effect.annotateLogs({ verdict: report.verdict }))
    const health = yield* Effect.serviceOption(PipelineHealth.PipelineHealth)
    if (Option.isSome(health)) {
      const key = options.pipeline === undefined ? "durability" : `${options.pipeline}/durability`
      yield* health.value.raise(key, `durability: ${report.advice}`, { blocksReadiness: false })
    }
    if (options.require) return yield* new DurabilityError({ verdict: report.verdict, advice: report.advice })
    return report
  })
