/**
 * The Redis connection of a command: the library's connection layer, plus a reachability check at start so a CLI
 * run against a wrong host fails in seconds with a clear line instead of waiting out the sink's retry policy.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import type * as PipelineHealth from "@redflow/core/PipelineHealth"
import * as RedisConnection from "@redflow/redis/RedisConnection"

/** How long a command waits for Redis to answer its first PING. */
const REACHABLE_WITHIN_TRIES = 15
const REACHABLE_SPACING = "200 millis"

export const ping = RedisConnection.RedisConnection.use((redis) => redis.run((client) => client.ping()))

/** A connection to `url` that answered PING (retried for about 3 s while the server is unreachable). */
export const layer = (url: string, options: { readonly clientName?: string } = {}) =>
  Layer.effect(
    RedisConnection.RedisConnection,
    Effect.gen(function* () {
      const connection = yield* RedisConnection.make({ url, clientName: options.clientName ?? "redflow-cli" })
      yield* connection
        .run((client) => client.ping())
        .pipe(
          Effect.retry({
            while: (error) => error._tag === "RedisUnavailable" || error._tag === "RedisTimeout",
            schedule: Schedule.spaced(REACHABLE_SPACING),
            times: REACHABLE_WITHIN_TRIES
          })
        )
      return connection
    })
  )

/** The readiness check served at `/ready`. */
export const check: PipelineHealth.Check<RedisConnection.RedisConnection> = { name: "redis", run: ping }
