/**
 * Options that cannot work, component by component: each is refused before anything connects, reads or writes, with
 * the one `ConfigError` whose `component` and `path` name the option (what the CLI maps to its flag), never a
 * `RangeError` or a defect. One rule per kind of option: a count is a whole number >= 1, a duration that must elapse
 * (a timeout, `block`, `minIdle`, a lease, a ttl) is finite and above 0.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import * as ConfigError from "@redflow/core/ConfigError"
import * as Idempotency from "../../src/Idempotency.ts"
import * as RedisCheckpointStore from "../../src/RedisCheckpointStore.ts"
import { RedisConnection } from "../../src/RedisConnection.ts"
import * as RedisConnectionModule from "../../src/RedisConnection.ts"
import * as RedisStreamConsumer from "../../src/RedisStreamConsumer.ts"

const consumer = { stream: "s", group: "g", consumer: "c" }

// A connection that fails the test if anything uses it: options are checked before the connection is touched.
const untouchable = Layer.succeed(
  RedisConnection,
  new Proxy({} as RedisConnectionModule.RedisConnectionService, {
    get: (_, property) => {
      throw new Error(`the connection was used (${String(property)}) before the options were checked`)
    }
  })
)

const rejection = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.exit(effect), (exit) => {
    if (Exit.isSuccess(exit)) throw new Error("expected the options to be refused")
    const error = exit.cause.reasons.find((r) => r._tag === "Fail")
    if (error === undefined) throw new Error(`expected a typed failure, got ${String(exit.cause)}`)
    return error.error
  })

const cases: ReadonlyArray<
  readonly [string, Effect.Effect<unknown, unknown, RedisConnection>, string, ReadonlyArray<string>, RegExp]
> = [
  [
    "consumer: empty consumer",
    RedisStreamConsumer.validateOptions({ ...consumer, consumer: "" }),
    "RedisStreamConsumer",
    ["consumer"],
    /non-empty/
  ],
  [
    "consumer: count 0",
    RedisStreamConsumer.validateOptions({ ...consumer, count: 0 }),
    "RedisStreamConsumer",
    ["count"],
    /positive integer, got 0/
  ],
  [
    "consumer: count 1.5",
    RedisStreamConsumer.validateOptions({ ...consumer, count: 1.5 }),
    "RedisStreamConsumer",
    ["count"],
    /positive integer, got 1.5/
  ],
  [
    "consumer: block 0",
    RedisStreamConsumer.validateOptions({ ...consumer, block: 0 }),
    "RedisStreamConsumer",
    ["block"],
    /positive finite duration/
  ],
  [
    "consumer: minIdle infinite",
    RedisStreamConsumer.validateOptions({ ...consumer, minIdle: "Infinity" }),
    "RedisStreamConsumer",
    ["minIdle"],
    /positive finite duration/
  ],
  [
    "consumer: claimInterval not a duration",
    RedisStreamConsumer.validateOptions({ ...consumer, claimInterval: "soon" as never }),
    "RedisStreamConsumer",
    ["claimInterval"],
    /got "soon"/
  ],
  [
    "consumer: maxDeliveries -1",
    RedisStreamConsumer.validateOptions({ ...consumer, maxDeliveries: -1 }),
    "RedisStreamConsumer",
    ["maxDeliveries"],
    /positive integer/
  ],
  [
    "consumer: startId",
    RedisStreamConsumer.validateOptions({ ...consumer, startId: "latest" }),
    "RedisStreamConsumer",
    ["startId"],
    /"\$", "0" or an entry id/
  ],
  [
    "consumer: envelope",
    RedisStreamConsumer.validateOptions({ ...consumer, envelope: "avro" as never }),
    "RedisStreamConsumer",
    ["envelope"],
    /must be one of native/
  ],
  [
    "consumer: dead-letter into itself",
    RedisStreamConsumer.validateOptions({ ...consumer, deadLetterStream: "s" }),
    "RedisStreamConsumer",
    ["deadLetterStream"],
    /must not be the stream it consumes/
  ],
  [
    "run: concurrency 0",
    RedisStreamConsumer.run({ ...consumer, concurrency: 0, handler: () => Effect.void }),
    "RedisStreamConsumer",
    ["concurrency"],
    /positive integer, got 0/
  ],
  [
    "run: shutdownTimeout negative",
    RedisStreamConsumer.run({ ...consumer, shutdownTimeout: -5, handler: () => Effect.void }),
    "RedisStreamConsumer",
    ["shutdownTimeout"],
    /positive finite duration/
  ],
  [
    "run: limit 0",
    RedisStreamConsumer.run({ ...consumer, limit: 0, handler: () => Effect.void }),
    "RedisStreamConsumer",
    ["limit"],
    /positive integer/
  ],
  [
    "connection: malformed URL",
    Effect.scoped(RedisConnectionModule.make({ url: "redis://localhost:notaport" })),
    "RedisConnection",
    ["url"],
    /Invalid Redis URL: cannot read host "localhost:notaport"/
  ],
  [
    "connection: commandTimeout -1",
    Effect.scoped(RedisConnectionModule.make({ url: "redis://localhost", commandTimeout: -1 })),
    "RedisConnection",
    ["commandTimeout"],
    /positive finite duration such as "5 seconds", got -1/
  ],
  [
    "connection: connectTimeout 0",
    Effect.scoped(RedisConnectionModule.make({ url: "redis://localhost", connectTimeout: "0 seconds" })),
    "RedisConnection",
    ["connectTimeout"],
    /positive finite duration/
  ],
  [
    "connection: tls on redis://",
    Effect.scoped(RedisConnectionModule.make({ url: "redis://localhost", tls: {} })),
    "RedisConnection",
    ["tls"],
    /not rediss:\/\//
  ],
  [
    "idempotency: lease 0",
    Idempotency.makeRedis({ lease: "0 millis" }),
    "Idempotency",
    ["lease"],
    /positive finite duration/
  ],
  [
    "idempotency: ttl infinite",
    Idempotency.makeRedis({ ttl: "Infinity" }),
    "Idempotency",
    ["ttl"],
    /positive finite duration/
  ],
  [
    "idempotency (memory): lease not a duration",
    Idempotency.makeMemory({ lease: "a while" as never }),
    "Idempotency",
    ["lease"],
    /got "a while"/
  ],
  ["checkpoint store: empty key", RedisCheckpointStore.make({ key: "" }), "RedisCheckpointStore", ["key"], /non-empty/]
]

describe("options that cannot work", () => {
  it.effect.each(cases)("%s: a ConfigError naming the option", ([, effect, component, path, reason]) =>
    Effect.gen(function* () {
      const error = yield* rejection(Effect.provide(effect, untouchable))
      expect(error).toBeInstanceOf(ConfigError.ConfigError)
      expect(error).toMatchObject({ _tag: "ConfigError", component, path })
      expect((error as ConfigError.ConfigError).reason).toMatch(reason)
      expect((error as ConfigError.ConfigError).message).toContain(`${component} option ${path.join(".")}:`)
    })
  )

  it.effect("the options each component accepts are accepted, 1 ms and 1 being the least", () =>
    Effect.gen(function* () {
      yield* RedisStreamConsumer.validateOptions({
        ...consumer,
        count: 1,
        block: 1,
        minIdle: "1 millis",
        maxDeliveries: 1
      })
      yield* RedisStreamConsumer.validateOptions({ ...consumer, startId: "$", deadLetterStream: "s.dlq" })
      const store = yield* Idempotency.makeMemory({ lease: "1 millis", ttl: "7 days" })
      expect(store.leaseMillis).toBe(1)
      const url = yield* Effect.sync(() => RedisConnectionModule.resolve({ url: "rediss://h:6380/2", tls: {} })).pipe(
        Effect.flatten
      )
      expect(url).toMatchObject({ connectTimeoutMs: 5000, commandTimeoutMs: 5000, socketTimeoutMs: 10000 })
    })
  )
})
