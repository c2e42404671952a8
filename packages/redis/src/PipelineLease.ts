/**
 * One active writer per pipeline name: a lease in Redis that one process holds and renews while it writes, and that
 * a standby running the same pipeline waits for and takes over when the active process dies.
 *
 * Keys (one hash slot, `{<pipeline>}`):
 * - `redflow:lease:{<pipeline>}`: `<holder> <token>`, with a ttl that the holder renews every `renewEvery`;
 * - `redflow:lease:{<pipeline>}:fence`: the fencing token, `INCR`ed on every takeover, never expires, never goes back.
 *
 * A lease alone cannot stop a writer that was paused (a SIGSTOP, a long GC, a stalled VM) past its ttl: when it
 * wakes up it still believes it holds the lease and may send a batch before its next renewal tells it otherwise.
 * The fencing token closes that gap: the sink passes its lease's `token` into its write script, which compares it
 * with the fence key ({@link fenceCheck}) and refuses the whole batch, writing nothing, when a newer holder took over.
 *
 * On a cluster the fence key lives in the pipeline's slot and a stream in its own, so one script cannot read both.
 * There, the token goes beside each stream's high-water mark (the mark's hash, in the stream's slot): the write
 * script refuses a token lower than the one stored there and stores its own otherwise. A stale writer is then
 * refused by every stream the new holder has written to, and a stream the new holder has not written yet takes the
 * stale batch, which the new holder's own first write (stating the mark it expects) then finds moved. The helper
 * here implements the standalone and Sentinel form, where every key is on one node.
 *
 * @example
 * ```ts
 * const program = Effect.scoped(
 *   Effect.gen(function* () {
 *     const lease = yield* PipelineLease.acquire({ pipeline: "orders", ttl: "10 seconds" })
 *     // write with lease.token; stop when lease.lost fails
 *     yield* Effect.raceFirst(runPipeline(lease.token), lease.lost)
 *   })
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as ConfigError from "@redflow/core/ConfigError"
import * as Metrics from "@redflow/core/Metrics"
import { hostname } from "node:os"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Script from "./internal/script.ts"
import * as StreamAdmin from "./StreamAdmin.ts"
import type { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"

const COMPONENT = "PipelineLease"

/**
 * The lease's key.
 *
 * @since 0.1.0
 * @category keys
 */
export const leaseKey = (pipeline: string) => `redflow:lease:{${pipeline}}`

/**
 * The fencing token's key, in the lease key's slot.
 *
 * @since 0.1.0
 * @category keys
 */
export const fenceKey = (pipeline: string) => `redflow:lease:{${pipeline}}:fence`

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/**
 * This process no longer holds the lease: it must stop writing. `reason`: `taken` (another holder has it),
 * `expired` (the key was gone at a renewal: nobody holds it, but a standby may at any moment), `unreachable` (no
 * renewal went through for a whole ttl: the lease may have expired, we cannot know).
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseLost extends Schema.TaggedError<LeaseLost>()("LeaseLost", {
  pipeline: Schema.String,
  reason: Schema.Literals(["taken", "expired", "unreachable"]),
  /** The holder found at the renewal, when `taken`. */
  holder: Schema.optionalKey(Schema.String),
  /** The newer holder's fencing token, when `taken`. */
  token: Schema.optionalKey(Schema.Number),
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message(): string {
    switch (this.reason) {
      case "taken":
        return `pipeline ${this.pipeline}: the lease was taken over by ${this.holder ?? "another process"} (token ${this.token ?? "?"}); this process stopped writing`
      case "expired":
        return `pipeline ${this.pipeline}: the lease expired before it was renewed (was this process paused?); this process stopped writing`
      case "unreachable":
        return `pipeline ${this.pipeline}: no renewal of the lease went through for its whole ttl (Redis unreachable); it may be held by another process now, so this one stopped writing`
    }
  }
}

