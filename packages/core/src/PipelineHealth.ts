/**
 * The health of a running application: the state of each pipeline component (a sink, a consumer) and the readiness
 * checks of what it depends on (a Redis PING), as served by {@link MetricsServer} at `/health` and `/ready`.
 *
 * - healthy: the process is up and no component has failed;
 * - ready: every component is running and every check passes.
 *
 * The application reports its components' states (or wraps them with {@link track}); the checks are effects it
 * injects, so this module knows nothing about Redis. A component is named by the application: `RedisStreamSink`
 * reports its failed writes under its `pipeline` name, so `track(pipeline)` around the sink is one component whose
 * state goes `running` → `retrying` (a write failed and is being tried again: not ready) → `running` (a write went
 * through) → `stopped` or `failed`.
 *
 * @example
 * ```ts
 * const health = PipelineHealth.layer({
 *   checks: [{ name: "redis", run: RedisConnection.use((redis) => redis.run((client) => client.ping())) }]
 * })
 * const program = source.pipe(Stream.run(RedisStreamSink.make(options)), PipelineHealth.track("orders"))
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import * as Ref from "effect/Ref"

/**
 * Where a component is in its life. `retrying`: running, but its last attempt failed and is being tried again
 * (Redis down, say); alive, not ready.
 *
 * @since 0.1.0
 * @category models
 */
export type ComponentState = "starting" | "running" | "retrying" | "stopped" | "failed"

/**
 * What the health report says of one component: its state, since when, and its last error.
 *
 * @since 0.1.0
 * @category models
 */
export interface ComponentStatus {
  readonly state: ComponentState
  /** When the component entered this state (ISO 8601). */
  readonly since: string
  /** The last error reported for the component (the cause of `failed`, or a transient error while running). */
  readonly lastError?: string
  /** When {@link lastError} was reported (ISO 8601). */
  readonly lastErrorAt?: string
}

/**
 * A readiness check: succeeds when the dependency answers. Its error (or a timeout) makes the app not ready.
 *
 * @since 0.1.0
 * @category models
 */
export interface Check<R = never> {
  readonly name: string
  readonly run: Effect.Effect<unknown, unknown, R>
  /** Longest wait for an answer. Default 2 seconds. */
  readonly timeout?: Duration.Input
}

/**
 * The outcome of one readiness {@link Check}: whether it answered, how long it took, and its error.
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckResult {
  readonly ok: boolean
  readonly latencyMs: number
  readonly error?: string
}

/**
 * Something an operator should know that is not a component's state: a write gate holding the sink's writes
 * (not ready while it lasts), a persistence setting that can lose acknowledged writes (a warning, still ready).
 *
 * @since 0.1.0
 * @category models
 */
export interface Condition {
  /** One line, e.g. `memory: holding writes: used 95% of maxmemory`. */
  readonly message: string
  /** Whether the condition makes the application not ready. */
  readonly blocksReadiness: boolean
  /** When the condition was raised (ISO 8601). */
  readonly since: string
}

/**
 * The `/health` body.
 *
 * @since 0.1.0
 * @category models
 */
export interface HealthReport {
  readonly status: "ok" | "failed"
  readonly uptimeSeconds: number
  readonly components: Readonly<Record<string, ComponentStatus>>
  /** The conditions raised and not cleared, by key; absent when there are none. */
  readonly conditions?: Readonly<Record<string, Condition>>
}

/**
 * The `/ready` body.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReadinessReport {
  readonly status: "ready" | "not-ready"
  /** Why not ready, one line per reason; empty when ready. */
  readonly reasons: ReadonlyArray<string>
  readonly components: Readonly<Record<string, ComponentStatus>>
  readonly checks: Readonly<Record<string, CheckResult>>
  /** The conditions raised and not cleared, by key; absent when there are none. */
  readonly conditions?: Readonly<Record<string, Condition>>
}

/**
 * What {@link PipelineHealth} offers: components report their state and conditions, and the metrics server reads the
 * health and readiness reports.
 *
 * @since 0.1.0
 * @category models
 */
