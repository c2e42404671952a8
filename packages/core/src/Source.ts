/**
 * The contract every change source fulfils: a named, resumable stream of change events.
 *
 * @since 0.1.0
 */
import type * as Option from "effect/Option"
import type * as Stream from "effect/Stream"
import type { CdcEvent } from "./CdcEvent.ts"
import type { Position } from "./Position.ts"

/**
 * A source of change events.
 *
 * `stream(from)` emits, in position order, the events strictly after `from` (all of them for `Option.none()`), so a
 * pipeline resumes from its last committed checkpoint without gaps; a source that cannot honour a position it no
 * longer retains should fail rather than skip.
 *
 * @example
 * ```ts
 * const source: Source = SyntheticSource.source({ count: 1000 })
 * const events = source.stream(yield* checkpoints.load(source.name))
 * ```
 */
export interface Source<E = never, R = never> {
  /** A stable name, used as the checkpoint key. */
  readonly name: string
  stream(from: Option.Option<Position>): Stream.Stream<CdcEvent, E, R>
}
