/**
 * High-water marks: what the sink knows of each stream's mark (see `internal/scripts.ts` for what a mark is and how
 * the script uses it), and the rules that keep it honest.
 *
 * - First contact: before a stream's first write the sink reads its mark with a check-mode call, and in
 *   exactly-once a mark past the checkpoint is verified against the stream ({@link learn}).
 * - Every write states the mark it expects: the one the previous write to the stream leaves ({@link planWrites}).
 * - The marks the sink's own writes leave stay "unsettled" until their batch is checkpointed: a write retried after
 *   a lost reply that finds one of them applied already ({@link appliedEarlier}); any other mark went back (Redis
 *   lost acknowledged writes) or moved (another writer), a {@link HighWaterMarkError}.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Position from "@redflow/core/Position"
import type { RedisConnectionService } from "../../RedisConnection.ts"
import type { RedisError } from "../../RedisError.ts"
import * as PipelineLease from "../../PipelineLease.ts"
import * as Commands from "../commands.ts"
import { highWaterKey } from "../highWater.ts"
import * as Scripts from "../scripts.ts"
import type { SinkSettings } from "./options.ts"
import type { Entry } from "./prepare.ts"
import type { Report } from "./report.ts"
import { send, worse } from "./send.ts"

/**
 * A high-water mark the sink cannot trust; it stops rather than skip events by it or write past a loss unnoticed.
 * - `malformed`: the mark is not `<position> <entry id>` of this pipeline's width;
 * - `unverified`: the mark lies past the checkpoint and the stream does not hold the entry it names with that
 *   position, so exactly-once would skip events no run wrote;
 * - `lost`: the mark went back, or vanished, while the sink was writing: Redis lost acknowledged writes;
 * - `moved`: the mark moved ahead of what this sink wrote: another writer uses the same pipeline name.
 *
 * @since 0.1.0
 * @category errors
 */
export class HighWaterMarkError extends Schema.TaggedError<HighWaterMarkError>()("HighWaterMarkError", {
  reason: Schema.Literals(["malformed", "unverified", "lost", "moved"]),
  stream: Schema.String,
  /** The high-water hash and its field (the pipeline). */
  key: Schema.String,
  field: Schema.String,
  /** What the mark holds ("" when it is absent). */
  found: Schema.String,
  /** What the sink expected it to hold ("" when nothing, or not known). */
  expected: Schema.String,
  message: Schema.String
}) {}

/** A batch handed to Redis and not yet acknowledged. */
export interface InFlight {
  /** Completed once every stream of the batch is written (before its checkpoint). */
  readonly written: Deferred.Deferred<void>
  /** The mark each of its writes leaves, by stream: unsettled until the batch is checkpointed. */
  readonly leaves: Array<readonly [stream: string, mark: Position.Position]>
}

/** A write: a stream's share of a batch, as a call of the script. */
export interface Write extends Scripts.WriteCall {
  /** The earlier batch still in flight that writes this stream too: this call expects the mark it leaves. */
  predecessor: InFlight | undefined
  /** The highest position among this call's entries. */
  readonly top: Position.Position
  /** The mark this call leaves: the larger of the one it expects and `top`. */
  leaves: Position.Position
  /** How many entries it carries. */
  readonly count: number
}

/** The marks of one sink. */
export interface MarkBook {
  readonly settings: SinkSettings
  readonly redis: RedisConnectionService
  readonly report: Report
  /**
   * Each stream's mark after the last batch sent to it ("" when none), and that batch while it is in flight. A stream
   * is entered on first contact, before its first write.
   */
  readonly known: Map<string, { readonly mark: Position.Position | ""; readonly by: InFlight | undefined }>
  /**
   * The marks this sink's writes leave that are not yet checkpointed, counted by stream. A write retried after a lost
   * reply may find one of them: its own (it applied), or a later write's, which applied after it (each write expects
   * the mark of the one before). Either means it applied. Any other mark moved under the sink.
   */
  readonly unsettled: Map<string, Map<Position.Position, number>>
  /** The checkpoint this run resumes from (exactly-once): a mark past it is verified at first contact. */
  resumedFrom: Option.Option<Position.Position>
  /** The pipeline lease's fence key and this sink's token, sent with every call once the lease is held. */
  fence: Fence | undefined
}

/** What every script call carries under a pipeline lease. */
export interface Fence {
  readonly key: string
  readonly token: number
}

export const makeBook = (settings: SinkSettings, redis: RedisConnectionService, report: Report): MarkBook => ({
  settings,
  redis,
  report,
  known: new Map(),
  unsettled: new Map(),
  resumedFrom: Option.none(),
  fence: undefined
})

