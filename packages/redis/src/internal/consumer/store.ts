/**
 * The consumer's Redis operations, behind one interface: what the ledger, the reader and the shutdown need from a
 * consumer group and nothing else. {@link makeRedis} is the real one (one connection for commands and a dedicated one
 * for the blocking reads); `memoryStore.ts` keeps a stream and its group in memory, on the `Clock`, so the
 * consumer's logic runs under `TestClock`.
 *
 * Every operation is one attempt: retrying (by the failure policies) is the caller's, see `ledger.ts`.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import type * as Scope from "effect/Scope"
import { RedisConnection } from "../../RedisConnection.ts"
import type { RedisError } from "../../RedisError.ts"
import * as StreamAdmin from "../../StreamAdmin.ts"
import * as References from "../references.ts"
import * as Script from "../script.ts"
import type { ConsumerSettings } from "./settings.ts"

/** An entry as a read returned it: `fields` is `undefined` for a pending entry deleted from the stream since. */
export type ReadEntry = StreamAdmin.GroupEntry

/** An entry that still exists in the stream. */
export type LiveEntry = StreamAdmin.Entry

export interface ConsumerStore {
  readonly topology: "standalone" | "sentinel" | "cluster"
  /** Completes at the next reconnect of the command connection (a retry's wait ends early with it). */
  readonly nextReconnect: () => Effect.Effect<void>
  /** The same for the reading connection. */
  readonly nextReaderReconnect: () => Effect.Effect<void>
  /** `XGROUP CREATE … MKSTREAM` at `start`; `false` when the group exists. */
  readonly createGroup: (start: string) => Effect.Effect<boolean, RedisError>
  /** The id of the stream's first entry, if any. */
  readonly firstEntryId: Effect.Effect<string | undefined, RedisError>
  /**
   * `XREADGROUP` on the reading connection: `>` for new entries (blocking up to `blockMs` when given), or an id to
   * re-read this consumer's pending entries after it. A blocked read can be cut short with {@link unblockRead}.
   */
  readonly readGroup: (
    id: string,
    count: number,
    blockMs: number | undefined
  ) => Effect.Effect<ReadonlyArray<ReadEntry>, RedisError>
  /** Cuts a blocked read short as if its block time ran out (a no-op when none is blocked, or it cannot). */
  readonly unblockRead: Effect.Effect<void>
  /** Drops the reading connection (a stop that ran out of time). */
  readonly dropReader: Effect.Effect<void>
  /** `XAUTOCLAIM` from `start`: up to `count` entries idle at least `minIdle`, taken over by this consumer. */
  readonly autoClaim: (
    start: string,
    count: number
  ) => Effect.Effect<{ readonly next: string; readonly entries: ReadonlyArray<LiveEntry> }, RedisError>
  /**
   * Delivery counts of entries pending to this consumer (`XPENDING … id id 1 consumer`); an id acknowledged or taken
   * over by another consumer since (or the group gone) is absent.
   */
  readonly deliveries: (ids: ReadonlyArray<string>) => Effect.Effect<Map<string, number>, RedisError>
  /** `XACK` of `ids` (how many were pending), and the last errors of `forget` dropped. */
  readonly ack: (ids: ReadonlyArray<string>, forget: ReadonlyArray<string>) => Effect.Effect<number, RedisError>
  /** Keeps `reason` as the entry's last error (for its dead-letter entry). */
  readonly recordError: (id: string, reason: string) => Effect.Effect<void, RedisError>
  readonly lastError: (id: string) => Effect.Effect<string | undefined, RedisError>
  /**
   * `MGET` of the keys holding bodies of events written by reference (`largeEvents: "reference"`; the stream's hash
   * slot), in order: `undefined` for one that is gone (its TTL passed).
   */
  readonly bodies: (keys: ReadonlyArray<string>) => Effect.Effect<Array<string | undefined>, RedisError>
  /**
   * Makes sure the entry is still this consumer's, with `deliveries` as its count, and resets its idle time (so no
   * other consumer takes it over for `minIdle`): in one step, a script on the stream. `false` when another consumer
   * took it over or it was acknowledged since. Taken before an entry is copied to the dead-letter stream, so two
   * consumers that both claimed it (the first was slower than `minIdle`) do not both copy it.
   */
  readonly fence: (id: string, deliveries: number) => Effect.Effect<boolean, RedisError>
  /** `XADD` of a dead-letter entry (flat field/value pairs) to the dead-letter stream. */
  readonly addDeadLetter: (fields: ReadonlyArray<string>) => Effect.Effect<void, RedisError>
  /** `XCLAIM … 0 JUSTID` to this consumer: resets the idle time of entries it works on, without counting. */
  readonly touch: (ids: ReadonlyArray<string>) => Effect.Effect<void, RedisError>
  /** The group's pending count and last-delivered id (`XINFO GROUPS`); `undefined` when the group is gone. */
  readonly groupInfo: Effect.Effect<
    { readonly pending: number; readonly lastDeliveredId: string } | undefined,
    RedisError
  >
  /**
   * Gives back deliveries that reached no handler (entries read ahead when the consumer stops, see `shutdown.ts`; a
   * copy whose event another copy is processing, see `workers.ts`): each entry still pending to this consumer with the
   * given delivery count gets that count minus one and an idle time of `idleMs`. How many were given back.
   */
  readonly giveBack: (
    entries: ReadonlyArray<readonly [id: string, deliveries: number]>,
    idleMs: number
  ) => Effect.Effect<number, RedisError>
}

