/**
 * The synthetic source with large row images: what it hands over at once is bounded by bytes, not only by
 * `chunkSize`, and rows of megabytes are still about `payloadBytes` and deterministic.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as SyntheticSource from "../src/SyntheticSource.ts"

/** The size of every chunk a run emits. */
const chunkSizes = (options: SyntheticSource.Options) =>
  Effect.gen(function* () {
    const sizes: Array<number> = []
    yield* Stream.runForEachArray(SyntheticSource.make(options), (chunk) => Effect.sync(() => sizes.push(chunk.length)))
    return sizes
  })

const rowBytes = (e: ReturnType<typeof SyntheticSource.eventAt>) =>
  [e.before, e.after].filter((r) => r !== null).map((r) => JSON.stringify(r).length)

describe("SyntheticSource with large payloads", () => {
  it.effect(
    "a chunk holds about 4 MiB of row images: two events of 1 MB, one of 100 MB; small ones keep chunkSize",
    () =>
      Effect.gen(function* () {
        const megabyte = yield* chunkSizes({ count: 12, payloadBytes: 1_000_000 })
        assert.deepStrictEqual(megabyte, [2, 2, 2, 2, 2, 2])
        const huge = yield* chunkSizes({ count: 2, payloadBytes: 100_000_000 })
        assert.deepStrictEqual(huge, [1, 1])
        const small = yield* chunkSizes({ count: 3000, payloadBytes: 512 })
        assert.deepStrictEqual(small, [1024, 1024, 952])
      })
  )

  it.effect("rows of 2 MB are about payloadBytes, and the same in a stream and from eventAt", () =>
    Effect.gen(function* () {
      const options = { count: 8, payloadBytes: 2_000_000, seed: 5 }
      const events = yield* Stream.runCollect(SyntheticSource.make(options))
      assert.strictEqual(events.length, 8)
      const { count: _count, ...identity } = options
      events.forEach((e, i) => {
        for (const size of rowBytes(e)) assert.approximately(size, 2_000_000, 2_000)
        assert.deepStrictEqual(SyntheticSource.eventAt(i + 1, identity), e)
      })
    })
  )
})
