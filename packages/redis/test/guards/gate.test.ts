/**
 * The write gate's policy, driven by TestClock with a probe the test controls (pure logic: no Redis involved here;
 * MemoryGuard.test.ts runs a gate against a real server).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Metric, Option, Schedule } from "effect"
import { TestClock } from "effect/testing"
import * as Metrics from "@redflow/core/Metrics"
import * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as Gate from "../../src/internal/gate.ts"

let n = 0
const uniquePipeline = (label: string) => `gate-${process.pid}-${n++}-${label}`

/** A probe whose answer the test sets, counting its calls. */
const controlled = (initial: Gate.Verdict | "fail") => {
  let answer: Gate.Verdict | "fail" = initial
  let calls = 0
  const probe = Effect.suspend(() => {
    calls++
    return answer === "fail" ? Effect.fail("redis down" as const) : Effect.succeed(answer)
  })
  return {
    probe,
    set: (next: Gate.Verdict | "fail") => {
      answer = next
    },
    get calls() {
      return calls
    }
  }
}

const gauge = (pipeline: string, gate: string) =>
  Effect.map(Metric.value(Metric.withAttributes(Metrics.sinkHeld, { pipeline, gate })), (s) => Number(s.value))
const count = (metric: typeof Metrics.sinkHolds, pipeline: string, gate: string) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, { pipeline, gate })), (s) => Number(s.count))

/** Lets forked fibers run without moving the clock. */
const settle = TestClock.adjust(0)

describe("WriteGate", () => {
  it.effect("probes at most once per minInterval however often writes ask", () =>
    Effect.gen(function* () {
      const p = controlled(Gate.pass)
      const gate = yield* Gate.make({
        name: "g",
        pipeline: uniquePipeline("rate"),
        probe: p.probe,
        minInterval: "1 second"
      })
      for (let i = 0; i < 1_000; i++) yield* gate.await
      expect(p.calls).toBe(1)
      yield* TestClock.adjust("999 millis")
      yield* gate.await
      expect(p.calls).toBe(1)
      yield* TestClock.adjust("1 millis")
      yield* gate.await
      expect(p.calls).toBe(2)
    })
  )

  it.effect("holds while the probe says hold, re-probing on its schedule, and resumes when it passes", () =>
    Effect.gen(function* () {
      const pipeline = uniquePipeline("hold")
      const p = controlled(Gate.hold("too full"))
      const gate = yield* Gate.make({ name: "memory", pipeline, probe: p.probe, minInterval: "1 second" })
      const write = yield* Effect.forkChild(gate.await)
      yield* settle
      expect(write.pollUnsafe()).toBeUndefined()
      expect(yield* gate.holding).toEqual(Option.some("too full"))
      expect(yield* gauge(pipeline, "memory")).toBe(1)
      expect(yield* count(Metrics.sinkHolds, pipeline, "memory")).toBe(1)

      yield* TestClock.adjust("5 seconds")
      expect(write.pollUnsafe()).toBeUndefined()
      // Re-probed about once a second while holding, not in a tight loop.
      expect(p.calls).toBeGreaterThanOrEqual(5)
      expect(p.calls).toBeLessThanOrEqual(7)

      p.set(Gate.pass)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(write)
      expect(yield* gate.holding).toEqual(Option.none())
      expect(yield* gauge(pipeline, "memory")).toBe(0)
      expect(yield* count(Metrics.sinkHolds, pipeline, "memory")).toBe(1)
      expect(yield* count(Metrics.sinkHeldSeconds, pipeline, "memory")).toBeGreaterThanOrEqual(5)
      // Writes go straight through again.
      yield* gate.await
    })
  )

  it.effect("a probe that fails lets writes through, even in the middle of a hold", () =>
    Effect.gen(function* () {
      const pipeline = uniquePipeline("fail")
      const p = controlled("fail")
      const gate = yield* Gate.make({ name: "memory", pipeline, probe: p.probe })
      yield* gate.await
      expect(yield* gate.holding).toEqual(Option.none())

      p.set(Gate.hold("too full"))
      yield* TestClock.adjust("1 second")
      const write = yield* Effect.forkChild(gate.await)
      yield* settle
      expect(write.pollUnsafe()).toBeUndefined()
      p.set("fail")
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(write)
      expect(yield* gauge(pipeline, "memory")).toBe(0)
    })
  )

  it.effect("a finite schedule bounds a hold: when it ends the write goes ahead", () =>
    Effect.gen(function* () {
      const p = controlled(Gate.hold("lagging"))
      const gate = yield* Gate.make({
        name: "lag",
        pipeline: uniquePipeline("finite"),
        probe: p.probe,
        minInterval: "1 second",
        schedule: Schedule.spaced("1 second").pipe(Schedule.upTo({ times: 3 }))
      })
      const write = yield* Effect.forkChild(gate.await)
      yield* TestClock.adjust("2 seconds")
      expect(write.pollUnsafe()).toBeUndefined()
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(write)
      // The probe still says hold: the gate reports it.
      expect(yield* gate.holding).toEqual(Option.some("lagging"))
    })
  )

  it.effect("while holding, /ready is not ready with the gate's reason; cleared when it passes", () =>
    Effect.gen(function* () {
      const health = yield* PipelineHealth.make()
      yield* health.set("orders", "running")
      const p = controlled(Gate.hold("used 95% of maxmemory"))
      const gate = yield* Gate.make({ name: "memory", pipeline: "orders", probe: p.probe }).pipe(
        Effect.provideService(PipelineHealth.PipelineHealth, health)
      )
      const write = yield* Effect.forkChild(gate.await)
      yield* settle
      const held = yield* health.readiness
      expect(held.status).toBe("not-ready")
      expect(held.reasons).toEqual(["memory: holding writes: used 95% of maxmemory"])

      p.set(Gate.pass)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(write)
      const after = yield* health.readiness
      expect(after.status).toBe("ready")
      expect(after.conditions).toBeUndefined()
    })
  )

  it.effect("all(gates) holds while any gate holds", () =>
    Effect.gen(function* () {
      const pipeline = uniquePipeline("all")
      const a = controlled(Gate.pass)
      const b = controlled(Gate.hold("group g is 5000 entries behind"))
      const gate = Gate.all([
        yield* Gate.make({ name: "memory", pipeline, probe: a.probe }),
        yield* Gate.make({ name: "lag", pipeline, probe: b.probe })
      ])
      const write = yield* Effect.forkChild(gate.await)
      yield* settle
      expect(write.pollUnsafe()).toBeUndefined()
      expect(yield* gate.holding).toEqual(Option.some("lag: group g is 5000 entries behind"))
      b.set(Gate.pass)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(write)
      expect(yield* gate.holding).toEqual(Option.none())
    })
  )
})
