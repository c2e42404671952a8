/**
 * What the commands that run the sink (`produce`, `run`, `demo`) share: the synthetic source's and the sink's options
 * checked with the flag of a rejected value named, the tally of the batches delivered, the streams' lengths at the
 * end, and the line a standby says under `--lease`.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ConfigError from "@redflow/core/ConfigError"
import * as Position from "@redflow/core/Position"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import { RedisConnection } from "@redflow/redis/RedisConnection"
import * as PipelineLease from "@redflow/redis/PipelineLease"
import * as RedisStreamSink from "@redflow/redis/RedisStreamSink"
import { UsageError } from "./errors.ts"
import * as Flags from "./flags.ts"
import * as OptionFlags from "./optionFlags.ts"
import * as Output from "./output.ts"

const decodeSourceOptions = ConfigError.decoder("SyntheticSource", SyntheticSource.Options)

/** The synthetic source's options from the flags, validated (an invalid value names its flag). */
export const sourceOptions = (input: {
  readonly events: number
  readonly rate: Option.Option<number>
  readonly tables: Option.Option<ReadonlyArray<string>>
  readonly payloadBytes: Option.Option<number>
  readonly seed: number
}): Effect.Effect<SyntheticSource.Options, UsageError> => {
  const raw = {
    count: input.events,
    seed: input.seed,
    ...Option.match(Flags.pace(input.rate), { onNone: () => ({}), onSome: (r) => ({ ratePerSecond: r }) }),
    ...Option.match(input.tables, { onNone: () => ({}), onSome: (t) => ({ tables: t }) }),
    ...Option.match(input.payloadBytes, { onNone: () => ({}), onSome: (b) => ({ payloadBytes: b }) })
  }
  return Effect.catchTag(decodeSourceOptions(raw), "ConfigError", (e) => Effect.fail(OptionFlags.toUsageError(e)))
}

/** Validates the sink options, naming the flag of a rejected value. */
export const validateSink = (options: RedisStreamSink.Options): Effect.Effect<void, UsageError> =>
  RedisStreamSink.validateOptions(options).pipe(
    Effect.mapError((e) => {
      const { field, reason } = OptionFlags.sinkRejection(e)
      return new UsageError({ flag: OptionFlags.sinkFlagOf(field), message: reason })
    })
  )

/** What a run of the sink delivered, updated batch by batch. */
export interface Tally {
  events: number
  batches: number
  written: number
  skipped: number
  deadLettered: number
  position: Option.Option<Position.Position>
  readonly streams: Map<string, { written: number; skipped: number }>
}

export const emptyTally = (): Tally => ({
  events: 0,
  batches: 0,
  written: 0,
  skipped: 0,
  deadLettered: 0,
  position: Option.none(),
  streams: new Map()
})

export const addBatch = (tally: Tally, batch: RedisStreamSink.CommittedBatch) => {
  tally.events += batch.events
  tally.batches += 1
  tally.deadLettered += batch.deadLettered
  tally.position = Option.some(batch.position)
  for (const s of batch.streams) {
    tally.written += s.written
    tally.skipped += s.skipped
    const prior = tally.streams.get(s.stream) ?? { written: 0, skipped: 0 }
    tally.streams.set(s.stream, { written: prior.written + s.written, skipped: prior.skipped + s.skipped })
  }
}

export const sequenceOf = (position: Option.Option<Position.Position>): number | null =>
  Option.match(position, { onNone: () => null, onSome: (p) => Number(Position.toSequence(p)) })

/** The length of each stream now. */
export const streamLengths = (streams: Iterable<string>) =>
  RedisConnection.use((redis) =>
    Effect.forEach(
      [...streams].sort(),
      (stream) =>
        Effect.map(
          redis.run((client) => client.xlen(stream)),
          (length) => ({ stream, length })
        ),
      { concurrency: 8 }
    )
  )

/**
 * Under `--lease`, before the sink waits for the lease: when another process holds it, says once that this one stands
 * by and who holds it (`detail`: what the command holds back meanwhile). A lease that cannot be read says nothing: the
 * sink's own wait reports Redis's errors.
 */
export const announceStandby = (pipeline: string, detail = "") =>
  Effect.flatMap(
    PipelineLease.current(pipeline).pipe(Effect.orElseSucceed(() => Option.none<{ readonly holder: string }>())),
    (holder) =>
      Option.isNone(holder)
        ? Effect.void
        : Output.line(
            `redflow: pipeline ${pipeline}: standby: the lease is held by ${holder.value.holder}; waiting to take over${detail}`
          )
  )
