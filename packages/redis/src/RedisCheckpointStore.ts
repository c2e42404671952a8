/**
 * A {@link CheckpointStore} kept in a Redis hash: one field per checkpoint key. Useful when the pipeline runs
 * where no durable disk is at hand; the checkpoint then shares Redis's durability (AOF/RDB), no more.
 *
 * Transient failures (server unavailable, timeout, OOM) are retried by the same failure policies as the sink, so a
 * checkpoint write never fails a batch that Redis has already acknowledged just because of a blip.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { CheckpointError, CheckpointStore } from "@redflow/core/CheckpointStore"
import * as ConfigError from "@redflow/core/ConfigError"
import * as Position from "@redflow/core/Position"
import * as FailurePolicy from "./FailurePolicy.ts"
import * as PipelineLease from "./PipelineLease.ts"
import { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"
import { NonEmptyString } from "./internal/options.ts"
import * as Script from "./internal/script.ts"

/**
 * Options of {@link make} and {@link layer}: the hash that holds the checkpoints, and retry overrides.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** The hash holding the checkpoints. Default `redflow:checkpoints`. */
  readonly key?: string
  /** Overrides of the retry table for checkpoint reads and writes. */
  readonly policies?: Partial<FailurePolicy.FailurePolicies>
}

/** The store's options as a Schema (`policies` is checked by its type). */
const OptionsSchema = Schema.Struct({ key: Schema.optionalKey(NonEmptyString) })

const decodeOptions = ConfigError.decoder("RedisCheckpointStore", OptionsSchema)

const toCheckpointError = (operation: "load" | "commit", key: string, hash: string) => (error: RedisError) =>
  new CheckpointError({ operation, key, reason: `${error._tag} on hash ${hash}: ${error.message}`, cause: error })

/**
 * A commit under a lease's fence: refused, writing nothing, when the fence holds a token above the committer's (the
 * hash and the fence key are both in KEYS; a lease is refused on a Cluster, where they could be in different slots).
 */
const fencedCommit = Script.make({
  name: "checkpoint-commit-fenced",
  source: `${PipelineLease.fenceCheck({ fenceKey: "KEYS[2]", token: "ARGV[3]" })}redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`,
  keys: (hash: string, fenceKey: string, _field: string, _position: string, _token: number) => [hash, fenceKey],
  args: (_hash, _fenceKey, field, position, token) => [field, position, token],
  parse: (reply) => reply
})

/**
 * The field the store writes (and removes) when it is built, to prove it may write the hash.
 *
 * @since 0.1.0
 * @category constants
 */
export const PROBE_FIELD = "redflow:write-probe"

/** What to do about an error that keeps the store from writing its hash. */
const fixFor = (error: RedisError, hash: string): string => {
  switch (error._tag) {
    case "RedisAuthFailed":
      return `; grant this user HSET and HGET on the key (ACL SETUSER <user> ~${hash} +hset +hget), or choose another key`
    case "RedisCommandError":
      return /^WRONGTYPE\b/.test(error.message) ? `; ${hash} is not a hash: choose another key, or delete it` : ""
    case "RedisReadOnly":
      return "; the connection points at a read-only replica: point it at the master"
    default:
      return ""
  }
}

/**
 * Builds the store over the current {@link RedisConnection}. It first proves it may write its hash: an `HSET` of a
 * probe field (never a checkpoint's), then its `HDEL`, so an ACL that denies the write, a key of another type or a
 * replica fails here (`CheckpointError`, `operation: "open"`) rather than at the first commit, after a pipeline has
 * written events it would then replay. Transient errors are retried like commits. An option that cannot work (an
 * empty `key`) fails first, with the `ConfigError` (component `RedisCheckpointStore`) naming it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}) =>
  Effect.gen(function* () {
    const decoded = yield* decodeOptions(options)
    const redis = yield* RedisConnection
    const hash = decoded.key ?? "redflow:checkpoints"
    const policies = FailurePolicy.make(options.policies, redis.topology)
    yield* redis
      .run((client) => client.hset(hash, PROBE_FIELD, "1"), { command: "HSET", key: hash })
      .pipe(
        Effect.retry(FailurePolicy.schedule(policies)),
        Effect.mapError(
          (error) =>
            new CheckpointError({
              operation: "open",
              key: hash,
              reason: `${error._tag} on HSET of hash ${hash}: ${error.message}${fixFor(error, hash)}`,
              cause: error
            })
        )
      )
    // Removing the probe is tidiness, not a condition: commits need HSET only.
    yield* redis
      .run((client) => client.hdel(hash, PROBE_FIELD), { command: "HDEL", key: hash })
      .pipe(Effect.retry(FailurePolicy.schedule(policies)), Effect.ignore)
    return CheckpointStore.of({
      load: (key) =>
        redis
          .run((client) => client.hget(hash, key), { command: "HGET", key: hash })
          .pipe(
            Effect.retry(FailurePolicy.schedule(policies)),
            Effect.mapError(toCheckpointError("load", key, hash)),
            Effect.flatMap((value) => {
              if (value === null) return Effect.succeed(Option.none<Position.Position>())
              return Position.isPosition(value)
                ? Effect.succeed(Option.some(value))
                : Effect.fail(
                    new CheckpointError({
                      operation: "load",
                      key,
                      reason: `hash ${hash} holds ${JSON.stringify(value)}, which is not a position (lowercase hex)`
                    })
                  )
            })
          ),
      // Under a lease's fence (set by the sink while it holds one), the write and the fence's check are one script
      // call; a fenced commit is never retried, whatever the policies say.
      commit: (key, position) =>
        Effect.flatMap(Effect.service(PipelineLease.CheckpointFence), (fence) =>
          (Option.isNone(fence)
            ? redis.run((client) => client.hset(hash, key, position), { command: "HSET", key: hash })
            : Script.run(fencedCommit, hash, fence.value.key, key, position, fence.value.token).pipe(
                Effect.provideService(RedisConnection, redis)
              )
          ).pipe(
            Effect.retry({
              schedule: FailurePolicy.schedule(policies),
              while: (error) => !PipelineLease.isFencedError(error)
            }),
            Effect.mapError(toCheckpointError("commit", key, hash)),
            Effect.asVoid
          )
        )
    })
  })

/**
 * The store as a layer; needs a {@link RedisConnection}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<CheckpointStore, CheckpointError | ConfigError.ConfigError, RedisConnection> =>
  Layer.effect(CheckpointStore, make(options))
