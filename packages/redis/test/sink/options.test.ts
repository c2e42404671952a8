/**
 * The sink's options (internal/sink/options.ts): every rejection is a ConfigError naming the option by its path and
 * saying what was found, and what is left unset gets its default. Pure: nothing is sent to Redis.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as ConfigError from "@redflow/core/ConfigError"
import { decode } from "../../src/internal/sink/options.ts"
import type { Options } from "../../src/RedisStreamSink.ts"

interface Rejection {
  readonly options: unknown
  readonly path: ReadonlyArray<string>
  /** Part of the reason: the value found, or what the rule says. */
  readonly says: string
}

const rejections: ReadonlyArray<Rejection> = [
  { options: {}, path: ["stream"], says: "Missing key" },
  { options: { stream: 3 }, path: ["stream"], says: "got 3" },
  { options: { stream: "cdc.${nope}" }, path: ["stream"], says: "nope" },
  { options: { stream: "a}b" }, path: ["stream"], says: '"a}b"' },
  { options: { stream: { default: "cdc.${nope}" } }, path: ["stream", "default"], says: "nope" },
  { options: { stream: { default: "a}b" } }, path: ["stream", "default"], says: '"a}b"' },
  {
    options: { stream: { default: "cdc", tables: { orders: "${nope}" } } },
    path: ["stream", "tables", "orders"],
    says: "nope"
  },
  {
    options: { stream: { default: "cdc", tables: { orders: "orders}events" } } },
    path: ["stream", "tables", "orders"],
    says: "orders}events"
  },
  {
    options: { stream: { default: "cdc", tables: { orders: 1 } } },
    path: ["stream", "tables", "orders"],
    says: "got 1"
  },
  { options: { stream: "s", key: "${after}" }, path: ["key"], says: "${after}" },
  { options: { stream: "s", key: 7 }, path: ["key"], says: "got 7" },
  { options: { stream: "s", envelope: "xml" }, path: ["envelope"], says: '"xml"' },
  { options: { stream: "s", guarantee: "twice" }, path: ["guarantee"], says: '"twice"' },
  { options: { stream: "s", pipeline: "" }, path: ["pipeline"], says: "non-empty" },
  { options: { stream: "s", sinkName: 3 }, path: ["sinkName"], says: "got 3" },
  { options: { stream: "s", batch: { maxEvents: -5 } }, path: ["batch", "maxEvents"], says: "got -5" },
  { options: { stream: "s", batch: { maxEvents: 0 } }, path: ["batch", "maxEvents"], says: "got 0" },
  { options: { stream: "s", batch: { maxEvents: 1.5 } }, path: ["batch", "maxEvents"], says: "got 1.5" },
  { options: { stream: "s", batch: { maxEvents: "4000" } }, path: ["batch", "maxEvents"], says: 'got "4000"' },
  { options: { stream: "s", batch: { maxBytes: 0 } }, path: ["batch", "maxBytes"], says: "got 0" },
  { options: { stream: "s", batch: { maxBufferedBytes: -1 } }, path: ["batch", "maxBufferedBytes"], says: "got -1" },
  {
    options: { stream: "s", batch: { maxBytes: 1000, maxBufferedBytes: 999 } },
    path: ["batch", "maxBufferedBytes"],
    says: "at least batch.maxBytes (1000), got 999"
  },
  {
    // The default maxBytes (4 MiB) counts too.
    options: { stream: "s", batch: { maxBufferedBytes: 1000 } },
    path: ["batch", "maxBufferedBytes"],
    says: "at least batch.maxBytes (4194304), got 1000"
  },
  { options: { stream: "s", batch: { linger: "soon" } }, path: ["batch", "linger"], says: 'got "soon"' },
  { options: { stream: "s", batch: { linger: -1 } }, path: ["batch", "linger"], says: "got -1" },
  {
    options: { stream: "s", batch: { checkpointInterval: "Infinity" } },
    path: ["batch", "checkpointInterval"],
    says: 'got "Infinity"'
  },
  { options: { stream: "s", trim: { maxLen: 0 } }, path: ["trim", "maxLen"], says: "got 0" },
  { options: { stream: "s", trim: { maxLen: 10, minId: "0-1" } }, path: ["trim"], says: "not both" },
  { options: { stream: "s", trim: { minId: "yesterday" } }, path: ["trim", "minId"], says: '"yesterday"' },
  { options: { stream: "s", trim: { minId: { maxAge: 0 } } }, path: ["trim", "minId", "maxAge"], says: "got 0" },
  { options: { stream: "s", trim: { exact: "yes" } }, path: ["trim", "exact"], says: 'got "yes"' },
  { options: { stream: "s", deadLetterStream: "" }, path: ["deadLetterStream"], says: "non-empty" },
  { options: { stream: "s", deadLetterStream: "dead}letters" }, path: ["deadLetterStream"], says: "dead}letters" },
  {
    options: { stream: "s", waitForReplicas: { replicas: 0, timeout: "1 second" } },
    path: ["waitForReplicas", "replicas"],
    says: "got 0"
  },
  {
    options: { stream: "s", waitForReplicas: { replicas: 1, timeout: 0 } },
    path: ["waitForReplicas", "timeout"],
    says: "got 0"
  },
  { options: { stream: "s", onDataLoss: "ignore" }, path: ["onDataLoss"], says: '"ignore"' }
]

