/**
 * `redflow demo`: its flags and help. The work (the servers it starts, PostgreSQL, the sink and a consumer group)
 * is in `../demo.ts`, loaded when the command runs.
 */
import * as Effect from "effect/Effect"
import { Command, Flag } from "effect/cli"
import * as Flags from "../flags.ts"
import * as Output from "../output.ts"

/** `--source`: `auto` runs PostgreSQL when it can and says why when it cannot. */
export const modes = ["auto", "postgres", "synthetic"] as const
export type Mode = (typeof modes)[number]

/** `--events` and `--rate` when not given: the synthetic source is fast; a live writer keeps a pace one can follow. */
export const DEFAULTS = {
  synthetic: { events: 50_000, rate: 20_000 },
  postgres: { events: 10_000, rate: 1_000 }
} as const

export const command = Command.make(
  "demo",
  {
    source: Flag.Literals("source", modes).pipe(
      Flag.withMetavar("SOURCE"),
      Flag.withDescription(
        "auto (default): PostgreSQL (DATABASE_URL, else a server the demo starts from the binaries in PG_BIN_DIR or /usr/lib/postgresql/<version>/bin), else the synthetic source; postgres: PostgreSQL or an error; synthetic: generated events, no database"
      ),
      Flag.withDefault("auto")
    ),
    redis: Flags.redis,
    events: Flags.intAtLeast("events", 1, "a number of events").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription(
        `Live changes committed in PostgreSQL (default ${Output.count(DEFAULTS.postgres.events)}; the seeded rows of the snapshot come on top), or events of the synthetic source (default ${Output.count(DEFAULTS.synthetic.events)})`
      ),
      Flag.optional
    ),
    rate: Flags.rate.pipe(
      Flag.withDescription(
        `Changes (PostgreSQL, default ${Output.count(DEFAULTS.postgres.rate)}) or events (synthetic, default ${Output.count(DEFAULTS.synthetic.rate)}) per second; 0 = as fast as they go`
      ),
      Flag.optional
    ),
    tables: Flags.list("tables").pipe(
      Flag.withMetavar("a,b"),
      Flag.withDescription("Tables of the synthetic source (default customers,orders,payments)"),
      Flag.optional
    ),
    payloadBytes: Flags.intAtLeast("payload-bytes", 0, "a size in bytes").pipe(
      Flag.withMetavar("B"),
      Flag.withDescription("Approximate JSON size of each row image of the synthetic source"),
      Flag.withDefault(256)
    ),
    guarantee: Flag.Literals("guarantee", ["at-least-once", "exactly-once"]).pipe(
      Flag.withMetavar("MODE"),
      Flag.withDescription("Write mode of the sink"),
      Flag.withDefault("exactly-once")
    ),
    envelope: Flags.envelope,
    metricsPort: Flags.metricsPort.pipe(
      Flag.withDescription(
        "Port of /metrics, /health and /ready (0 = a free port; a taken port is an error). Default 9000, or a free port when 9000 is taken"
      ),
      Flag.optional
    )
  },
  (input) =>
    Output.handler(
      Effect.flatMap(
        Effect.promise(() => import("../demo.ts")),
        (work) => work.run(input)
      )
    )
).pipe(
  Command.withDescription(
    "PostgreSQL changes flowing into Redis Streams and out through a consumer group: the demo starts its own PostgreSQL (or uses DATABASE_URL), seeds a schema of its own, and commits live inserts, updates and deletes that logical replication brings through the sink; a live progress line (changes committed, events in Redis, consumed, lag), metrics on :9000, and a summary. Without PostgreSQL binaries it runs the synthetic source and says so. Ctrl-C drains gracefully. Without --redis and REDIS_URL it starts its own redis-server."
  ),
  Command.withExamples([
    {
      command: "redflow demo",
      description: "10,000 live changes from a PostgreSQL and through a redis-server, both started for the demo"
    },
    {
      command: "DATABASE_URL=postgres://me@localhost:5432/shop redflow demo --rate 200",
      description:
        "Your PostgreSQL (wal_level=logical): a schema, slot and publication of the demo's, dropped at the end"
    },
    {
      command: "redflow demo --source synthetic --events 1000000 --rate 0 --redis redis://localhost:6379",
      description: "A million synthetic events as fast as your Redis takes them"
    }
  ])
)
