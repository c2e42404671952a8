/**
 * The contract every change source fulfils: a named, resumable stream of change events, told what is durable
 * downstream.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Stream from "effect/Stream"
import type { CdcEvent } from "./CdcEvent.ts"
import { CheckpointStore } from "./CheckpointStore.ts"
import type { Position } from "./Position.ts"

/**
 * A source of change events.
 *
 * `stream(from)` emits, in position order, the events strictly after `from` (all of them for `Option.none()`), so a
 * pipeline resumes from its last committed checkpoint without gaps; a source that cannot honour a position it no
 * longer retains should fail rather than skip.
 *
 * `acknowledge(P)` is "durable up to P": every event at or below `P` is committed downstream (the sink wrote it and
 * its checkpoint is stored), so the source may release that part of its log. A database source needs it (PostgreSQL
 * moves its replication slot there and no further); a source with nothing to release leaves it out. It is called
 * with positions that never go backwards, and only after the commit that made them durable succeeded.
 *
 * @example
 * ```ts
 * const source: Source = SyntheticSource.source({ count: 1000 })
 * const events = source.stream(yield* checkpoints.load(source.name))
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Source<E = never, R = never> {
  /** A stable name, used as the checkpoint key. */
  readonly name: string
  stream(from: Option.Option<Position>): Stream.Stream<CdcEvent, E, R>
  readonly acknowledge?: ((position: Position) => Effect.Effect<void>) | undefined
}

/**
 * Carries "durable up to P" from the checkpoint store to a source: inside `effect`, every successful commit of
 * `key` (the pipeline's checkpoint key) is followed by `source.acknowledge(position)`. A failed commit acknowledges
 * nothing, and a position below one already acknowledged (an operator rewinding the checkpoint) is not passed on.
 * The sink needs no change for it: it only ever commits what Redis acknowledged.
 *
 * @example
 * ```ts
 * yield* source.stream(from).pipe(Stream.run(RedisStreamSink.make(options)), Source.acknowledgeCommits(source, "orders"))
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const acknowledgeCommits =
  (source: Pick<Source<unknown, unknown>, "acknowledge">, key: string) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | CheckpointStore> => {
    const acknowledge = source.acknowledge
    if (acknowledge === undefined) return effect
    return Effect.gen(function* () {
      const store = yield* CheckpointStore
      let highest: Position | undefined
      return yield* Effect.provideService(
        effect,
        CheckpointStore,
        CheckpointStore.of({
          load: store.load,
          commit: (committed, position) =>
            committed !== key
              ? store.commit(committed, position)
              : Effect.flatMap(store.commit(committed, position), () => {
                  if (highest !== undefined && !isAfterOrEqual(position, highest)) return Effect.void
                  highest = position
                  return acknowledge(position)
                })
        })
      )
    })
  }

const isAfterOrEqual = (a: Position, b: Position): boolean => (a.length !== b.length ? a.length > b.length : a >= b)