describe("sink options", () => {
  describe("every rejection is a ConfigError at the option's path, saying what is wrong", () => {
    for (const { options, path, says } of rejections) {
      it.effect(`${ConfigError.formatPath(path) || "(options)"}: ${JSON.stringify(options)}`, () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(decode(options as Options))
          expect(error).toBeInstanceOf(ConfigError.ConfigError)
          expect(error.component).toBe("RedisStreamSink")
          expect(error.path).toStrictEqual(path)
          expect(error.reason).toContain(says)
        })
      )
    }
  })

  it.effect("what is left unset gets its default", () =>
    Effect.gen(function* () {
      const settings = yield* decode({ stream: "orders.events" })
      expect(settings).toMatchObject({
        pipeline: "redflow",
        sinkName: "redis",
        guarantee: "at-least-once",
        key: undefined,
        maxEvents: 4000,
        maxBytes: 4 * 1024 * 1024,
        maxBufferedBytes: 32 * 1024 * 1024,
        lingerMs: 0,
        checkpointIntervalMs: 50,
        deadLetterStream: "redflow.dead-letter",
        policies: {},
        waitForReplicas: undefined,
        onDataLoss: "fail",
        fixedStreams: ["orders.events", "redflow.dead-letter"]
      })
      expect(settings.trim.strategy).toBe("")
      expect(settings.envelope.format).toBe("native")
      // maxBufferedBytes follows maxBytes when only maxBytes is given.
      expect((yield* decode({ stream: "s", batch: { maxBytes: 1000 } })).maxBufferedBytes).toBe(8000)
    })
  )

  it.effect("what is given is resolved: durations in milliseconds, trims, templates", () =>
    Effect.gen(function* () {
      const policies = { RedisTimeout: Schedule.recurs(1) }
      const settings = yield* decode({
        stream: { default: "cdc.${table}", tables: { orders: "{orders}.events" } },
        key: "${after.id}",
        envelope: "debezium",
        guarantee: "exactly-once",
        pipeline: "p",
        batch: { maxEvents: 10, maxBytes: 2000, maxBufferedBytes: 2000, linger: "5 millis", checkpointInterval: 0 },
        trim: { minId: { maxAge: "2 seconds" }, exact: true },
        deadLetterStream: "{p}.dead",
        policies,
        waitForReplicas: { replicas: 2, timeout: "1 second" },
        onDataLoss: "continue"
      })
      expect(settings).toMatchObject({
        pipeline: "p",
        guarantee: "exactly-once",
        maxEvents: 10,
        maxBytes: 2000,
        maxBufferedBytes: 2000,
        lingerMs: 5,
        checkpointIntervalMs: 0,
        deadLetterStream: "{p}.dead",
        waitForReplicas: { replicas: 2, timeoutMs: 1000 },
        onDataLoss: "continue",
        fixedStreams: ["{orders}.events", "{p}.dead"]
      })
      expect(settings.policies).toBe(policies)
      expect(settings.envelope.format).toBe("debezium")
      expect(settings.key?.template).toBe("${after.id}")
      expect(settings.trim.strategy).toBe("MINID")
      expect(settings.trim.operator).toBe("=")
      expect(settings.trim.threshold(10_000)).toBe("8000")
      const maxLen = yield* decode({ stream: "s", trim: { maxLen: 100 } })
      expect([maxLen.trim.strategy, maxLen.trim.operator, maxLen.trim.threshold(0)]).toStrictEqual([
        "MAXLEN",
        "~",
        "100"
      ])
      const minId = yield* decode({ stream: "s", trim: { minId: "1700000000000-0" } })
      expect([minId.trim.strategy, minId.trim.threshold(0)]).toStrictEqual(["MINID", "1700000000000-0"])
    })
  )
})
