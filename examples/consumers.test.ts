/**
 * The contract's Go, Rust and Python consumers (docs/DESIGN.md) written with Redflow: each processes every event
 * once, even with the duplicates an at-least-once sink writes, never acknowledges a malformed entry as processed (it
 * is dead-lettered), and leaves nothing pending.
 */
import { expect, layer } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { Position } from "@redflow/core"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as SyntheticSource from "@redflow/core/SyntheticSource"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as StreamAdmin from "@redflow/redis/StreamAdmin"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import * as Go from "./consumer-go.ts"
import * as Python from "./consumer-python.ts"
import * as Rust from "./consumer-rust.ts"
import { allAcknowledged, publish } from "./shared.ts"

const examples = { go: Go.consume, rust: Rust.consume, python: Python.consume }

layer(RedisTestServer.layer(), { excludeTestServices: true })("the contract's consumers with Redflow", (it) => {
  for (const [name, consume] of Object.entries(examples)) {
    it.effect(`${name}: every event once despite replayed duplicates; a malformed entry is dead-lettered`, () =>
      Effect.gen(function* () {
        const { url } = yield* RedisTestServer.RedisTestServer
        const stream = `examples.${name}.${Date.now().toString(36)}.orders.events`
        yield* Effect.gen(function* () {
          yield* publish(stream, SyntheticSource.make({ count: 30, tables: ["orders"] }))
          // A producer restart replays events 21..30: same ids, new entries.
          yield* publish(
            stream,
            SyntheticSource.make({ count: 30, tables: ["orders"], from: Position.fromSequence(20) })
          )
          const malformed = yield* StreamAdmin.command(
            "XADD",
            stream,
            [stream, "*", "event", "{oops", "id", "x"],
            String
          )

          const processed: Array<CdcEvent> = []
          const fiber = yield* consume((event) => Effect.sync(() => void processed.push(event)), stream).pipe(
            Effect.forkChild
          )
          yield* allAcknowledged(stream, "mygroup").pipe(Effect.timeout("20 seconds"))
          yield* Fiber.interrupt(fiber)

          expect(processed.length).toBe(30)
          expect(processed.map((e) => e.position)).toEqual(
            Array.from({ length: 30 }, (_, i) => Position.fromSequence(i + 1))
          )
          const dead = yield* StreamAdmin.range(`${stream}.dead-letter`)
          expect(dead.map((e) => [e.fields.source_id, e.fields.event])).toEqual([[malformed, "{oops"]])
          expect((yield* StreamAdmin.pending(stream, "mygroup")).count).toBe(0)
        }).pipe(Effect.provide(RedisConnection.layer({ url })))
      })
    )
  }
})
