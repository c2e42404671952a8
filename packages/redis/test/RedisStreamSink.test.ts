import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Exit, Option, Stream } from "effect"
import { CdcEvent, Position } from "@redflow/core"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as Envelope from "@redflow/core/Envelope"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../src/RedisConnection.ts"
import * as RedisStreamSink from "../src/RedisStreamSink.ts"
import { readStream, sinkLayers, uniquePrefix, withClient } from "./support.ts"

const TABLES = ["customers", "orders", "payments"] as const

layer(RedisTestServer.layer(), { excludeTestServices: true })("RedisStreamSink against a real Redis", (it) => {
  it.effect("10,000 events over three tables land in their streams in source order, every field as specified", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const prefix = uniquePrefix("order")
      const events = Array.from(yield* Stream.runCollect(SyntheticSource.make({ count: 10_000, seed: 7 })))
      const summary = yield* Stream.fromIterable(events).pipe(
        Stream.run(RedisStreamSink.make({ stream: `${prefix}.\${source.table}`, key: "${key.id}" })),
        Effect.provide(sinkLayers(url))
      )
      expect(summary.events).toBe(10_000)
      expect(summary.written).toBe(10_000)
      expect(summary.deadLettered).toBe(0)
      expect(summary.position).toEqual(Option.some(Position.fromSequence(10_000)))

      for (const table of TABLES) {
        const expected = events.filter((e) => e.source.table === table)
        const entries = yield* Effect.promise(() => readStream(url, `${prefix}.${table}`))
        expect(entries.length).toBe(expected.length)
        expect(expected.length).toBeGreaterThan(1000)
        entries.forEach((entry, i) => {
          const event = expected[i]!
          // The contract's consumers (docs/DESIGN.md) read `event`; the small fields route and dedupe without parsing.
          expect(Envelope.native.decodeSync(entry.fields.event!)).toEqual(event)
          expect(entry.fields).toEqual({
            event: entry.fields.event,
            id: event.id,
            op: event.op,
            table,
            key: String(CdcEvent.row(event)!.id)
          })
        })
      }
    })
  )

  it.effect("the checkpoint equals the position of the last acknowledged event after every batch", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const prefix = uniquePrefix("ckpt")
      const batches = yield* Effect.gen(function* () {
        const store = yield* CheckpointStore.CheckpointStore
        return yield* SyntheticSource.make({ count: 5_000, chunkSize: 97 }).pipe(
          RedisStreamSink.deliver({
            stream: `${prefix}.\${source.table}`,
            pipeline: "ckpt",
            batch: { maxEvents: 250 }
          }),
          Stream.mapEffect((batch) =>
            Effect.gen(function* () {
              const checkpoint = yield* store.load("ckpt")
              const lengths = yield* Effect.promise(() =>
                withClient(url, (c) => Promise.all(TABLES.map((t) => c.xlen(`${prefix}.${t}`))))
              )
              return { batch, checkpoint, landed: lengths.reduce((a, b) => a + b, 0) }
            })
          ),
          Stream.runCollect
        )
      }).pipe(Effect.provide(sinkLayers(url)))
      expect(batches.length).toBeGreaterThanOrEqual(20)
      let previous = 0n
      let ahead = 0n
      for (const { batch, checkpoint, landed } of batches) {
        // At-least-once splits maxEvents over the two batches it keeps in flight.
        expect(batch.events).toBeLessThanOrEqual(125)
        // The checkpoint committed for the batch is its own position, or a later one when batches written behind it
        // shared the checkpoint write; it is what the store holds when the batch is emitted.
        expect(checkpoint).toEqual(Option.some(batch.checkpoint))
        expect(Position.compare(batch.position, batch.checkpoint)).toBeLessThanOrEqual(0)
        const sequence = Position.toSequence(batch.checkpoint)
        // Everything up to the checkpoint is in Redis; past it, at most the batches in flight, so a crash replays no
        // more than maxEvents (250) events.
        expect(BigInt(landed)).toBeGreaterThanOrEqual(sequence)
        expect(BigInt(landed) - sequence).toBeLessThanOrEqual(250n)
        if (BigInt(landed) > sequence) ahead++
        // Batches come in order, each right after the previous one.
        expect(Position.toSequence(batch.position) - previous).toBe(BigInt(batch.events))
        previous = Position.toSequence(batch.position)
      }
      expect(previous).toBe(5_000n)
      // The next batch was usually already written while one was checkpointed: the pipelining is real.
      expect(ahead).toBeGreaterThan(0n)
    })
  )

  for (const guarantee of ["at-least-once", "exactly-once"] as const) {
    it.effect(
      `${guarantee}: a run killed with SIGKILL half-way resumes from its file checkpoint; nothing missing`,
      () =>
        Effect.gen(function* () {
          const { url } = yield* RedisTestServer.RedisTestServer
          const prefix = uniquePrefix(`kill-${guarantee}`)
          const dir = mkdtempSync(join(tmpdir(), "redflow-kill-"))
          const file = join(dir, "checkpoint.json")
          const count = 20_000
          const batchSize = 500
          yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
          const checkpointed = () => {
            try {
              const content = JSON.parse(readFileSync(file, "utf8")) as { checkpoints: Record<string, string> }
              const p = content.checkpoints["crash-test"]
              return p === undefined ? 0 : Number(BigInt(`0x${p}`))
            } catch {
              return 0
            }
          }
          // First run, paced so it is surely mid-flight when killed.
          const first = yield* Effect.promise(() =>
            runProducer(
              [url, prefix, String(count), file, guarantee, String(batchSize), "8000"],
              () => checkpointed() >= count / 2
            )
          )
          expect(first.killed).toBe(true)
          const atKill = checkpointed()
          expect(atKill).toBeGreaterThanOrEqual(count / 2)
          expect(atKill).toBeLessThan(count)
          // Second run: resumes and finishes.
          const second = yield* Effect.promise(() =>
            runProducer([url, prefix, String(count), file, guarantee, String(batchSize)])
          )
          expect(second.stderr).toBe("")
          expect(second.code).toBe(0)
          expect(checkpointed()).toBe(count)

          const ids: Array<string> = []
          for (const table of TABLES) {
            const entries = yield* Effect.promise(() => readStream(url, `${prefix}.${table}`))
            for (const e of entries) ids.push(e.fields.id!)
          }
          const expected = Array.from(yield* Stream.runCollect(SyntheticSource.make({ count, payloadBytes: 256 }))).map(
            (e) => e.id
          )
          const distinct = new Set(ids)
          expect(expected.filter((id) => !distinct.has(id))).toEqual([]) // none missing
          expect(distinct.size).toBe(count)
          const duplicates = ids.length - distinct.size
          if (guarantee === "exactly-once") expect(duplicates).toBe(0)
          else expect(duplicates).toBeLessThanOrEqual(batchSize)
        })
    )
  }

  it.effect("trimming keeps each stream within its bound: exact MAXLEN, approximate MAXLEN, MINID", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const prefix = uniquePrefix("trim")
      const run = (stream: string, trim: RedisStreamSink.TrimOptions, count: number, from?: Position.Position) =>
        SyntheticSource.make({ count, tables: ["items"], ...(from ? { from } : {}) }).pipe(
          Stream.run(RedisStreamSink.make({ stream, trim, batch: { maxEvents: 100 } })),
          Effect.provide(sinkLayers(url))
        )
      yield* run(`${prefix}.exact`, { maxLen: 100, exact: true }, 1_000)
      const exact = yield* Effect.promise(() => readStream(url, `${prefix}.exact`))
      expect(exact.length).toBe(100)
      // The newest entries are the ones kept.
      expect(exact[99]!.fields.id).toBe(SyntheticSource.eventAt(1_000, { tables: ["items"] }).id)

      yield* run(`${prefix}.approx`, { maxLen: 100 }, 1_000)
      const approx = yield* Effect.promise(() => withClient(url, (c) => c.xlen(`${prefix}.approx`)))
      // `~` trims whole radix-tree nodes (100 entries each by default): at least the bound, less than a node over.
      expect(approx).toBeGreaterThanOrEqual(100)
      expect(approx).toBeLessThan(200)

      yield* run(`${prefix}.minid`, {}, 300)
      const cut = yield* Effect.promise(() => withClient(url, (c) => c.time()))
      const minId = `${Number(cut[0]) * 1000 + Math.floor(Number(cut[1]) / 1000) + 1}-0`
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 5)))
      yield* run(`${prefix}.minid`, { minId, exact: true }, 400, Position.fromSequence(300))
      const kept = yield* Effect.promise(() => readStream(url, `${prefix}.minid`))
      expect(kept.length).toBe(100)
      expect(kept.every((e) => e.id >= minId)).toBe(true)
    })
  )

  it.effect(
    "batch.maxBytes counts UTF-8 bytes: multi-byte text lands byte for byte, an event over the bound is dead-lettered",
    () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const prefix = uniquePrefix("utf8")
        const events = Array.from(yield* Stream.runCollect(SyntheticSource.make({ count: 3, tables: ["orders"] })))
        const withNotes = (e: CdcEvent.CdcEvent, notes: string): CdcEvent.CdcEvent => ({
          ...e,
          after: e.after === null ? null : { ...e.after, notes },
          before: e.before === null ? null : { ...e.before, notes }
        })
        // 1,000 euro signs: 1,000 UTF-16 units, 3,000 UTF-8 bytes; 1,400 of them: 4,200 bytes, over a 4,000 bound.
        const fits = withNotes(events[0]!, "€".repeat(1000))
        const over = withNotes(events[1]!, "€".repeat(1400))
        const mixed = withNotes(events[2]!, "é😀ß".repeat(100))
        expect(JSON.stringify(over).length).toBeLessThan(4000)
        const summary = yield* Stream.fromIterable([fits, over, mixed]).pipe(
          Stream.run(
            RedisStreamSink.make({
              stream: `${prefix}.\${source.table}`,
              deadLetterStream: `${prefix}.dead`,
              batch: { maxBytes: 4000 }
            })
          ),
          Effect.provide(sinkLayers(url))
        )
        expect(summary.events).toBe(3)
        expect(summary.deadLettered).toBe(1)
        const entries = yield* Effect.promise(() => readStream(url, `${prefix}.orders`))
        expect(entries.map((e) => Envelope.native.decodeSync(e.fields.event!))).toEqual([fits, mixed])
        const dead = yield* Effect.promise(() => readStream(url, `${prefix}.dead`))
        expect(dead.map((d) => d.fields.id)).toEqual([over.id])
        expect(dead[0]!.fields.error).toContain("more than batch.maxBytes (4000)")
      })
  )

  it.effect("an event whose stream or key cannot be resolved goes to the dead-letter stream; the rest goes on", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const prefix = uniquePrefix("dlq")
      const events = Array.from(yield* Stream.runCollect(SyntheticSource.make({ count: 60 })))
      // No table name: the stream template cannot be resolved.
      const nameless = { ...events[10]!, source: { ...events[10]!.source, table: "" } }
      // A row without the key column: the key template cannot be resolved.
      const keyless = { ...events[20]!, after: { ...events[20]!.after, id: null }, before: null }
      // A truncate has no row image at all: it is written, without a key.
      const truncate = CdcEvent.make({
        op: "t",
        before: null,
        after: null,
        source: events[30]!.source,
        ts_ms: events[30]!.ts_ms,
        position: events[30]!.position
      })
      const input = events.map((e, i) => (i === 10 ? nameless : i === 20 ? keyless : i === 30 ? truncate : e))
      const summary = yield* Stream.fromIterable(input).pipe(
        Stream.run(
          RedisStreamSink.make({
            stream: `${prefix}.\${source.table}`,
            key: "${key.id}",
            deadLetterStream: `${prefix}.dead`
          })
        ),
        Effect.provide(sinkLayers(url))
      )
      expect(summary.events).toBe(60)
      expect(summary.deadLettered).toBe(2)
      const dead = yield* Effect.promise(() => readStream(url, `${prefix}.dead`))
      expect(dead.map((d) => d.fields.id)).toEqual([nameless.id, keyless.id])
      expect(dead[0]!.fields.error).toContain("source.table")
      expect(dead[1]!.fields.error).toContain("key.id")
      expect(Envelope.native.decodeSync(dead[0]!.fields.event!)).toEqual(nameless)
      let landed = 0
      for (const table of TABLES) {
        const entries = yield* Effect.promise(() => readStream(url, `${prefix}.${table}`))
        landed += entries.length
        const t = entries.find((e) => e.fields.id === truncate.id)
        if (t !== undefined) {
          expect(t.fields.op).toBe("t")
          expect(t.fields.key).toBeUndefined()
        }
      }
      expect(landed).toBe(58)
    })
  )
})

