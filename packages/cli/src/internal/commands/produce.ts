/**
 * `redflow produce`: its flags and help. The work (the sink, the synthetic source, Redis) is in `../produce.ts`,
 * loaded when the command runs, so that the other commands and `--help` do not load it.
 */
import * as Effect from "effect/Effect"
import { Command, Flag } from "effect/cli"
import * as Flags from "../flags.ts"
import * as OperatorFlags from "../operatorFlags.ts"
import * as Output from "../output.ts"

export const command = Command.make(
  "produce",
  {
    redis: Flags.redis,
    stream: Flag.String("stream").pipe(
      Flag.withMetavar("TEMPLATE"),
      Flag.withDescription("Target stream name or template, e.g. orders.events or cdc.${source.db}.${source.table}")
    ),
    events: Flags.intAtLeast("events", 0, "a number of events").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Events of the whole run (a resumed run produces what is left of them)")
    ),
    rate: Flags.rate.pipe(
      Flag.withDescription("Pace the source to R events per second (0, the default: as fast as Redis takes them)"),
      Flag.optional
    ),
    tables: Flags.list("tables").pipe(
      Flag.withMetavar("a,b"),
      Flag.withDescription("Source tables (default customers,orders,payments)"),
      Flag.optional
    ),
    payloadBytes: Flags.intAtLeast("payload-bytes", 0, "a size in bytes").pipe(
      Flag.withMetavar("B"),
      Flag.withDescription("Approximate JSON size of each row image"),
      Flag.optional
    ),
    guarantee: Flag.Literals("guarantee", ["at-least-once", "exactly-once"]).pipe(
      Flag.withMetavar("MODE"),
      Flag.withDescription("exactly-once skips entries already written (no duplicates after a crash or a retry)"),
      Flag.withDefault("at-least-once")
    ),
    envelope: Flags.envelope,
    checkpoint: Flag.String("checkpoint").pipe(
      Flag.withMetavar("FILE|redis"),
      Flag.withDescription(
        `Where checkpoints are kept: a file, or redis (the hash ${Flags.DEFAULT_CHECKPOINT_HASH}); a re-run resumes after the last checkpointed event`
      ),
      Flag.optional
    ),
    lease: Flags.lease,
    batchSize: Flags.intAtLeast("batch-size", 1, "events per batch").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription(
        "Window of events written but not yet checkpointed; each write carries up to a quarter (default 4000)"
      ),
      Flag.optional
    ),
    maxlen: Flags.intAtLeast("maxlen", 1, "a stream length").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Trim each stream to about N entries (MAXLEN ~)"),
      Flag.optional
    ),
    key: Flag.String("key").pipe(
      Flag.withMetavar("TEMPLATE"),
      Flag.withDescription("Entry key template, e.g. ${key.id}"),
      Flag.optional
    ),
    pipeline: Flag.String("pipeline").pipe(
      Flag.withMetavar("NAME"),
      Flag.withDescription("Pipeline name: the checkpoint key and the pipeline metric label"),
      Flag.withDefault("redflow")
    ),
    seed: Flag.Int("seed").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Seed of the synthetic data (keep it when resuming)"),
      Flag.withDefault(1)
    ),
    ...OperatorFlags.flags,
    metricsPort: Flags.metricsPort.pipe(
      Flag.withDescription(
        "Serve /metrics, /health and /ready on this port while producing (0 = a free port; a taken port is an error)"
      ),
      Flag.optional
    )
  },
  (input) =>
    Output.handler(
      Effect.flatMap(
        Effect.promise(() => import("../produce.ts")),
        (work) => work.run(input)
      )
    )
).pipe(
  Command.withDescription(
    "Write N synthetic change events to Redis Streams through the sink. With --checkpoint, running the same command again after a crash resumes where the checkpoint stands and finishes the N events."
  ),
  Command.withExamples([
    {
      command: "redflow produce --redis redis://localhost:6379 --stream 'cdc.${source.table}' --events 100000",
      description: "100,000 events into cdc.customers, cdc.orders and cdc.payments"
    },
    {
      command:
        "redflow produce --stream orders.events --events 1000000 --rate 5000 --guarantee exactly-once --checkpoint ./orders.ckpt",
      description: "A paced, resumable run without duplicates"
    }
  ])
)
