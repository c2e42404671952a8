import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as ConfigError from "@redflow/core/ConfigError"

const Options = Schema.Struct({
  batch: Schema.Struct({ maxEvents: Schema.Int.check(Schema.isGreaterThan(0)) }),
  tables: Schema.optionalKey(Schema.Record(Schema.String, Schema.String)),
  names: Schema.optionalKey(Schema.Array(Schema.String))
})
const decode = ConfigError.decoder("TestSink", Options)

describe("ConfigError", () => {
  it.effect("a rejected option carries its path, and the message names the component and the option", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(decode({ batch: { maxEvents: 0 } }))
      expect(error._tag).toBe("ConfigError")
      expect(error.component).toBe("TestSink")
      expect(error.path).toEqual(["batch", "maxEvents"])
      expect(error.field).toBe("batch.maxEvents")
      expect(error.message).toMatch(/^TestSink option batch\.maxEvents: .*greater than 0/)
    })
  )

  it.effect("array indexes and keys that are not identifiers are written as a user writes them", () =>
    Effect.gen(function* () {
      const inArray = yield* Effect.flip(decode({ batch: { maxEvents: 1 }, names: ["a", 3] }))
      expect(inArray.field).toBe("names[1]")
      const inRecord = yield* Effect.flip(decode({ batch: { maxEvents: 1 }, tables: { "public.orders": 5 } }))
      expect(inRecord.field).toBe('tables["public.orders"]')
    })
  )

  it.effect("valid options decode to their value; a fix, when given, ends the message", () =>
    Effect.gen(function* () {
      expect(yield* decode({ batch: { maxEvents: 3 } })).toEqual({ batch: { maxEvents: 3 } })
      const error = ConfigError.make("RedisConnection", "url", "no host", "write redis://host:6379")
      expect(error.path).toEqual(["url"])
      expect(error.message).toBe("RedisConnection option url: no host. Fix: write redis://host:6379")
    })
  )
})