describe("bad configuration fails at construction, naming the field", () => {
  const fails = (options: RedisStreamSink.Options) => Effect.flip(RedisStreamSink.validateOptions(options))

  layer(RedisTestServer.layer(), { excludeTestServices: true })("sink options", (it) => {
    it.effect("negative batch size", () =>
      Effect.gen(function* () {
        const e = yield* fails({ stream: "s", batch: { maxEvents: -5 } })
        expect(e.field).toBe("batch.maxEvents")
        expect(e.message).toContain("batch.maxEvents: must be a positive integer")
        expect(e.message).toContain("-5")
      })
    )

    it.effect("unknown template variable", () =>
      Effect.gen(function* () {
        const e = yield* fails({ stream: "cdc.${source.dbb}.${source.table}" })
        expect(e.field).toBe("stream")
        expect(e.message).toContain("source.dbb")
        expect(e.message).toContain("cdc.${source.dbb}.${source.table}")
        const k = yield* fails({ stream: "s", key: "${after}" })
        expect(k.field).toBe("key")
        const d = yield* fails({ stream: "s", deadLetterStream: "dead}letters" })
        expect(d.field).toBe("deadLetterStream")
        expect(d.message).toContain("dead}letters")
      })
    )

    it.effect("a fixed stream name with '}' and no hash tag (no high-water key can share its slot)", () =>
      Effect.gen(function* () {
        const s = yield* fails({ stream: "a}b" })
        expect(s.field).toBe("stream")
        expect(s.message).toContain('"a}b"')
        const t = yield* fails({ stream: { default: "cdc.${table}", tables: { orders: "orders}events" } } })
        expect(t.path).toStrictEqual(["stream", "tables", "orders"])
        expect(t.message).toContain("orders}events")
        // A hash tag puts the mark in the stream's slot, and a template is only known per event.
        yield* RedisStreamSink.validateOptions({ stream: "{a}b}" })
        yield* RedisStreamSink.validateOptions({ stream: "a}${table}" })
      })
    )

    it.effect("onDataLoss other than fail or continue", () =>
      Effect.gen(function* () {
        const e = yield* fails({ stream: "s", onDataLoss: "ignore" as "fail" })
        expect(e.field).toBe("onDataLoss")
      })
    )

    it.effect("the sink fails before writing anything, and the stream stays absent", () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const prefix = uniquePrefix("badcfg")
        const exit = yield* SyntheticSource.make({ count: 10 }).pipe(
          Stream.run(RedisStreamSink.make({ stream: prefix, trim: { maxLen: 0 } })),
          Effect.provide(sinkLayers(url)),
          Effect.exit
        )
        expect(Exit.isFailure(exit)).toBe(true)
        expect(String(exit)).toContain("trim.maxLen")
        expect(yield* Effect.promise(() => withClient(url, (c) => c.exists(prefix)))).toBe(0)
      })
    )

    it.effect("malformed URL", () =>
      Effect.gen(function* () {
        const e = yield* Effect.flip(Effect.scoped(RedisConnection.make({ url: "redis://localhost:notaport" })))
        expect(e._tag).toBe("ConfigError")
        if (e._tag === "ConfigError") {
          expect(e.field).toBe("url")
          expect(e.message).toContain("localhost:notaport")
        }
        const t = yield* Effect.flip(
          Effect.scoped(RedisConnection.make({ url: "redis://localhost", commandTimeout: -1 }))
        )
        expect(t).toMatchObject({ _tag: "ConfigError", path: ["commandTimeout"] })
      })
    )
  })
})

interface ProducerResult {
  readonly code: number | null
  readonly killed: boolean
  readonly stdout: string
  readonly stderr: string
}

/** Runs the producer fixture; with `killWhen`, SIGKILLs it as soon as the predicate holds (polled every 5 ms). */
const runProducer = (args: ReadonlyArray<string>, killWhen?: () => boolean): Promise<ProducerResult> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(import.meta.dirname, "fixtures", "produce.ts"), ...args], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    let killed = false
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    const timer =
      killWhen &&
      setInterval(() => {
        if (!killed && killWhen()) {
          killed = true
          child.kill("SIGKILL")
        }
      }, 5)
    child.on("error", reject)
    child.on("exit", (code) => {
      if (timer) clearInterval(timer)
      resolve({ code, killed, stdout, stderr })
    })
  })
