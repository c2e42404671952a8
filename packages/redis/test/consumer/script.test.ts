/** The typed script descriptor (internal/script.ts) against a real Redis: EVALSHA, and EVAL once on NOSCRIPT. */
import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Script from "../../src/internal/script.ts"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as StreamAdmin from "../../src/StreamAdmin.ts"
import { uniquePrefix } from "../support.ts"

const incrementBy = Script.make({
  name: "test-increment-by",
  source: `return redis.call("INCRBY", KEYS[1], ARGV[1])`,
  keys: (key: string, _by: number) => [key],
  args: (_key, by) => [by],
  parse: (reply) => Number(reply)
})

layer(RedisTestServer.layer(), { excludeTestServices: true })("internal/script", (it) => {
  it.effect("runs by SHA, loads the source again after SCRIPT FLUSH, and sends the key count itself", () =>
    Effect.gen(function* () {
      const { url } = yield* RedisTestServer.RedisTestServer
      const redis = yield* RedisConnection.make({ url })
      const key = uniquePrefix("script")
      const run = <A>(effect: Effect.Effect<A, unknown, RedisConnection.RedisConnection>) =>
        Effect.provideService(effect, RedisConnection.RedisConnection, redis)
      const cached = (sha: string) =>
        run(StreamAdmin.command("SCRIPT", key, ["EXISTS", sha], (reply) => (reply as Array<number>)[0] === 1))
      // The SHA is Redis's own (SHA-1 of the source).
      const loaded = yield* run(StreamAdmin.command("SCRIPT", key, ["LOAD", incrementBy.source], String))
      expect(loaded).toBe(incrementBy.sha)
      yield* run(StreamAdmin.command("SCRIPT", key, ["FLUSH"], () => undefined))
      expect(yield* cached(incrementBy.sha)).toBe(false)
      // NOSCRIPT: sent again with EVAL, which caches it; the next call runs by SHA.
      expect(yield* run(Script.run(incrementBy, key, 2))).toBe(2)
      expect(yield* cached(incrementBy.sha)).toBe(true)
      expect(yield* run(Script.run(incrementBy, key, 3))).toBe(5)
    })
  )
})
