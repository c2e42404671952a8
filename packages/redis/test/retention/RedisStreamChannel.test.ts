/**
 * Pub/sub fan-out against a real (spawned: the test kills pub/sub clients) Redis: a batch becomes one notice per
 * channel naming the entries to read; pattern subscriptions; messages that are not notices are skipped; a subscriber
 * whose connection is killed says so (Resubscribed) and receives the notices published after.
 */
import { expect, layer } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import type { Redis } from "ioredis"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as RedisConnection from "../../src/RedisConnection.ts"
import * as RedisStreamChannel from "../../src/RedisStreamChannel.ts"
import { uniquePrefix, withClient } from "../support.ts"

const cmd = <A>(url: string, f: (client: Redis) => Promise<A>) => Effect.promise(() => withClient(url, f))

const withServer = <A, E>(f: (url: string) => Effect.Effect<A, E, RedisConnection.RedisConnection>) =>
  Effect.gen(function* () {
    const { url } = yield* RedisTestServer.RedisTestServer
    return yield* f(url).pipe(Effect.provide(RedisConnection.layer({ url })))
  })

/** Writes `count` events to `stream` (the sink's job) and answers them with their entry ids. */
const write = (url: string, stream: string, count: number) =>
  Effect.gen(function* () {
    const events = Array.from({ length: count }, (_, i) =>
      SyntheticSource.eventAt(i + 1, { tables: ["orders", "users"] })
    )
    const ids = yield* cmd(url, async (c) => {
      const p = c.pipeline()
      for (const e of events) p.xadd(stream, "*", "id", e.id, "table", e.source.table)
      return (await p.exec())!.map(([, id]) => id as string)
    })
    return { events, ids }
  })

/** Waits until the server counts `n` subscribers of `channel` (or `n` pattern subscriptions). */
const subscribed = (url: string, target: { channel: string } | { pattern: string }, n = 1) =>
  Effect.gen(function* () {
    for (;;) {
      const count = yield* cmd(url, async (c) =>
        "channel" in target
          ? Number(((await c.pubsub("NUMSUB", target.channel)) as Array<unknown>)[1])
          : Number(await c.pubsub("NUMPAT"))
      )
      if (count >= n) return
      yield* Effect.sleep("10 millis")
    }
  })

const take = (target: { channel: string } | { pattern: string }, n: number) =>
  RedisStreamChannel.subscribe(target).pipe(Stream.take(n), Stream.runCollect, Effect.forkChild)

layer(RedisTestServer.layer({ useEnv: false }), { excludeTestServices: true })("RedisStreamChannel", (it) => {
  it.effect("a batch is one notice on a constant channel; XRANGE first last reads the batch back", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("channel.stream")
        const channel = `${stream}.changed`
        const publisher = yield* RedisStreamChannel.makePublisher({ channel })
        const fiber = yield* take({ channel }, 2)
        yield* subscribed(url, { channel })
        const one = yield* write(url, stream, 500)
        expect(yield* publisher.afterWrite(stream, one.events, one.ids)).toBe(1)
        const two = yield* write(url, stream, 3)
        yield* publisher.afterWrite(stream, two.events, two.ids)
        const notices = yield* Fiber.join(fiber)
        expect(notices).toEqual([
          { _tag: "Notice", channel, stream, first: one.ids[0], last: one.ids[499], count: 500 },
          { _tag: "Notice", channel, stream, first: two.ids[0], last: two.ids[2], count: 3 }
        ])
        const first = notices[0] as RedisStreamChannel.Notice
        const entries = yield* cmd(url, (c) => c.xrange(stream, first.first, first.last))
        expect(entries.length).toBe(500)
      })
    )
  )

  it.effect("a channel template gives a notice per channel; a pattern subscription gets them all", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const stream = uniquePrefix("channel.template")
        const publisher = yield* RedisStreamChannel.makePublisher({ channel: `${stream}.\${table}` })
        const pattern = { pattern: `${stream}.*` }
        const fiber = yield* take(pattern, 2)
        yield* subscribed(url, pattern)
        const batch = yield* write(url, stream, 10)
        expect(yield* publisher.afterWrite(stream, batch.events, batch.ids)).toBe(2)
        const notices = (yield* Fiber.join(fiber)) as Array<RedisStreamChannel.Notice>
        const byTable = Object.fromEntries(notices.map((n) => [n.channel.slice(stream.length + 1), n.count]))
        const expected: Record<string, number> = {}
        for (const e of batch.events) expected[e.source.table] = (expected[e.source.table] ?? 0) + 1
        expect(byTable).toEqual(expected)
        for (const n of notices) {
          const table = n.channel.slice(stream.length + 1)
          const ids = batch.ids.filter((_, i) => batch.events[i]!.source.table === table)
          expect([n.first, n.last]).toEqual([ids[0], ids[ids.length - 1]])
        }
      })
    )
  )

  it.effect("a message that is not a notice is skipped", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const channel = uniquePrefix("channel.foreign")
        const fiber = yield* take({ channel }, 1)
        yield* subscribed(url, { channel })
        yield* cmd(url, (c) => c.publish(channel, "hello"))
        yield* cmd(url, (c) => c.publish(channel, RedisStreamChannel.encode("s", "1-0", "2-0", 2)))
        expect(yield* Fiber.join(fiber)).toEqual([
          { _tag: "Notice", channel, stream: "s", first: "1-0", last: "2-0", count: 2 }
        ])
      })
    )
  )

  it.effect("a killed subscriber connection reconnects: Resubscribed, then the notices published after", () =>
    withServer((url) =>
      Effect.gen(function* () {
        const channel = uniquePrefix("channel.reconnect")
        const fiber = yield* take({ channel }, 3)
        yield* subscribed(url, { channel })
        yield* cmd(url, (c) => c.publish(channel, RedisStreamChannel.encode("s", "1-0", "1-0", 1)))
        yield* cmd(url, (c) => c.call("CLIENT", "KILL", "TYPE", "pubsub"))
        // CLIENT KILL frees the client at once (NUMSUB 0); the server counts it again once it has resubscribed
        yield* subscribed(url, { channel })
        yield* cmd(url, (c) => c.publish(channel, RedisStreamChannel.encode("s", "2-0", "2-0", 1)))
        const messages = yield* Fiber.join(fiber)
        expect(messages.map((m) => (m._tag === "Notice" ? m.first : m._tag))).toEqual(["1-0", "Resubscribed", "2-0"])
      })
    )
  )

  it.effect("a channel template that does not compile is a ConfigError naming publish.channel", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(RedisStreamChannel.makePublisher({ channel: "cdc.${nope}" }))
      expect(error._tag).toBe("ConfigError")
      expect(error.field).toBe("publish.channel")
    })
  )
})
