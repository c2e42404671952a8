/**
 * Write gates: something that holds the sink's writes while a probe says so (memory near `maxmemory`, a consumer
 * group too far behind). The sink runs {@link WriteGate.await} before it sends each batch; while a gate holds, that
 * call does not return, the sink's bounded queue fills, and the backpressure reaches the source.
 *
 * The probe runs at a bounded rate whatever the write rate: its answer is kept for `minInterval`, so a sink writing a
 * thousand batches a second probes Redis once per interval, not once per batch. A probe that fails (Redis down, a
 * refused command) lets the write through: the write will fail on its own and the sink's failure policies retry it,
 * whereas a gate that held on an error could hold for good while nothing is wrong with memory or lag.
 *
 * While a gate holds: the gauge `sink_held{pipeline,gate}` is 1, `sink_holds_total` counts each hold and
 * `sink_held_seconds_total` the time spent held, and (when the application provides {@link PipelineHealth}) a
 * condition `<gate>: holding writes: <why>` makes `/ready` not ready.
 *
 * @example
 * ```ts
 * const gate = yield* Gate.make({
 *   name: "memory",
 *   pipeline: "orders",
 *   probe: usedShare.pipe(Effect.map((share) => (share > 0.9 ? Gate.hold(`memory at ${share}`) : Gate.pass)))
 * })
 * yield* gate.await // before each batch
 * ```
 */
import * as Metrics from "@redflow/core/Metrics"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Semaphore from "effect/Semaphore"

/** What a probe answers: let writes through, or hold them, saying why. */
export type Verdict = { readonly _tag: "Pass" } | { readonly _tag: "Hold"; readonly reason: string }

/** Let writes through. */
export const pass: Verdict = { _tag: "Pass" }

/** Hold writes; `reason` is shown in logs and `/ready`, e.g. `used 95% of maxmemory (high water 90%)`. */
export const hold = (reason: string): Verdict => ({ _tag: "Hold", reason })

/** A gate in front of the sink's writes. */
export interface WriteGate {
  /** Names the gate in metrics (`gate` attribute), logs and health, e.g. `memory`, `lag:mygroup`. */
  readonly name: string
  /**
   * Returns at once while the gate passes; while it holds, waits, re-probing on the gate's schedule, until it passes
   * (or the schedule ends: then the write goes ahead). Never fails: a probe failure counts as a pass.
   */
  readonly await: Effect.Effect<void>
  /** Why the gate holds writes now, or `None` when it lets them through (its last answer; does not probe). */
  readonly holding: Effect.Effect<Option.Option<string>>
}

export interface Options<E, R> {
  readonly name: string
  /** The pipeline whose writes are held: the `pipeline` attribute of the gate's metrics. */
  readonly pipeline: string
  readonly probe: Effect.Effect<Verdict, E, R>
  /** How long an answer of the probe is kept: the probe runs at most once per interval. Default 1 second. */
  readonly minInterval?: Duration.Input
  /**
   * When to look again while holding. Default: every `minInterval`. A schedule that ends lets the write go ahead:
   * give a finite one (e.g. `Schedule.spaced("1 second").pipe(Schedule.upTo({ times: 300 }))`) to bound how long a gate may
   * hold; the default never ends.
   */
  readonly schedule?: Schedule.Schedule<unknown, Verdict>
}

interface State {
  /** When the probe last answered (Clock millis); `undefined` before the first probe. */
  readonly probedAt: number | undefined
  readonly verdict: Verdict
  /** Since when (Clock millis) held time was last counted, while holding. */
  readonly countedAt: number
}

/**
 * Builds a gate. The probe's requirements (a `RedisConnection`) and the optional {@link PipelineHealth} are taken
 * from the context of this call, so {@link WriteGate.await} needs nothing.
 */