export interface PipelineHealthService {
  /** Sets a component's state; `error` is recorded as its last error. */
  readonly set: (component: string, state: ComponentState, error?: string) => Effect.Effect<void>
  /**
   * Records an error of a component already reported, without changing its state. An unknown component is left
   * unknown: an error alone never registers a component that nothing would mark running.
   */
  readonly recordError: (component: string, error: string) => Effect.Effect<void>
  /**
   * A failed attempt that is being tried again (a retried write): records the error, and a `running` (or not yet
   * reported) component becomes `retrying`, not ready, until {@link recovered}. Other states keep their state.
   */
  readonly retrying: (component: string, error: string) => Effect.Effect<void>
  /** An attempt succeeded again: a `retrying` component is `running`; any other state is left as it is. */
  readonly recovered: (component: string) => Effect.Effect<void>
  /**
   * Raises (or updates) a condition under `key`: shown in `/health` and `/ready`; with `blocksReadiness` (the
   * default) its message is a reason for not being ready until {@link clear}. Raising it again with the same
   * message keeps its `since`.
   */
  readonly raise: (
    key: string,
    message: string,
    options?: { readonly blocksReadiness?: boolean }
  ) => Effect.Effect<void>
  /** Clears the condition under `key`; nothing happens when there is none. */
  readonly clear: (key: string) => Effect.Effect<void>
  readonly components: Effect.Effect<Readonly<Record<string, ComponentStatus>>>
  readonly conditions: Effect.Effect<Readonly<Record<string, Condition>>>
  readonly health: Effect.Effect<HealthReport>
  /** Runs the checks (concurrently, each bounded by its timeout). */
  readonly readiness: Effect.Effect<ReadinessReport>
}

/**
 * The pipeline's health: the state of each component, the conditions raised, and the readiness checks. Built by
 * {@link make} or {@link layer}.
 *
 * @since 0.1.0
 * @category services
 */
export class PipelineHealth extends Context.Service<PipelineHealth, PipelineHealthService>()(
  "@redflow/core/PipelineHealth"
) {}