/** A call's keys and header for the fence: the fence key, when a lease is held. */
const fenced = (book: MarkBook) => (book.fence === undefined ? {} : { fenceKey: book.fence.key })

/** The {@link PipelineLease.LeaseFenced} a failed call stands for, when the fence refused it. */
export const fenceRefusal = (book: MarkBook, error: RedisError): PipelineLease.LeaseFenced | undefined =>
  book.fence === undefined
    ? undefined
    : Option.getOrUndefined(PipelineLease.fenced(book.settings.pipeline, book.fence.token, error))

const unsettle = (book: MarkBook, stream: string, mark: Position.Position) => {
  let marks = book.unsettled.get(stream)
  if (marks === undefined) book.unsettled.set(stream, (marks = new Map()))
  marks.set(mark, (marks.get(mark) ?? 0) + 1)
}

const settle = (book: MarkBook, stream: string, mark: Position.Position) => {
  const marks = book.unsettled.get(stream)
  const n = marks?.get(mark) ?? 0
  if (n > 1) marks!.set(mark, n - 1)
  else {
    marks?.delete(mark)
    if (marks?.size === 0) book.unsettled.delete(stream)
  }
}

/** The batch is checkpointed: the marks its writes left are settled. */
export const settleBatch = (book: MarkBook, batch: InFlight): void => {
  for (const [stream, mark] of batch.leaves) settle(book, stream, mark)
}

/** The script's header for a write, or for a check (no entries) with `mode: "check"`. */
export const header = (book: MarkBook, now: number, width: number, mode: "" | "check"): Scripts.WriteHeader => ({
  pipeline: book.settings.pipeline,
  trimStrategy: book.settings.trim.strategy,
  trimOperator: book.settings.trim.operator,
  trimThreshold: book.settings.trim.threshold(now),
  expected: "",
  skip: book.settings.guarantee === "exactly-once",
  width,
  mode,
  traceparent: "",
  refTtl: book.settings.largeEvents === "reference" && mode === "" ? String(book.settings.largeEventTtlMs) : "",
  token: book.fence === undefined ? "" : String(book.fence.token)
})

/** Cuts a batch into one write per stream, each expecting the mark the previous write to its stream leaves. */
export const planWrites = (
  book: MarkBook,
  entries: ReadonlyArray<Entry>,
  now: number,
  self: InFlight
): Array<Write> => {
  const byStream = new Map<
    string,
    {
      entries: Array<Buffer>
      top: Position.Position
      markKey: string
      count: number
      values: number
      refs: Array<string>
    }
  >()
  for (const entry of entries) {
    let group = byStream.get(entry.stream)
    if (group === undefined) {
      group = { entries: [], top: entry.position, markKey: entry.markKey, count: 0, values: 0, refs: [] }
      byStream.set(entry.stream, group)
    }
    group.count++
    if (entry.ref !== undefined) group.refs.push(entry.ref)
    // Encoded into RESP bytes once, here: a retry of the write sends the same bytes (see `commands.ts`).
    group.entries.push(Commands.frameEntry(entry.args))
    group.values += entry.args.length
    entry.args.length = 0
    group.top = Position.max(group.top, entry.position)
  }
  const width = entries[0]!.position.length
  const writes: Array<Write> = []
  for (const [stream, { entries: args, top, markKey, count, values, refs }] of byStream) {
    const prior = book.known.get(stream)!
    const predecessor = prior.by !== undefined && !Deferred.isDoneUnsafe(prior.by.written) ? prior.by : undefined
    const h = header(book, now, width, "")
    h.expected = prior.mark
    const leaves = prior.mark === "" ? top : Position.max(prior.mark, top)
    book.known.set(stream, { mark: leaves, by: self })
    unsettle(book, stream, leaves)
    self.leaves.push([stream, leaves])
    writes.push({
      stream,
      markKey,
      ...fenced(book),
      header: h,
      entries: args,
      values,
      refs,
      predecessor,
      top,
      leaves,
      count
    })
  }
  return writes
}

/** Whether a write refused for finding `found` had applied on an earlier try whose reply was lost. */
export const appliedEarlier = (book: MarkBook, write: Write, found: string): boolean =>
  book.unsettled.get(write.stream)?.has(found as Position.Position) === true &&
  !Position.isAfter(write.leaves, found as Position.Position)

/** Whether a mark found instead of the expected one went back (`lost`) or ahead (`moved`). */
export const lossReason = (write: Write, found: string): "lost" | "moved" =>
  found === "" || Position.isAfter(write.header.expected as Position.Position, found as Position.Position)
    ? "lost"
    : "moved"

