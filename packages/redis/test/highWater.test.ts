import { describe, expect, it } from "@effect/vitest"
import calculateSlot from "cluster-key-slot"
import { highWaterKey } from "../src/internal/highWater.ts"

describe("high-water mark key", () => {
  it.each(["orders.events", "cdc.shop.orders", "{orders}.events", "a{b}c", "{x}{}y", "a{b"])(
    "lives in the same hash slot as stream %j",
    (stream) => {
      const key = highWaterKey(stream)!
      expect(key).toBeDefined()
      expect(calculateSlot(key)).toBe(calculateSlot(stream))
      expect(key).not.toBe(stream)
    }
  )

  it.each(["a}b", "x{}y", "{}"])(
    "refuses %j: it has a '}' and no hash tag, so no other key shares its slot",
    (stream) => {
      expect(highWaterKey(stream)).toBeUndefined()
    }
  )
})
