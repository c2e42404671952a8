/**
 * Sending a batch's script calls in one round trip: one pipeline, or on a cluster one pipeline per node, all at once.
 * Each call gets its own reply or typed error, so the writer can retry only the streams that failed; when several
 * fail differently, {@link worse} picks the error whose failure policy decides.
 */
import * as Effect from "effect/Effect"
import { Cluster } from "ioredis"
import calculateSlot from "cluster-key-slot"
import type { Client, RedisConnectionService } from "../../RedisConnection.ts"
import { classify, RedisAuthFailed, type RedisError } from "../../RedisError.ts"
import * as Commands from "../commands.ts"
import * as Script from "../script.ts"
import * as Scripts from "../scripts.ts"

/** Severity when several streams of one batch fail differently: the most final error decides the policy. */
const SEVERITY: Record<RedisError["_tag"], number> = {
  RedisAuthFailed: 7,
  RedisCommandError: 6,
  RedisReadOnly: 5,
  RedisOutOfMemory: 4,
  RedisClusterRedirect: 3,
  RedisTimeout: 2,
  RedisUnavailable: 1
}

/** The more final of two errors (the one whose policy decides for a write that failed in several ways). */
export const worse = (a: RedisError | undefined, b: RedisError): RedisError =>
  a === undefined || SEVERITY[b._tag] > SEVERITY[a._tag] ? b : a

const NO_REPLY = (): Commands.Reply => [new Error("no reply"), null]

/** One pipeline: every call in one round trip. */
const pipelined = (client: Client, calls: ReadonlyArray<Scripts.WriteCall>): Promise<Array<Commands.Reply>> =>
  Commands.pipeline(
    client,
    calls.map((call) => Script.evalsha(Scripts.write, call))
  )

/**
 * On a cluster, a pipeline must stay on one node: group the calls by the node that owns their slot (from the
 * client's slot map) and send one pipeline per node, all at once. A call whose slot moved meanwhile comes back with
 * MOVED/ASK and is retried alone after the slot map is refreshed.
 */
const perNode = async (cluster: Cluster, calls: ReadonlyArray<Scripts.WriteCall>): Promise<Array<Commands.Reply>> => {
  const groups = new Map<string, Array<number>>()
  calls.forEach((call, i) => {
    const node = cluster.slots[calculateSlot(call.stream)]?.[0] ?? "?"
    const group = groups.get(node)
    if (group === undefined) groups.set(node, [i])
    else group.push(i)
  })
  const replies = new Array<Commands.Reply>(calls.length)
  await Promise.all(
    [...groups.values()].map(async (indexes) => {
      const group = indexes.map((i) => calls[i]!)
      const results = await pipelined(cluster, group).catch((e: Error) =>
        // The slot map changed between grouping and sending (a migration): ioredis refused the pipeline before
        // sending anything. Send each call alone; ioredis routes it and follows its redirects.
        /same slots allocation group/.test(e.message)
          ? Promise.all(group.map((call) => pipelined(cluster, [call]).then((r) => r[0]!)))
          : indexes.map((): Commands.Reply => [e, null])
      )
      indexes.forEach((callIndex, k) => (replies[callIndex] = results[k] ?? NO_REPLY()))
    })
  )
  return replies
}

/**
 * Redis refuses a script whose declared keys the user may not touch before it runs, without naming them
 * (`NOPERM … one of the keys used as arguments`): say which keys, and what the sink needs on them.
 */
const withKeys = (error: RedisError, call: Scripts.WriteCall): RedisError =>
  error._tag === "RedisAuthFailed" && error.code === "NOPERM" && !error.message.includes(call.stream)
    ? new RedisAuthFailed({
        ...error,
        message:
          `${error.message} (the sink's write script on stream ${call.stream} and its high-water key ` +
          `${call.markKey}: the user needs EVALSHA and EVAL, HGET and HSET on the high-water key, XADD on the stream)`
      })
    : error

/**
 * Sends the calls (one pipeline per node) and answers one reply or error per call, in order. A node that lost its
 * script cache (restart, failover) answers NOSCRIPT without running anything: that call is sent again with the
 * source (see `Script.mendNoScript`).
 */
export const send = (
  redis: RedisConnectionService,
  calls: ReadonlyArray<Scripts.WriteCall>
): Effect.Effect<Array<Scripts.WriteReply | RedisError>, RedisError> =>
  redis.run(async (client): Promise<Array<Scripts.WriteReply | RedisError>> => {
    const results = client instanceof Cluster ? await perNode(client, calls) : await pipelined(client, calls)
    const out: Array<Scripts.WriteReply | RedisError> = []
    let redirected = false
    for (let i = 0; i < calls.length; i++) {
      const call = calls[i]!
      const raw = results[i] ?? NO_REPLY()
      const [err, reply] = Script.isNoScriptReply(raw[0])
        ? await Script.mendNoScript(client, Scripts.write, raw, call)
        : raw
      if (err) {
        const error = withKeys(classify(err, { command: "EVALSHA", key: call.stream }), call)
        if (error._tag === "RedisClusterRedirect") redirected = true
        out.push(error)
      } else out.push(Scripts.write.parse(reply))
    }
    if (redirected && client instanceof Cluster) client.refreshSlotsCache()
    return out
  })