/** After a loss under `onDataLoss: "continue"`: the write goes again, expecting the mark found. */
export const writeOnFrom = (book: MarkBook, write: Write, self: InFlight, found: string): void => {
  write.header.expected = found
  settle(book, write.stream, write.leaves)
  write.leaves = found === "" ? write.top : Position.max(found as Position.Position, write.top)
  unsettle(book, write.stream, write.leaves)
  const i = self.leaves.findIndex(([stream]) => stream === write.stream)
  if (i >= 0) self.leaves[i] = [write.stream, write.leaves]
  const known = book.known.get(write.stream)
  if (known?.by === self) book.known.set(write.stream, { mark: write.leaves, by: self })
}

const markLabel = (mark: string) => (mark === "" ? "no mark" : mark)

/** The error for a mark that is malformed, went back or moved, with what to do about it. */
export const markError = (
  settings: SinkSettings,
  call: Scripts.WriteCall,
  reason: "malformed" | "lost" | "moved",
  found: string
): HighWaterMarkError => {
  const key = call.markKey
  const expected = call.header.expected
  const where = `high-water mark ${key} (field ${JSON.stringify(settings.pipeline)}) of stream ${call.stream}`
  const message =
    reason === "malformed"
      ? `${where} holds ${JSON.stringify(found)}, not "<position> <entry id>" with a position of this pipeline's ` +
        `width: it is corrupt, or was written by something else. The sink stopped rather than skip events by it. ` +
        `If the stream holds nothing past the checkpoint, delete it (HDEL ${key} ${settings.pipeline}) and restart.`
      : reason === "lost"
        ? `${where} went back from ${markLabel(expected)} to ${markLabel(found)} while the sink was writing: Redis ` +
          `lost writes it had acknowledged (a restart without persistence, an AOF that missed its last writes, a ` +
          `failover to a replica that was behind), so the checkpoint is past events that are no longer in the ` +
          `stream. Rewind the checkpoint to ${found === "" ? "the start" : found} and restart to write them again, ` +
          `or set onDataLoss: "continue" to write on without them.`
        : `${where} moved from ${markLabel(expected)} to ${found} under the sink, past what it wrote: another ` +
          `writer uses pipeline ${JSON.stringify(settings.pipeline)} on this stream. Give each writer its own ` +
          `pipeline name (one writer per stream and pipeline), or set onDataLoss: "continue" to write on from the new mark.`
  return new HighWaterMarkError({
    reason,
    stream: call.stream,
    key,
    field: settings.pipeline,
    found,
    expected,
    message
  })
}

/** The position an entry's `event` field carries, in any envelope (or a dead-letter body), if it carries one. */
const positionOf = (text: string): string | undefined => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  const read = (o: unknown) =>
    typeof o === "object" && o !== null && typeof (o as { position?: unknown }).position === "string"
      ? (o as { position: string }).position
      : undefined
  const o = value as { payload?: unknown; data?: unknown } | null
  return read(o) ?? read(o?.payload) ?? read(o?.data)
}

/**
 * Runs check-mode calls of the script (permissions, the mark read and its form checked, nothing written), with the
 * failure policies; a malformed mark fails at once, as no retry mends it.
 */
const check = (
  book: MarkBook,
  calls: ReadonlyArray<Scripts.WriteCall>
): Effect.Effect<Array<Scripts.WriteReply>, RedisError | HighWaterMarkError | PipelineLease.LeaseFenced> =>
  Effect.gen(function* () {
    const replies = yield* send(book.redis, calls)
    const out: Array<Scripts.WriteReply> = []
    let worst: RedisError | undefined
    for (let i = 0; i < calls.length; i++) {
      const reply = replies[i]!
      if ("_tag" in reply) {
        // A newer holder took the pipeline over: no retry can mend it.
        const refused = fenceRefusal(book, reply)
        if (refused !== undefined) return refused
        worst = worse(worst, reply)
      } else if (reply.written === Scripts.MARK_MALFORMED) {
        return markError(book.settings, calls[i]!, "malformed", reply.mark)
      } else out.push(reply)
    }
    if (worst !== undefined) return yield* Effect.fail(worst)
    return out
  }).pipe(
    (tried) =>
      book.report.retried("high-water check", () => ({ streams: calls.map((c) => c.stream).join(",") }), tried),
    Effect.tap(() => book.report.onWritten),
    Effect.flatMap((result) => (Array.isArray(result) ? Effect.succeed(result) : Effect.fail(result)))
  )