const MAX_ERROR_LENGTH = 4096
const ERRORS_TTL_MS = 7 * 24 * 3600 * 1000

/** Cuts an error kept for a dead-letter entry to its first 4 KiB. */
export const clip = (error: string) => error.slice(0, MAX_ERROR_LENGTH)

/**
 * Setting the count rather than decrementing it makes a retried call harmless: an entry acknowledged, taken over or
 * re-read since (its count moved) is left alone.
 */
const giveBackScript = Script.make({
  name: "consumer-give-back",
  source: `local released = 0
for i = 4, #ARGV, 2 do
  local p = redis.call("XPENDING", KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])[1]
  if p and p[4] == tonumber(ARGV[i + 1]) then
    redis.call("XCLAIM", KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], "IDLE", ARGV[3], "RETRYCOUNT", p[4] - 1, "JUSTID")
    released = released + 1
  end
end
return released`,
  keys: (
    stream: string,
    _group: string,
    _consumer: string,
    _idleMs: number,
    _pairs: ReadonlyArray<string | number>
  ) => [stream],
  args: (_stream, group, consumer, idleMs, pairs) => [group, consumer, idleMs, ...pairs],
  parse: (reply) => (typeof reply === "number" ? reply : 0)
})

const fenceScript = Script.make({
  name: "consumer-fence",
  source: `local p = redis.call("XPENDING", KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])[1]
if p and p[4] == tonumber(ARGV[4]) then
  redis.call("XCLAIM", KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], "JUSTID")
  return 1
end
return 0`,
  keys: (stream: string, _group: string, _consumer: string, _id: string, _deliveries: number) => [stream],
  args: (_stream, group, consumer, id, deliveries) => [group, consumer, id, deliveries],
  parse: (reply) => reply === 1
})

const isNoGroup = (error: RedisError) => error._tag === "RedisCommandError" && error.code === "NOGROUP"

