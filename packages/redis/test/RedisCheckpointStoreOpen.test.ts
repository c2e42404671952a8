/**
 * `RedisCheckpointStore.layer` proves it may write its hash when it is built: a user whose ACL lets it read the
 * checkpoint hash but not write it (`%R~`) fails before a sink writes anything, instead of at the first commit after
 * the first batch landed.
 */
import { expect, layer } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Stream } from "effect"
import { CheckpointError } from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisCheckpointStore from "../src/RedisCheckpointStore.ts"
import * as RedisConnection from "../src/RedisConnection.ts"
import * as RedisStreamSink from "../src/RedisStreamSink.ts"
import { uniquePrefix, withClient } from "./support.ts"

layer(RedisTestServer.layer({ useEnv: false }), { excludeTestServices: true })(
  "RedisCheckpointStore checks it can write",
  (it) => {
    it.effect("HSET denied on the hash (ACL %R~): CheckpointError open naming the hash and the fix; XLEN 0", () =>
      Effect.gen(function* () {
        const { url, port } = yield* RedisTestServer.RedisTestServer
        const prefix = uniquePrefix("ro-hash")
        const hash = `${prefix}:checkpoints`
        const user = prefix.replace(/[^a-z0-9]/gi, "")
        // Everything the sink needs on its streams and marks; the checkpoint hash may be read, not written.
        yield* Effect.promise(() =>
          withClient(url, (c) =>
            c.call("ACL", "SETUSER", user, "on", ">pw", "+@all", `~${prefix}.*`, `~{${prefix}.*`, `%R~${hash}`)
          )
        )
        const stream = `${prefix}.events`
        const exit = yield* SyntheticSource.make({ count: 500 }).pipe(
          RedisStreamSink.deliver({ stream, deadLetterStream: `${prefix}.dlq` }),
          Stream.runDrain,
          Effect.provide(
            RedisCheckpointStore.layer({ key: hash }).pipe(
              Layer.provideMerge(RedisConnection.layer({ url: `redis://${user}:pw@127.0.0.1:${port}` }))
            )
          ),
          Effect.exit
        )
        expect(yield* Effect.promise(() => withClient(url, (c) => c.xlen(stream)))).toBe(0)
        expect(Exit.isFailure(exit)).toBe(true)
        const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        expect(error).toBeInstanceOf(CheckpointError)
        const failure = error as CheckpointError
        expect(failure.operation).toBe("open")
        expect(failure.message).toMatch(
          new RegExp(
            `^cannot write checkpoints to ${hash}: RedisAuthFailed on HSET of hash ${hash}: NOPERM .*; ` +
              `grant this user HSET and HGET on the key \\(ACL SETUSER <user> ~${hash} \\+hset \\+hget\\), or choose another key$`
          )
        )
        expect(yield* Effect.promise(() => withClient(url, (c) => c.exists(hash)))).toBe(0)
      })
    )

    it.effect("a writable hash: the probe field is removed, and only checkpoints remain", () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const hash = uniquePrefix("probe")
        yield* Effect.promise(() => withClient(url, (c) => c.hset(hash, "other", "0000000000000001")))
        yield* RedisCheckpointStore.make({ key: hash }).pipe(Effect.provide(RedisConnection.layer({ url })))
        expect(yield* Effect.promise(() => withClient(url, (c) => c.hgetall(hash)))).toEqual({
          other: "0000000000000001"
        })
      })
    )
  }
)