/**
 * Before anything is written: may this user run the script's commands on the streams known now (constant names and
 * the dead-letter stream)? A stream named by a template is checked the same way at its first write.
 */
export const checkFixedStreams = (
  book: MarkBook
): Effect.Effect<void, RedisError | HighWaterMarkError | PipelineLease.LeaseFenced> =>
  Effect.asVoid(
    check(
      book,
      book.settings.fixedStreams.map((stream) => ({
        stream,
        markKey: highWaterKey(stream)!,
        ...fenced(book),
        header: header(book, 0, 0, "check"),
        entries: [],
        values: 0,
        refs: []
      }))
    )
  )

/**
 * A mark past the checkpoint claims that an earlier run wrote up to it, and exactly-once will skip every event up to
 * it. The claim must hold: the entry the mark names is in the stream and carries that position. Anything else (a mark
 * set by hand, another pipeline's, a stream deleted or trimmed past it) stops the sink.
 */
const verify = (book: MarkBook, call: Scripts.WriteCall, mark: string, entryId: string) =>
  Effect.gen(function* () {
    const entries = yield* book.redis
      .run((client) => client.xrange(call.stream, entryId, entryId) as Promise<Array<[string, Array<string>]>>, {
        command: "XRANGE",
        key: call.stream
      })
      .pipe((tried) => book.report.retried("high-water entry read", () => ({ streams: call.stream }), tried))
    let why: string | undefined
    if (!Array.isArray(entries) || entries.length === 0) {
      why = `the stream has no entry ${entryId} (deleted, or trimmed away)`
    } else {
      const fields = entries[0]![1]
      let position: string | undefined
      for (let f = 0; Array.isArray(fields) && f + 1 < fields.length; f += 2) {
        if (fields[f] === "event") position = positionOf(String(fields[f + 1]))
      }
      if (position !== mark) {
        why = `its entry ${entryId} carries ${position === undefined ? "no readable position" : `position ${position}`}`
      }
    }
    if (why === undefined) return
    const { pipeline } = book.settings
    const key = call.markKey
    const from = Option.match(book.resumedFrom, { onNone: () => "no checkpoint", onSome: (p) => `checkpoint ${p}` })
    return yield* Effect.fail(
      new HighWaterMarkError({
        reason: "unverified",
        stream: call.stream,
        key,
        field: pipeline,
        found: mark,
        expected: "",
        message:
          `high-water mark ${key} (field ${JSON.stringify(pipeline)}) says stream ${call.stream} holds ` +
          `position ${mark}, past the ${from}, but ${why}: exactly-once would skip every event up to ${mark} ` +
          `that no run wrote. The mark is corrupt, belongs to another pipeline, or its entries are gone. If the ` +
          `stream holds nothing past the checkpoint, delete it (HDEL ${key} ${pipeline}) and restart.`
      })
    )
  })

/** First contact with the streams of a batch not seen yet: their marks, checked, before their first write. */
const learnNew = (book: MarkBook, entries: ReadonlyArray<Entry>) =>
  Effect.gen(function* () {
    const calls: Array<Scripts.WriteCall> = []
    for (const e of entries) {
      if (book.known.has(e.stream) || calls.some((c) => c.stream === e.stream)) continue
      calls.push({
        stream: e.stream,
        markKey: e.markKey,
        ...fenced(book),
        header: header(book, 0, e.position.length, "check"),
        entries: [],
        values: 0,
        refs: []
      })
    }
    if (calls.length === 0) return
    const replies = yield* check(book, calls)
    for (let i = 0; i < calls.length; i++) {
      const { lastId: entryId, mark } = replies[i]!
      const past = Option.match(book.resumedFrom, {
        onNone: () => true,
        onSome: (from) => Position.isAfter(mark as Position.Position, from)
      })
      if (book.settings.guarantee === "exactly-once" && mark !== "" && past)
        yield* verify(book, calls[i]!, mark, entryId)
      book.known.set(calls[i]!.stream, { mark: mark as Position.Position | "", by: undefined })
    }
  })

/** Learns the marks of the batch's streams not seen yet (see {@link learnNew}). */
export const learn = (
  book: MarkBook,
  entries: ReadonlyArray<Entry>
): Effect.Effect<void, RedisError | HighWaterMarkError | PipelineLease.LeaseFenced> => {
  // Every batch but a stream's first returns at once, without a generator holding the batch (see prepare.ts on
  // what V8 does with objects that live long).
  for (const e of entries) if (!book.known.has(e.stream)) return learnNew(book, entries)
  return Effect.void
}
