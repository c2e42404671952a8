/**
 * Gives back the memory that start-up left behind, once the process has gone quiet.
 *
 * Loading the CLI's modules grows V8's young generation to two 16 MiB semi-spaces and leaves the old generation with
 * pages it no longer needs; nothing in a Node process ever shrinks them again while it stays quiet (V8 shrinks a
 * heap in the collections that a busy process triggers, and Node sends none of the idle notifications a browser
 * does). So a sink process that has caught up, writing an event a second, keeps about 110 MiB resident of which a
 * third is empty heap (bench/RESULTS.md, "Idle RSS"). One full, synchronous collection when the event loop has been
 * quiet for a whole interval gives it back: the heap's committed size falls to about what is in use.
 *
 * The rule ({@link shouldCompact}): the last interval's event-loop utilisation is below {@link QUIET}, the heap holds
 * at least {@link SLACK_BYTES} committed and unused, and the last compaction is at least {@link SPACING} ago. A busy
 * pipeline never qualifies (its event loop is not quiet), so a collection pause is never added to a loaded write
 * path; a quiet one pays about 20-40 ms once, and again only after its heap has grown slack again.
 *
 * `gc` is reached the documented way for a running process: `--expose-gc` set with `v8.setFlagsFromString` and the
 * function read from a fresh context, only at the first compaction.
 */
import { performance, type EventLoopUtilization } from "node:perf_hooks"
import * as V8 from "node:v8"
import * as Vm from "node:vm"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"

/** How often the event loop's utilisation is sampled: each sample covers the interval since the last. */
export const INTERVAL = Duration.seconds(2)

/** Below this share of the interval spent running, the process is quiet. */
export const QUIET = 0.05

/** Committed but unused heap worth a collection. */
export const SLACK_BYTES = 16 * 1024 * 1024

/** At most one compaction per this long. */
export const SPACING = Duration.minutes(1)

/** One reading of the process. */
export interface Sample {
  /** Event-loop utilisation over the last interval, 0 to 1. */
  readonly utilization: number
  /** V8's committed heap (`total_heap_size`). */
  readonly heapTotal: number
  /** V8's heap in use (`used_heap_size`). */
  readonly heapUsed: number
}

/** Whether to compact now, given a sample, the time now and of the last compaction (ms; undefined: never). */
export const shouldCompact = (sample: Sample, now: number, lastAt: number | undefined): boolean =>
  sample.utilization < QUIET &&
  sample.heapTotal - sample.heapUsed >= SLACK_BYTES &&
  (lastAt === undefined || now - lastAt >= Duration.toMillis(SPACING))

export const compactions = Metric.counter("process_heap_compactions_total", {
  description: "Full collections run because the process was quiet with unused heap committed (the CLI only)",
  incremental: true
})

/** What the loop reads and does: the process itself, or a test's stand-in. */
export interface Process {
  readonly sample: Effect.Effect<Sample>
  readonly compact: Effect.Effect<void>
}

let gc: ((options?: { type?: string; execution?: string; flavor?: string }) => void) | undefined

/** This process: event-loop utilisation since the last sample, V8's heap statistics, a full synchronous `gc`. */
export const nodeProcess = (): Process => {
  let last: EventLoopUtilization = performance.eventLoopUtilization()
  return {
    sample: Effect.sync(() => {
      const delta = performance.eventLoopUtilization(last)
      last = performance.eventLoopUtilization()
      const heap = V8.getHeapStatistics()
      return { utilization: delta.utilization, heapTotal: heap.total_heap_size, heapUsed: heap.used_heap_size }
    }),
    compact: Effect.sync(() => {
      if (gc === undefined) {
        V8.setFlagsFromString("--expose-gc")
        gc = Vm.runInNewContext("gc") as typeof gc
      }
      gc!({ type: "major", execution: "sync", flavor: "last-resort" })
    })
  }
}

/** Samples every {@link INTERVAL} and compacts when {@link shouldCompact} says so; runs until interrupted. */
export const run = (process: Process): Effect.Effect<never> =>
  Effect.gen(function* () {
    let lastAt: number | undefined
    while (true) {
      yield* Effect.sleep(INTERVAL)
      const sample = yield* process.sample
      const now = yield* Clock.currentTimeMillis
      if (!shouldCompact(sample, now, lastAt)) continue
      yield* process.compact
      yield* Metric.update(compactions, 1)
      yield* Effect.logDebug("heap compacted while quiet", {
        committedMiB: Math.round(sample.heapTotal / 2 ** 20),
        usedMiB: Math.round(sample.heapUsed / 2 ** 20)
      })
      lastAt = now
    }
  })