/** The Redis store, on the connection in context plus a dedicated reading connection closed with the scope. */
export const makeRedis = Effect.fnUntraced(function* (settings: ConsumerSettings) {
  const redis = yield* RedisConnection
  const { stream, group, consumer, errorsKey } = settings
  // A blocked XREADGROUP must not hold up acks and claims: it gets its own connection, with a command timeout above
  // the block time.
  const reader = yield* redis.dedicated({
    commandTimeout: Duration.millis(settings.blockMs + redis.resolved.commandTimeoutMs),
    blocking: true
  })
  const onRedis = <A>(effect: Effect.Effect<A, RedisError, RedisConnection>) =>
    Effect.provideService(effect, RedisConnection, redis)
  const onReader = <A>(effect: Effect.Effect<A, RedisError, RedisConnection>) =>
    Effect.provideService(effect, RedisConnection, reader)

  // CLIENT UNBLOCK needs the reader connection's id, known per connection (a reconnect gets a new one). A cluster
  // client cannot aim it at the node the read blocks on: there a stop waits for the read's `block` time instead.
  let unblockable = redis.topology !== "cluster"
  let readerId: number | undefined
  let blockedIn: number | undefined
  if (unblockable) reader.client.on("close", () => (readerId = undefined))
  const knowReaderId = Effect.suspend(() =>
    !unblockable || readerId !== undefined
      ? Effect.void
      : StreamAdmin.command("CLIENT", stream, ["ID"], (reply) => (typeof reply === "number" ? reply : undefined)).pipe(
          onReader,
          Effect.match({
            // Refused (an ACL without CLIENT): a stop waits for the read's block time instead.
            onFailure: (error) => {
              unblockable = error._tag !== "RedisCommandError"
            },
            onSuccess: (id) => {
              readerId = id
            }
          })
        )
  )

  const store: ConsumerStore = {
    topology: redis.topology,
    nextReconnect: redis.nextReconnect,
    nextReaderReconnect: reader.nextReconnect,
    createGroup: (start) => onRedis(StreamAdmin.createGroup(stream, group, { start, mkStream: true })),
    firstEntryId: Effect.map(onRedis(StreamAdmin.range(stream, { count: 1 })), (entries) => entries[0]?.id),
    readGroup: (id, count, blockMs) =>
      Effect.gen(function* () {
        if (blockMs !== undefined) yield* knowReaderId
        blockedIn = blockMs === undefined ? undefined : readerId
        return yield* StreamAdmin.readGroup(stream, group, consumer, id, {
          count,
          ...(blockMs !== undefined ? { block: blockMs } : {})
        }).pipe(onReader, Effect.ensuring(Effect.sync(() => (blockedIn = undefined))))
      }),
    unblockRead: Effect.suspend(() =>
      blockedIn === undefined
        ? Effect.void
        : onRedis(StreamAdmin.command("CLIENT", stream, ["UNBLOCK", blockedIn, "TIMEOUT"], () => 0))
    ).pipe(Effect.ignore),
    dropReader: Effect.sync(() => reader.client.disconnect()),
    autoClaim: (start, count) =>
      onRedis(StreamAdmin.autoClaim(stream, group, consumer, settings.minIdleMs, { start, count })),
    deliveries: (ids) =>
      Effect.forEach(
        ids,
        (id) =>
          StreamAdmin.pendingEntries(stream, group, { start: id, end: id, count: 1, consumer }).pipe(
            // The group is gone (the reader creates it again): the entry's delivery count went with it.
            Effect.catchIf(isNoGroup, () => Effect.succeed([]))
          ),
        { concurrency: "unbounded" }
      ).pipe(
        onRedis,
        Effect.map((replies) => {
          const out = new Map<string, number>()
          for (const reply of replies) for (const p of reply) out.set(p.id, p.deliveries)
          return out
        })
      ),
    ack: (ids, forget) =>
      Effect.all(
        [
          StreamAdmin.ack(stream, group, ids),
          forget.length > 0
            ? StreamAdmin.command("HDEL", errorsKey, [errorsKey, ...forget], () => 0)
            : Effect.succeed(0)
        ],
        { concurrency: "unbounded" }
      ).pipe(
        onRedis,
        Effect.map(([acked]) => acked)
      ),
    recordError: (id, reason) =>
      Effect.all(
        [
          StreamAdmin.command("HSET", errorsKey, [errorsKey, id, clip(reason)], () => 0),
          StreamAdmin.command("PEXPIRE", errorsKey, [errorsKey, ERRORS_TTL_MS], () => 0)
        ],
        { concurrency: "unbounded", discard: true }
      ).pipe(onRedis),
    lastError: (id) =>
      onRedis(
        StreamAdmin.command("HGET", errorsKey, [errorsKey, id], (reply) =>
          Predicate.isString(reply) ? reply : undefined
        )
      ),
    bodies: (keys) => onRedis(References.readBodies(keys)),
    fence: (id, deliveries) => onRedis(Script.run(fenceScript, stream, group, consumer, id, deliveries)),
    addDeadLetter: (fields) =>
      onRedis(
        StreamAdmin.command(
          "XADD",
          settings.deadLetterStream,
          [settings.deadLetterStream, "*", ...fields],
          () => undefined
        )
      ),
    touch: (ids) => Effect.asVoid(onRedis(StreamAdmin.claimIds(stream, group, consumer, 0, ids))),
    groupInfo: Effect.map(onRedis(StreamAdmin.groups(stream)), (groups) => {
      const found = groups.find((g) => g.name === group)
      return found === undefined ? undefined : { pending: found.pending, lastDeliveredId: found.lastDeliveredId }
    }),
    giveBack: (entries, idleMs) =>
      onRedis(
        Script.run(
          giveBackScript,
          stream,
          group,
          consumer,
          idleMs,
          entries.flatMap(([id, n]) => [id, n])
        )
      )
  }
  return store
}) as (settings: ConsumerSettings) => Effect.Effect<ConsumerStore, RedisError, RedisConnection | Scope.Scope>