/**
 * A write refused by the fence: a newer holder took the pipeline over. What the sink fails with when its write
 * script answers {@link FENCED}.
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseFenced extends Schema.TaggedError<LeaseFenced>()("LeaseFenced", {
  pipeline: Schema.String,
  /** The token this process wrote with. */
  token: Schema.Number,
  /** The current token, the newer holder's. */
  current: Schema.Number
}) {
  override get message(): string {
    return `pipeline ${this.pipeline}: a newer holder (token ${this.current}) took the pipeline over; this process (token ${this.token}) stopped writing`
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Fencing
// ---------------------------------------------------------------------------------------------------------------

/**
 * The error reply of a fenced write script: `FENCED <current token>`. A reply of its own code, so that the sink tells
 * it from every other refusal (`RedisCommandError` with `code: "FENCED"`).
 *
 * @since 0.1.0
 * @category fencing
 */
export const FENCED = "FENCED"

/**
 * A Lua fragment for the top of a write script, before its first write: refuses the call, writing nothing, when the
 * fence key holds a token above the caller's. `fenceKey` and `token` are Lua expressions, e.g. `KEYS[3]` (the
 * {@link fenceKey}, declared in KEYS so it is routed and checked like every key) and `ARGV[7]` (the lease's token).
 *
 * A missing fence key (Redis lost its data) refuses nothing: a token is refused only when a newer one is known.
 *
 * @example
 * ```ts
 * const source = `${PipelineLease.fenceCheck({ fenceKey: "KEYS[2]", token: "ARGV[1]" })}
 * return redis.call('XADD', KEYS[1], '*', 'event', ARGV[2])`
 * ```
 *
 * @since 0.1.0
 * @category fencing
 */
export const fenceCheck = (options: { readonly fenceKey: string; readonly token: string }): string =>
  `do
  local fence = tonumber(redis.call('GET', ${options.fenceKey}) or '0')
  if fence > tonumber(${options.token}) then
    return redis.error_reply('${FENCED} ' .. fence)
  end
end
`

/**
 * The fence a checkpoint is committed under. The sink sets it around every checkpoint commit while it holds a lease
 * (`Option.none()` otherwise, the default). A store that can check it in the same atomic step as its write refuses
 * the commit, writing nothing, once a newer holder raised the fence: `RedisCheckpointStore` does, with one script that
 * runs {@link fenceCheck} then its `HSET`, and fails with a `CheckpointError` whose cause is the `FENCED` reply (the
 * sink then stops with {@link LeaseFenced}). So a process paused past its lease cannot move the shared checkpoint back
 * when it wakes. Stores that cannot check it (a file, memory) commit as before.
 *
 * @since 0.1.0
 * @category fencing
 */
export const CheckpointFence = Context.Reference<Option.Option<{ readonly key: string; readonly token: number }>>(
  "@redflow/redis/PipelineLease/CheckpointFence",
  { defaultValue: () => Option.none() }
)

/**
 * Whether a Redis error is a {@link FENCED} refusal.
 *
 * @since 0.1.0
 * @category fencing
 */
export const isFencedError = (error: RedisError): boolean => error._tag === "RedisCommandError" && error.code === FENCED

/**
 * The {@link LeaseFenced} a failed script call stands for, when its reply was the fence's.
 *
 * @since 0.1.0
 * @category fencing
 */
export const fenced = (pipeline: string, token: number, error: RedisError): Option.Option<LeaseFenced> => {
  if (!isFencedError(error)) return Option.none()
  const current = Number(/^FENCED (\d+)/.exec(error.message)?.[1] ?? Number.NaN)
  return Option.some(new LeaseFenced({ pipeline, token, current: Number.isFinite(current) ? current : token + 1 }))
}

// ---------------------------------------------------------------------------------------------------------------
// Scripts
// ---------------------------------------------------------------------------------------------------------------

const asText = (u: unknown): string | undefined =>
  typeof u === "string" ? u : u instanceof Uint8Array ? new TextDecoder().decode(u) : undefined

/** `[1, token]` taken by us, or `[0, "<holder> <token>", pttl]` held by another. */
const acquireScript = Script.make({
  name: "lease-acquire",
  source: `#!lua
local current = redis.call('GET', KEYS[1])
if current then
  return {0, current, redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return {1, tostring(token)}
`,
  keys: (pipeline: string, _holder: string, _ttlMs: number) => [leaseKey(pipeline), fenceKey(pipeline)],
  args: (_pipeline: string, holder: string, ttlMs: number) => [holder, ttlMs],
  parse: (reply: unknown) => {
    const [won, value, pttl] = reply as [number, unknown, number | undefined]
    return Number(won) === 1
      ? ({ _tag: "Acquired", token: Number(asText(value)) } as const)
      : ({ _tag: "Held", value: asText(value) ?? "", pttl: Number(pttl ?? 0) } as const)
  }
})

/** 1 renewed; else the current value (`false`/nil when the key is gone). */
const renewScript = Script.make({
  name: "lease-renew",
  // allow-oom: a renewal adds no memory, and a lease lost to a full Redis would stop the pipeline for good.
  source: `#!lua flags=allow-oom
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return {current or ''}
`,
  keys: (pipeline: string, _value: string, _ttlMs: number) => [leaseKey(pipeline)],
  args: (_pipeline: string, value: string, ttlMs: number) => [value, ttlMs],
  parse: (reply: unknown) =>
    reply === 1 || reply === "1"
      ? ({ _tag: "Renewed" } as const)
      : ({ _tag: "NotOurs", current: asText((reply as Array<unknown>)[0]) ?? "" } as const)
})

/** Compare-and-delete: removes the lease only if it is still ours. */
const releaseScript = Script.make({
  name: "lease-release",
  source: `#!lua flags=allow-oom
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`,
  keys: (pipeline: string, _value: string) => [leaseKey(pipeline)],
  args: (_pipeline: string, value: string) => [value],
  parse: (reply: unknown) => Number(reply) === 1
})

const parseValue = (value: string): { readonly holder: string; readonly token: number } => {
  const space = value.lastIndexOf(" ")
  return space < 0
    ? { holder: value, token: Number.NaN }
    : { holder: value.slice(0, space), token: Number(value.slice(space + 1)) }
}

// ---------------------------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------------------------

/**
 * Options of {@link acquire}: the pipeline whose lease is taken, and how long it lives, how often it is renewed and
 * how often a standby tries.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  readonly pipeline: string
  /** How long the lease lives without a renewal: how long a standby waits after the holder dies. Default 10 seconds. */
  readonly ttl?: Duration.Input
  /** How often the holder renews. Default `ttl / 3`. Below `ttl`. */
  readonly renewEvery?: Duration.Input
  /** Longest wait between two attempts of a standby (it also tries as soon as the holder's ttl runs out). Default `renewEvery`. */
  readonly pollEvery?: Duration.Input
  /** Names this process in the lease (shown to the others). Default `<hostname>:<pid>:<random>`. */
  readonly holder?: string
}

const isPositiveDuration = (u: unknown): u is Duration.Input => {
  try {
    const d = Duration.fromInput(u as Duration.Input)
    return Option.isSome(d) && Duration.isFinite(d.value) && Duration.toMillis(d.value) >= 1
  } catch {
    return false
  }
}

const PositiveDuration = Schema.declare(isPositiveDuration, {
  expected: `a positive finite duration such as "10 seconds"`
})

const NonEmpty = Schema.String.check(Schema.makeFilter((s: string) => s !== "" || "must be a non-empty string"))

const OptionsSchema = Schema.Struct({
  pipeline: NonEmpty,
  ttl: Schema.optionalKey(PositiveDuration),
  renewEvery: Schema.optionalKey(PositiveDuration),
  pollEvery: Schema.optionalKey(PositiveDuration),
  holder: Schema.optionalKey(
    NonEmpty.check(Schema.makeFilter((s: string) => !/\s/.test(s) || "must not contain spaces"))
  )
})

const decode = ConfigError.decoder(COMPONENT, OptionsSchema)

const millis = (d: Duration.Input) => Math.round(Duration.toMillis(Duration.fromInputUnsafe(d)))

// ---------------------------------------------------------------------------------------------------------------
// The lease
// ---------------------------------------------------------------------------------------------------------------

/**
 * A held lease.
 *
 * @since 0.1.0
 * @category models
 */
export interface Lease {
  readonly pipeline: string
  /** The fencing token: strictly greater than every earlier holder's. Pass it to the write script. */
  readonly token: number
  /** Who holds it: this process's name. */
  readonly holder: string
  /** Fails with {@link LeaseLost} once a renewal finds the lease gone or taken, or none went through for a ttl. */
  readonly lost: Effect.Effect<never, LeaseLost>
}

/** Errors that may go away: retried while waiting and while renewing, up to the ttl. */
const isTransient = (error: RedisError) =>
  error._tag === "RedisUnavailable" ||
  error._tag === "RedisTimeout" ||
  error._tag === "RedisReadOnly" ||
  error._tag === "RedisClusterRedirect" ||
  error._tag === "RedisOutOfMemory"

/**
 * Waits until this process holds the pipeline's lease, then keeps it renewed in a background fiber until the scope
 * closes, when it is released (deleted only if still ours, so a standby takes over at once rather than after the
 * ttl). While another process holds it, tries again as soon as that holder's ttl runs out and at least every
 * `pollEvery`. Errors of an unreachable Redis are retried while waiting; others (`NOPERM`, a configuration problem)
 * fail the wait.
 *
 * A renewal that fails because Redis is unreachable is tried again until a ttl has passed since the last renewal
 * that went through (counted from when it was sent, so the server's expiry is never earlier than ours); past it one
 * more renewal is sent, and if that fails too the lease counts as lost: `lost` fails and the holder must stop
 * writing. A process that was paused past its ttl thus learns from Redis whether the lease is still its own (nobody
 * took it: it goes on) or who took it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const acquire = (
  options: Options
): Effect.Effect<Lease, ConfigError.ConfigError | RedisError, RedisConnection | Scope.Scope> =>
  Effect.gen(function* () {
    const decoded = yield* decode(options)
    const ttlMs = millis(decoded.ttl ?? Duration.seconds(10))
    const renewMs = decoded.renewEvery === undefined ? Math.max(1, Math.floor(ttlMs / 3)) : millis(decoded.renewEvery)
    if (!(renewMs < ttlMs)) {
      return yield* ConfigError.make(
        COMPONENT,
        ["renewEvery"],
        `must be shorter than ttl (${ttlMs} ms), got ${renewMs} ms`,
        "renew a few times per ttl, e.g. ttl 10 seconds and renewEvery 3 seconds"
      )
    }
    const pollMs = decoded.pollEvery === undefined ? renewMs : millis(decoded.pollEvery)
    const pipeline = decoded.pipeline
    const holder =
      decoded.holder ??
      `${hostname()}:${process.pid}:${(yield* Random.nextIntBetween(0, 0xffffff)).toString(16).padStart(6, "0")}`
    const held = Metric.withAttributes(Metrics.leaseHeld, { pipeline })
    const annotate = Effect.annotateLogs({ pipeline, holder })

    // Wait for the lease.
    yield* Metric.update(held, 0)
    let loggedWaiting = false
    const token = yield* Effect.gen(function* () {
      for (;;) {
        const attempt = yield* Script.run(acquireScript, pipeline, holder, ttlMs).pipe(
          Effect.map(Option.some),
          Effect.catchIf(isTransient, (error) =>
            Effect.logWarning("could not reach Redis for the pipeline lease; trying again", error).pipe(
              Effect.as(Option.none())
            )
          )
        )
        if (Option.isSome(attempt) && attempt.value._tag === "Acquired") return attempt.value.token
        let waitMs = pollMs
        if (Option.isSome(attempt) && attempt.value._tag === "Held") {
          const other = parseValue(attempt.value.value)
          if (!loggedWaiting) {
            loggedWaiting = true
            yield* Effect.logInfo(`pipeline ${pipeline} is held by ${other.holder}; waiting as a standby`)
          }
          // Try again as soon as the holder's ttl runs out (a dead holder stops renewing), at least every pollEvery.
          if (attempt.value.pttl >= 0) waitMs = Math.min(pollMs, attempt.value.pttl + 1)
        }
        yield* Effect.sleep(Duration.millis(Math.max(1, waitMs)))
      }
    }).pipe(annotate)

    const value = `${holder} ${token}`
    const lost = yield* Deferred.make<never, LeaseLost>()
    yield* Metric.update(held, 1)
    yield* Effect.logInfo(`holding the lease of pipeline ${pipeline} (token ${token})`).pipe(annotate)

    const lose = (error: LeaseLost) =>
      Effect.all([
        Deferred.fail(lost, error),
        Metric.update(held, 0),
        Metric.update(Metric.withAttributes(Metrics.leaseLost, { pipeline, reason: error.reason }), 1),
        Effect.logError(error.message)
      ]).pipe(annotate)

    // Renew until lost (or interrupted when the scope closes).
    const renewal = Effect.gen(function* () {
      // The server's expiry is at least this plus the ttl: the last renewal that went through was sent at this time.
      let renewedSentAt = yield* Clock.currentTimeMillis
      for (;;) {
        const now = yield* Clock.currentTimeMillis
        const deadline = renewedSentAt + ttlMs
        yield* Effect.sleep(Duration.millis(Math.max(1, Math.min(renewMs, deadline - now))))
        const sentAt = yield* Clock.currentTimeMillis
        // Past the deadline (Redis unreachable, or this process paused): one more renewal asks Redis. Still ours, it
        // never expired and nobody took over; taken, the holder is named; failed, the lease may be anyone's now.
        const late = sentAt >= deadline
        const result = yield* Script.run(renewScript, pipeline, value, ttlMs).pipe(Effect.result)
        if (result._tag === "Failure" && late) {
          return yield* lose(new LeaseLost({ pipeline, reason: "unreachable", cause: result.failure }))
        }
        if (result._tag === "Failure") {
          yield* Effect.logWarning(
            "renewing the pipeline lease failed; trying again until its ttl",
            result.failure
          ).pipe(annotate)
          continue
        }
        if (result.success._tag === "Renewed") {
          renewedSentAt = sentAt
          continue
        }
        const current = result.success.current
        if (current === "") return yield* lose(new LeaseLost({ pipeline, reason: "expired" }))
        const other = parseValue(current)
        return yield* lose(
          new LeaseLost({
            pipeline,
            reason: "taken",
            holder: other.holder,
            ...(Number.isFinite(other.token) ? { token: other.token } : {})
          })
        )
      }
    })
    yield* Effect.forkScoped(renewal)

    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        yield* Metric.update(held, 0)
        if (yield* Deferred.isDone(lost)) return
        const released = yield* Script.run(releaseScript, pipeline, value).pipe(
          Effect.catch((error) =>
            Effect.logWarning("releasing the pipeline lease failed; it expires after its ttl", error).pipe(
              Effect.as(false)
            )
          )
        )
        if (released) yield* Effect.logInfo(`released the lease of pipeline ${pipeline}`)
      }).pipe(annotate)
    )

    return { pipeline, token, holder, lost: Deferred.await(lost) } satisfies Lease
  })

/**
 * Who holds the pipeline's lease now, and with which token; `None` when nobody does.
 *
 * @since 0.1.0
 * @category inspecting
 */
export const current = (
  pipeline: string
): Effect.Effect<Option.Option<{ readonly holder: string; readonly token: number }>, RedisError, RedisConnection> =>
  StreamAdmin.command("GET", leaseKey(pipeline), [leaseKey(pipeline)], asText).pipe(
    Effect.map((value) => (value === undefined ? Option.none() : Option.some(parseValue(value))))
  )
