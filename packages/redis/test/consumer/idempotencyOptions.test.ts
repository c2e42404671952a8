/** Idempotency's options: a duration that cannot work fails with the configuration error naming it (not a RangeError). */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Idempotency from "../../src/Idempotency.ts"

describe("Idempotency options", () => {
  it.effect("a lease or ttl that is not a positive finite duration fails with RedisConfigError naming it", () =>
    Effect.gen(function* () {
      const lease = yield* Effect.flip(Idempotency.makeMemory({ lease: "0 millis" }))
      expect(lease).toMatchObject({ _tag: "RedisConfigError", field: "lease" })
      expect(lease.message).toMatch(/lease must be a positive finite duration/)
      const ttl = yield* Effect.flip(Idempotency.makeMemory({ ttl: "Infinity" }))
      expect(ttl).toMatchObject({ _tag: "RedisConfigError", field: "ttl" })
    })
  )
})
