/**
 * A plain `XREAD` subscription to a Redis stream: no consumer group, no acknowledgement. Every entry after a given
 * id, then new ones as they arrive, for readers that keep their own position (a dashboard, a WebSocket that resumes
 * from the last entry its page saw). For work shared by consumers with redelivery and a dead-letter stream, use a
 * group: `RedisStreamConsumer`.
 *
 * @example
 * ```ts
 * RedisStreamSubscription.subscribe({ stream: "orders.events", from: "0-0" }).pipe(
 *   Stream.runForEach((entry) => Effect.log(entry.id, entry.event.op))
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as Envelope from "@redflow/core/Envelope"
import * as FailurePolicy from "./FailurePolicy.ts"
import {
  ConsumerConfigError,
  type ConsumerError,
  durationMs,
  nonEmpty,
  positiveInt,
  START_ID
} from "./internal/consumer/settings.ts"
import { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"
import * as References from "./internal/references.ts"
import * as StreamAdmin from "./StreamAdmin.ts"

/**
 * Options of {@link subscribe}: the stream, where to start, the envelope, how many entries one read takes, how long
 * it blocks, and retry overrides.
 *
 * @since 0.1.0
 * @category options
 */
export interface SubscribeOptions {
  readonly stream: string
  /** `$` (only entries added from now on, the default), `0-0` (the whole stream), or an id (entries after it). */
  readonly from?: string
  readonly envelope?: Envelope.Format
  /** Most entries per read. Default 100. */
  readonly count?: number
  /** How long one `XREAD` blocks. Default 2 seconds. */
  readonly block?: Duration.Input
  readonly policies?: Partial<FailurePolicy.FailurePolicies>
}

/**
 * One entry of a plain subscription. Pass its `id` as `from` to resume after it.
 *
 * @since 0.1.0
 * @category models
 */
export interface SubscriptionEntry {
  readonly stream: string
  readonly id: string
  readonly event: CdcEvent
  readonly fields: Readonly<Record<string, string>>
}

/**
 * A plain `XREAD` subscription (no group, no acknowledgement): every entry after `from`, then new ones as they
 * arrive. `$` is resolved to the stream's last id at the start, so nothing added between two reads is missed, and
 * the stream resumes from the last id it emitted after a Redis error. An entry the sink wrote by reference
 * (`largeEvents: "reference"`: a `ref` field naming the key of its body) gets its body read back, with one `MGET` per
 * read. Entries that do not decode, and those whose body is gone (read after `largeEventTtl`), are skipped with a
 * warning that names them (a subscription has no dead-letter stream: use a group for that).
 *
 * @since 0.1.0
 * @category constructors
 */
export const subscribe = (
  options: SubscribeOptions
): Stream.Stream<SubscriptionEntry, ConsumerError, RedisConnection> =>
  Stream.unwrap(
    Effect.gen(function* () {
      const stream = yield* nonEmpty("stream", options.stream)
      const from = options.from ?? "$"
      if (!START_ID.test(from) && from !== "0-0") {
        return yield* new ConsumerConfigError({
          field: "from",
          message: `from must be "$", "0-0" or an entry id, got ${JSON.stringify(from)}`
        })
      }
      const envelope = Envelope.make(options.envelope ?? "native")
      const count = yield* positiveInt("count", options.count, 100)
      const blockMs = yield* durationMs("block", options.block, 2_000)
      const redis = yield* RedisConnection
      const policies = FailurePolicy.make(options.policies ?? {}, redis.topology)
      const reader = yield* redis.dedicated({
        commandTimeout: Duration.millis(blockMs + redis.resolved.commandTimeoutMs)
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => reader.client.disconnect()))
      const retrying = <A>(effect: Effect.Effect<A, RedisError, RedisConnection>) =>
        effect.pipe(Effect.retry(FailurePolicy.schedule(policies)), Effect.provideService(RedisConnection, reader))
      let cursor = from === "$" ? Option.getOrElse(yield* retrying(StreamAdmin.lastId(stream)), () => "0-0") : from
      const pull = Effect.gen(function* () {
        for (;;) {
          const entries = yield* retrying(StreamAdmin.read(stream, cursor, { count, block: blockMs }))
          if (entries.length === 0) continue
          cursor = entries[entries.length - 1]!.id
          const bodies = yield* retrying(referencedBodies(entries))
          const out: Array<SubscriptionEntry> = []
          for (const entry of entries) {
            const fields = entry.fields ?? {}
            const body = fields.event ?? bodies.get(entry.id)
            const decoded =
              body !== undefined
                ? Result.mapError(envelope.decodeResult(body), (e) => e.message)
                : fields[References.REF_FIELD] !== undefined
                  ? Result.fail(
                      `its body, written by reference under ${fields[References.REF_FIELD]}, is gone (kept for the sink's largeEventTtl)`
                    )
                  : Result.fail("the entry has no event field")
            if (Result.isFailure(decoded)) {
              yield* Effect.logWarning(`skipping entry ${entry.id} of ${stream}: ${decoded.failure}`)
              continue
            }
            out.push({ stream, id: entry.id, event: decoded.success, fields })
          }
          if (out.length > 0) return out as unknown as readonly [SubscriptionEntry, ...Array<SubscriptionEntry>]
        }
      })
      return Stream.fromPull(Effect.succeed(pull))
    })
  )

/**
 * The bodies of a read's entries written by reference, by entry id, in one `MGET`; an entry whose body is gone has
 * none.
 */
const referencedBodies = (
  entries: ReadonlyArray<StreamAdmin.GroupEntry>
): Effect.Effect<ReadonlyMap<string, string>, RedisError, RedisConnection> => {
  const refs = entries.filter((e) => e.fields !== undefined && References.isReference(e.fields))
  if (refs.length === 0) return Effect.succeed(new Map())
  return Effect.map(References.readBodies(refs.map((e) => e.fields![References.REF_FIELD]!)), (bodies) => {
    const out = new Map<string, string>()
    bodies.forEach((body, i) => {
      if (body !== undefined) out.set(refs[i]!.id, body)
    })
    return out
  })
}
