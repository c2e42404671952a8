/**
 * A deterministic, replayable source of table changes for demos, tests and benchmarks.
 *
 * The event at sequence `n` (1-based) is a pure function of `(seed, n)` and the identity options: its position is
 * `Position.fromSequence(n)`, its timestamps are `baseTimeMs + n`, and it is computed without replaying earlier
 * events, so resuming from any position is instant and an endless run keeps constant memory. About 60% of events
 * are inserts, 30% updates and 10% deletes; each table starts with inserts, updates and deletes touch rows inserted
 * earlier, and deleted rows are never touched again. See `internal/synthetic.ts` for the layout.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type * as Arr from "effect/Array"
import type { CdcEvent } from "./CdcEvent.ts"
import * as Position from "./Position.ts"
import type { Source } from "./Source.ts"
import * as Synthetic from "./internal/synthetic.ts"

const NonNegativeInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))

/**
 * Options of {@link make}; every field is optional (defaults in {@link defaults}).
 *
 * @since 0.1.0
 * @category options
 */
export const Options = Schema.Struct({
  /** Table names. `customers`, `orders` and `payments` get realistic columns, other names a generic row. */
  tables: Schema.optionalKey(Schema.Array(Schema.NonEmptyString).check(Schema.isMinLength(1))),
  /** Total events of the run, counted from sequence 1 (so a resumed run emits fewer); absent = endless. */
  count: Schema.optionalKey(NonNegativeInt),
  /** Pace the stream to this many events per second (by `Clock`, so `TestClock` drives it). */
  ratePerSecond: Schema.optionalKey(Schema.Finite.check(Schema.isGreaterThan(0))),
  /** Approximate JSON size of each row image, reached by padding a `notes` text column. */
  payloadBytes: Schema.optionalKey(NonNegativeInt),
  seed: Schema.optionalKey(Schema.Int),
  /** Resume after this position: emit exactly the events that follow it. */
  from: Schema.optionalKey(Position.Position),
  connector: Schema.optionalKey(Schema.NonEmptyString),
  name: Schema.optionalKey(Schema.NonEmptyString),
  db: Schema.optionalKey(Schema.NonEmptyString),
  /** A database schema (PostgreSQL style) put in `source.schema`; absent by default (MySQL style). */
  schema: Schema.optionalKey(Schema.NonEmptyString),
  /** Group consecutive events into transactions of this size (`transaction` and `source.txId` set). */
  transactionSize: Schema.optionalKey(PositiveInt),
  /** Largest chunk the stream emits. */
  chunkSize: Schema.optionalKey(PositiveInt),
  /** Timestamp of sequence 0: event `n` has `ts_ms = baseTimeMs + n`. */
  baseTimeMs: Schema.optionalKey(Schema.Int)
})

/**
 * Options of {@link make}, as decoded by the {@link Options} schema.
 *
 * @since 0.1.0
 * @category options
 */
export type Options = typeof Options.Type

/**
 * The values of the options {@link make} is not given.
 *
 * @since 0.1.0
 * @category options
 */
export const defaults = {
  tables: ["customers", "orders", "payments"],
  seed: 1,
  connector: "synthetic",
  name: "synthetic",
  db: "shop",
  chunkSize: 1024,
  baseTimeMs: Date.UTC(2025, 0, 1)
} as const

/** Chunks are sized so a paced stream wakes up about every 10 ms. */
const PACING_TICKS_PER_SECOND = 100

/**
 * About the most bytes of row images in one chunk (an update carries two): with large payloads a chunk holds a few
 * events rather than `chunkSize` of them, so what the source hands over at once stays small.
 */
const CHUNK_BYTES = 4 * 1024 * 1024

const decodeOptions = Schema.decodeUnknownResult(Options)