export const make = <E, R>(options: Options<E, R>): Effect.Effect<WriteGate, never, R> =>
  Effect.gen(function* () {
    const context = yield* Effect.context<R>()
    const health = yield* Effect.serviceOption(PipelineHealth.PipelineHealth)
    const minInterval = Duration.fromInputUnsafe(options.minInterval ?? Duration.seconds(1))
    const minIntervalMs = Duration.toMillis(minInterval)
    const schedule = options.schedule ?? Schedule.spaced(minInterval)
    const attributes = { pipeline: options.pipeline, gate: options.name }
    const held = Metric.withAttributes(Metrics.sinkHeld, attributes)
    const holds = Metric.withAttributes(Metrics.sinkHolds, attributes)
    const heldSeconds = Metric.withAttributes(Metrics.sinkHeldSeconds, attributes)
    const healthKey = `${options.pipeline}/gate:${options.name}`
    // One prober at a time: concurrent callers after the interval share one probe instead of each sending one.
    const lock = yield* Semaphore.make(1)
    let state: State = { probedAt: undefined, verdict: pass, countedAt: 0 }

    const probe: Effect.Effect<Verdict> = options.probe.pipe(
      Effect.provideContext(context),
      Effect.catchCause((cause) =>
        Effect.logDebug("write gate probe failed; letting writes through", cause).pipe(Effect.as(pass))
      )
    )

    const enter = (reason: string) =>
      Effect.all([
        Metric.update(held, 1),
        Metric.update(holds, 1),
        Effect.logWarning(`${options.name}: holding writes: ${reason}`),
        Option.isSome(health)
          ? health.value.raise(healthKey, `${options.name}: holding writes: ${reason}`)
          : Effect.void
      ])

    const update = (reason: string) =>
      Option.isSome(health) ? health.value.raise(healthKey, `${options.name}: holding writes: ${reason}`) : Effect.void

    const leave = Effect.all([
      Metric.update(held, 0),
      Effect.logInfo(`${options.name}: writes resume`),
      Option.isSome(health) ? health.value.clear(healthKey) : Effect.void
    ])

    /** The current verdict: the cached one within `minInterval`, else a fresh probe, with the transitions reported. */
    const current: Effect.Effect<Verdict> = lock.withPermit(
      Effect.gen(function* () {
        const now = yield* Clock.currentTimeMillis
        if (state.probedAt !== undefined && now - state.probedAt < minIntervalMs) return state.verdict
        const next = yield* probe
        const at = yield* Clock.currentTimeMillis
        const previous = state.verdict
        if (previous._tag === "Hold") yield* Metric.update(heldSeconds, (at - state.countedAt) / 1000)
        state = { probedAt: at, verdict: next, countedAt: at }
        if (next._tag === "Hold") {
          if (previous._tag === "Pass") yield* enter(next.reason)
          else if (previous.reason !== next.reason) yield* update(next.reason)
        } else if (previous._tag === "Hold") {
          yield* leave
        }
        return next
      })
    )

    const await_: Effect.Effect<void> = current.pipe(
      Effect.flatMap((verdict) => (verdict._tag === "Hold" ? Effect.fail(verdict) : Effect.void)),
      Effect.retry(schedule),
      Effect.catch((last) =>
        Effect.logWarning(`${options.name}: holding writes: the gate's schedule ended; letting writes through`, {
          reason: last.reason
        })
      ),
      Effect.annotateLogs({ pipeline: options.pipeline, gate: options.name })
    )

    return {
      name: options.name,
      await: await_,
      holding: Effect.sync(() => (state.verdict._tag === "Hold" ? Option.some(state.verdict.reason) : Option.none()))
    } satisfies WriteGate
  })

/** A gate that never holds: what a sink uses when no gate is configured. */
export const open: WriteGate = { name: "none", await: Effect.void, holding: Effect.succeed(Option.none()) }

/**
 * One gate made of several: passes when every gate passes, awaiting them in order. A gate that started holding while
 * a later one held is not asked again for this write (one batch goes through); the next write asks it again, so a
 * hold is late by at most one batch.
 */
export const all = (gates: ReadonlyArray<WriteGate>): WriteGate => {
  if (gates.length === 0) return open
  if (gates.length === 1) return gates[0]!
  const awaitAll: Effect.Effect<void> = Effect.forEach(gates, (gate) => gate.await, { discard: true })
  return {
    name: gates.map((g) => g.name).join("+"),
    await: awaitAll,
    holding: Effect.gen(function* () {
      for (const gate of gates) {
        const reason = yield* gate.holding
        if (Option.isSome(reason)) return Option.some(`${gate.name}: ${reason.value}`)
      }
      return Option.none()
    })
  }
}
