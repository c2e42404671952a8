/**
 * A write script that fails part-way writes nothing: every way the sink's script can fail, made for real, in each
 * position (before the first XADD, at the first XADD, between XADDs, at the final HSET), in both guarantees. A Lua
 * script does not roll back, so the script checks what can fail before it writes, and undoes its own entries when
 * an XADD still fails.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Option, Redacted, Stream } from "effect"
import * as CheckpointStore from "@redflow/core/CheckpointStore"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamSink from "../../src/RedisStreamSink.ts"
import { uniquePrefix, withClient } from "../support.ts"

type Guarantee = "at-least-once" | "exactly-once"

/** Runs 100 events into one fixed stream as `user`; returns the failure and the checkpoint left behind. */
const runAs = (
  url: string,
  stream: string,
  guarantee: Guarantee,
  credentials?: { readonly username: string; readonly password: string }
) =>
  Effect.gen(function* () {
    const { store } = yield* CheckpointStore.makeMemory()
    const exit = yield* SyntheticSource.make({ count: 100, chunkSize: 50 }).pipe(
      Stream.run(RedisStreamSink.make({ stream, pipeline: stream, guarantee, batch: { maxEvents: 200 } })),
      Effect.provide(
        Layer.mergeAll(
          RedisConnection.layer({
            url,
            ...(credentials === undefined
              ? {}
              : { username: credentials.username, password: Redacted.make(credentials.password) })
          }),
          Layer.succeed(CheckpointStore.CheckpointStore, store)
        )
      ),
      Effect.exit
    )
    const checkpoint = yield* Effect.orDie(store.load(stream))
    return { exit, checkpoint }
  })

const failure = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected the sink to fail, it succeeded")
  const error = Option.getOrUndefined(Cause.findErrorOption(exit.cause))
  if (error === undefined) throw new Error(`expected a typed failure, got ${Cause.pretty(exit.cause)}`)
  return error
}

const xlen = (url: string, stream: string) => Effect.promise(() => withClient(url, (c) => c.xlen(stream)))
const markOf = (url: string, stream: string) =>
  Effect.promise(() => withClient(url, (c) => c.hget(`{${stream}}:redflow:hwm`, stream)))

describe("a write script that fails writes nothing (all or nothing, in every position)", () => {
  for (const guarantee of ["exactly-once", "at-least-once"] as const) {
    it.live(`${guarantee}: ACL without HSET, XADD or HGET, or without the mark's key: NOPERM before any write`, () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ useEnv: false })
        const prefix = uniquePrefix(`acl-${guarantee}`)
        const users = [
          ["nohset", ["~*", "+@all", "-hset"], "hset"],
          ["noxadd", ["~*", "+@all", "-xadd"], "xadd"],
          ["nohget", ["~*", "+@all", "-hget"], "hget"],
          // May write the stream but not its high-water hash.
          ["streamonly", [`~${prefix}.*`, "+@all"], "the keys"]
        ] as const
        yield* Effect.promise(() =>
          withClient(server.url, async (c) => {
            for (const [name, rules] of users) await c.call("ACL", "SETUSER", name, "on", ">pw", ...rules)
          })
        )
        for (const [username, , command] of users) {
          const stream = `${prefix}.${username}`
          // Three runs, as an operator retrying would: the stream stays empty every time.
          for (let run = 0; run < 3; run++) {
            const { exit, checkpoint } = yield* runAs(server.url, stream, guarantee, { username, password: "pw" })
            const error = failure(exit)
            expect(error._tag).toBe("RedisAuthFailed")
            expect(error.message).toContain(command === "the keys" ? "one of the keys" : `'${command}' command`)
            expect(error.message).toContain(stream)
            expect(yield* xlen(server.url, stream)).toBe(0)
            expect(Option.isNone(checkpoint)).toBe(true)
          }
          expect(yield* markOf(server.url, stream)).toBeNull()
        }
      })
    )

    it.live(`${guarantee}: a mark key or a stream key of the wrong type: the error names the key and the command`, () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ useEnv: false })
        const prefix = uniquePrefix(`wrongtype-${guarantee}`)
        const badMark = `${prefix}.mark`
        const badStream = `${prefix}.stream`
        yield* Effect.promise(() =>
          withClient(server.url, async (c) => {
            await c.set(`{${badMark}}:redflow:hwm`, "not a hash")
            await c.set(badStream, "not a stream")
          })
        )
        const mark = failure((yield* runAs(server.url, badMark, guarantee)).exit)
        expect(mark._tag).toBe("RedisCommandError")
        expect(mark.message).toMatch(/^WRONGTYPE/)
        expect(mark.message).toContain(`HGET of the high-water mark {${badMark}}:redflow:hwm`)
        expect(yield* xlen(server.url, badMark)).toBe(0)

        const stream = failure((yield* runAs(server.url, badStream, guarantee)).exit)
        expect(stream._tag).toBe("RedisCommandError")
        expect(stream.message).toMatch(/^WRONGTYPE/)
        expect(stream.message).toContain(`XADD on ${badStream}`)
        expect(yield* Effect.promise(() => withClient(server.url, (c) => c.get(badStream)))).toBe("not a stream")
        expect(yield* markOf(server.url, badStream)).toBeNull()
      })
    )

    it.live(`${guarantee}: an XADD that fails after others of the same call succeeded: those are removed again`, () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ useEnv: false })
        const stream = uniquePrefix(`exhausted-${guarantee}`)
        // One id is left before the stream's last possible one: the first XADD of a call takes it, the next fails.
        yield* Effect.promise(() =>
          withClient(server.url, (c) => c.xadd(stream, "18446744073709551615-18446744073709551614", "seed", "1"))
        )
        const { exit, checkpoint } = yield* runAs(server.url, stream, guarantee)
        const error = failure(exit)
        expect(error._tag).toBe("RedisCommandError")
        expect(error.message).toContain("exhausted the last possible ID")
        expect(error.message).toContain(`XADD on ${stream}`)
        expect(error.message).toContain("1 entries of this call removed again")
        const entries = yield* Effect.promise(() => withClient(server.url, (c) => c.xrange(stream, "-", "+")))
        expect(entries.map(([id]) => id)).toEqual(["18446744073709551615-18446744073709551614"])
        expect(yield* markOf(server.url, stream)).toBeNull()
        expect(Option.isNone(checkpoint)).toBe(true)
      })
    )

    it.live(`${guarantee}: an XADD that fails after several of the same call succeeded: all of them are removed`, () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make({ useEnv: false })
        const stream = uniquePrefix(`exhausted-late-${guarantee}`)
        // Three ids are left before the stream's last possible one is used: the fourth XADD of the call fails.
        const seed = "18446744073709551615-18446744073709551612"
        yield* Effect.promise(() => withClient(server.url, (c) => c.xadd(stream, seed, "seed", "1")))
        const { exit, checkpoint } = yield* runAs(server.url, stream, guarantee)
        const error = failure(exit)
        expect(error._tag).toBe("RedisCommandError")
        expect(error.message).toContain("exhausted the last possible ID")
        expect(error.message).toContain("3 entries of this call removed again")
        const entries = yield* Effect.promise(() => withClient(server.url, (c) => c.xrange(stream, "-", "+")))
        expect(entries.map(([id]) => id)).toEqual([seed])
        expect(yield* markOf(server.url, stream)).toBeNull()
        expect(Option.isNone(checkpoint)).toBe(true)
      })
    )
  }
})