/**
 * A readable one-line description of an error or a failure cause.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeError = (error: unknown): string => {
  if (Cause.isCause(error)) {
    if (Cause.hasInterruptsOnly(error)) return "interrupted"
    return describeError(Cause.squash(error))
  }
  if (Predicate.isObject(error)) {
    const tag = Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" ? error._tag : undefined
    const message = Predicate.hasProperty(error, "message") && typeof error.message === "string" ? error.message : ""
    if (tag !== undefined) return message === "" ? tag : `${tag}: ${message}`
    if (message !== "") return message
  }
  return String(error)
}

const iso = (ms: number) => new Date(ms).toISOString()

/**
 * Builds the service; the checks run in the context this effect runs in.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <R = never>(
  options: { readonly checks?: ReadonlyArray<Check<R>> } = {}
): Effect.Effect<PipelineHealthService, never, R> =>
  Effect.gen(function* () {
    const context = yield* Effect.context<R>()
    const startedAt = yield* Clock.currentTimeMillis
    const state = yield* Ref.make<Readonly<Record<string, ComponentStatus>>>({})
    const checks = options.checks ?? []
    const conditions = yield* Ref.make<Readonly<Record<string, Condition>>>({})

    const set = (component: string, next: ComponentState, error?: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.update(state, (all) => {
          const previous = all[component]
          const since = previous?.state === next ? previous.since : iso(now)
          const status: ComponentStatus =
            error !== undefined
              ? { state: next, since, lastError: error, lastErrorAt: iso(now) }
              : {
                  state: next,
                  since,
                  ...(previous?.lastError !== undefined ? { lastError: previous.lastError } : {}),
                  ...(previous?.lastErrorAt !== undefined ? { lastErrorAt: previous.lastErrorAt } : {})
                }
          return { ...all, [component]: status }
        })
      )

    const recordError = (component: string, error: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.update(state, (all) => {
          const previous = all[component]
          if (previous === undefined) return all
          return { ...all, [component]: { ...previous, lastError: error, lastErrorAt: iso(now) } }
        })
      )

    const retrying = (component: string, error: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.update(state, (all) => {
          const previous = all[component]
          const degrade = previous === undefined || previous.state === "running"
          const status: ComponentStatus = {
            state: degrade ? "retrying" : previous.state,
            since: degrade ? iso(now) : previous.since,
            lastError: error,
            lastErrorAt: iso(now)
          }
          return { ...all, [component]: status }
        })
      )

    const recovered = (component: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.update(state, (all) => {
          const previous = all[component]
          if (previous?.state !== "retrying") return all
          const status: ComponentStatus = { ...previous, state: "running", since: iso(now) }
          return { ...all, [component]: status }
        })
      )

    const raise = (key: string, message: string, raiseOptions?: { readonly blocksReadiness?: boolean }) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.update(conditions, (all) => {
          const previous = all[key]
          const blocksReadiness = raiseOptions?.blocksReadiness ?? true
          const since = previous?.message === message ? previous.since : iso(now)
          return { ...all, [key]: { message, blocksReadiness, since } }
        })
      )

    const clear = (key: string) =>
      Ref.update(conditions, (all) => {
        if (!(key in all)) return all
        const { [key]: _, ...rest } = all
        return rest
      })

    // Only present when something is raised, so the bodies of applications that raise nothing do not change.
    const conditionsField = Effect.map(Ref.get(conditions), (all) =>
      Object.keys(all).length === 0 ? {} : { conditions: all }
    )

    const health = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const components = yield* Ref.get(state)
      const failed = Object.values(components).some((c) => c.state === "failed")
      return {
        status: failed ? "failed" : "ok",
        uptimeSeconds: Math.round((now - startedAt) / 1000),
        components,
        ...(yield* conditionsField)
      } satisfies HealthReport
    })

    const runCheck = (check: Check<R>) =>
      Effect.gen(function* () {
        const timeout = Duration.fromInputUnsafe(check.timeout ?? Duration.seconds(2))
        const begin = yield* Clock.currentTimeMillis
        const exit = yield* check.run.pipe(
          Effect.timeoutOrElse({
            duration: timeout,
            orElse: () => Effect.fail(`no answer within ${Duration.format(timeout)}`)
          }),
          Effect.provideContext(context),
          Effect.exit
        )
        const latencyMs = (yield* Clock.currentTimeMillis) - begin
        const result: CheckResult = Exit.isSuccess(exit)
          ? { ok: true, latencyMs }
          : { ok: false, latencyMs, error: describeError(exit.cause) }
        return [check.name, result] as const
      })

    const readiness = Effect.gen(function* () {
      const components = yield* Ref.get(state)
      const results = yield* Effect.forEach(checks, runCheck, { concurrency: "unbounded" })
      const reasons: Array<string> = []
      const names = Object.keys(components)
      if (names.length === 0) reasons.push("no pipeline component has started")
      for (const name of names) {
        const c = components[name]!
        if (c.state === "retrying") reasons.push(`${name} is retrying after ${c.lastError ?? "an error"}`)
        else if (c.state !== "running") reasons.push(`${name} is ${c.state}`)
      }
      for (const [name, result] of results) {
        if (!result.ok) reasons.push(`check ${name} failed: ${result.error}`)
      }
      const extra = yield* conditionsField
      for (const condition of Object.values(extra.conditions ?? {})) {
        if (condition.blocksReadiness) reasons.push(condition.message)
      }
      return {
        status: reasons.length === 0 ? "ready" : "not-ready",
        reasons,
        components,
        checks: Object.fromEntries(results),
        ...extra
      } satisfies ReadinessReport
    })

    return PipelineHealth.of({
      set,
      recordError,
      retrying,
      recovered,
      raise,
      clear,
      components: Ref.get(state),
      conditions: Ref.get(conditions),
      health,
      readiness
    })
  })

/**
 * A {@link PipelineHealth} with these readiness checks. The layer captures the checks' requirements when it is
 * built, e.g. the `RedisConnection` a PING runs on.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <R = never>(
  options: { readonly checks?: ReadonlyArray<Check<R>> } = {}
): Layer.Layer<PipelineHealth, never, R> => Layer.effect(PipelineHealth, make(options))

/**
 * Reports an effect's life as a component's state: `running` while it runs, `stopped` when it ends or is
 * interrupted, `failed` (with the error) when it fails or dies.
 *
 * @example
 * ```ts
 * source.pipe(Stream.run(RedisStreamSink.make({ stream: "orders", pipeline: "orders" })), PipelineHealth.track("orders"))
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const track =
  (component: string) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | PipelineHealth> =>
    PipelineHealth.use((health) =>
      health.set(component, "running").pipe(
        Effect.andThen(self),
        Effect.onExit((exit) =>
          Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)
            ? health.set(component, "stopped")
            : health.set(component, "failed", describeError(exit.cause))
        )
      )
    )