const generatorOf = (o: Options): Synthetic.Generator =>
  Synthetic.make({
    tables: o.tables ?? defaults.tables,
    seed: o.seed ?? defaults.seed,
    payloadBytes: o.payloadBytes,
    connector: o.connector ?? defaults.connector,
    name: o.name ?? defaults.name,
    db: o.db ?? defaults.db,
    schema: o.schema,
    baseTimeMs: o.baseTimeMs ?? defaults.baseTimeMs,
    transactionSize: o.transactionSize
  })

/**
 * A stream of synthetic change events.
 *
 * Invalid options are a defect of the stream (the options are code, not input); decode external configuration
 * with {@link Options} first to get a typed error.
 *
 * @example
 * ```ts
 * const first1000 = SyntheticSource.make({ count: 1000, seed: 7 })
 * const resumed = SyntheticSource.make({ count: 1000, seed: 7, from: Position.fromSequence(500) }) // 501..1000
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Stream.Stream<CdcEvent> =>
  Stream.suspend(() => {
    const decoded = decodeOptions(options)
    if (Result.isFailure(decoded)) return Stream.die(decoded.failure)
    const o = decoded.success
    const generator = generatorOf(o)
    const last = o.count ?? Number.MAX_SAFE_INTEGER
    const first = o.from === undefined ? 1 : Number(Position.toSequence(o.from)) + 1
    const rate = o.ratePerSecond
    const payload = o.payloadBytes ?? 0
    const maxChunk = Math.min(
      o.chunkSize ?? defaults.chunkSize,
      payload === 0 ? Number.MAX_SAFE_INTEGER : Math.max(1, Math.floor(CHUNK_BYTES / (2 * payload)))
    )
    const chunkSize =
      rate === undefined ? maxChunk : Math.max(1, Math.min(maxChunk, Math.round(rate / PACING_TICKS_PER_SECOND)))

    return Stream.fromPull(
      Effect.gen(function* () {
        let next = first
        let emitted = 0
        const emit = Effect.sync(() => {
          const end = Math.min(last, next + chunkSize - 1)
          const chunk = generator.range(next, end) as unknown as Arr.NonEmptyReadonlyArray<CdcEvent>
          emitted += chunk.length
          next = end + 1
          return chunk
        })
        if (rate === undefined) return Effect.suspend(() => (next > last ? Cause.done() : emit))
        // Drift-free pacing: a chunk is due at start + (events before it) / rate. A consumer that fell behind (a
        // sink waiting out an outage) then gets chunks back to back until it catches up, like a database backlog.
        const startedAt = yield* Clock.currentTimeMillis
        return Effect.suspend(() => {
          if (next > last) return Cause.done()
          return Effect.flatMap(Clock.currentTimeMillis, (now) => {
            const due = startedAt + (emitted * 1000) / rate
            return due > now ? Effect.andThen(Effect.sleep(due - now), emit) : emit
          })
        })
      })
    )
  })

/**
 * The synthetic source as a {@link Source}: `stream(from)` resumes after `from`, overriding `options.from`.
 *
 * @example
 * ```ts
 * const source = SyntheticSource.source({ count: 10_000 })
 * const stream = source.stream(Option.some(Position.fromSequence(42))) // sequences 43..10000
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const source = (options: Options = {}): Source => ({
  name: options.name ?? defaults.name,
  stream: (from) => {
    const { from: _ignored, ...rest } = options
    return make(Option.isSome(from) ? { ...rest, from: from.value } : rest)
  }
})

/**
 * The event at sequence `n` (1-based) of a run with these options, without running a stream.
 *
 * @since 0.1.0
 * @category utils
 */
export const eventAt = (n: number, options: Omit<Options, "from" | "count" | "ratePerSecond"> = {}): CdcEvent => {
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`a synthetic sequence is an integer >= 1, got ${n}`)
  // Callers look up many events with one options object: build its generator (padding text included) once.
  let generator = generators.get(options)
  if (generator === undefined) {
    generator = generatorOf(Schema.decodeUnknownSync(Options)(options))
    generators.set(options, generator)
  }
  return generator.event(n)
}

const generators = new WeakMap<object, Synthetic.Generator>()
