/**
 * `redflow run`: its flags and help. The work (the PostgreSQL source, `pg`, the pipeline file's YAML parser) is in
 * `../run.ts`, loaded when the command runs, so that no other command pays for loading it.
 */
import * as Effect from "effect/Effect"
import { Command, Flag } from "effect/cli"
import * as Envelope from "@redflow/core/Envelope"
import * as Flags from "../flags.ts"
import * as OperatorFlags from "../operatorFlags.ts"
import * as Output from "../output.ts"

const optionalString = (name: string, metavar: string, description: string) =>
  Flag.String(name).pipe(Flag.withMetavar(metavar), Flag.withDescription(description), Flag.optional)

export const command = Command.make(
  "run",
  {
    config: optionalString(
      "config",
      "FILE",
      "Pipeline file (YAML): source, redis, sink, checkpoint, metrics; ${NAME} takes an environment variable. Flags override it"
    ),
    source: optionalString(
      "source",
      "URL",
      "PostgreSQL URL, postgres://user[:password]@host:5432/db (a password can also come from the file or PGPASSWORD; it is never printed)"
    ),
    tables: Flags.list("tables").pipe(
      Flag.withMetavar("s.t,…"),
      Flag.withDescription("Tables to capture, schema.table (or table, in schema public), comma-separated"),
      Flag.optional
    ),
    redis: Flags.redis,
    stream: optionalString(
      "stream",
      "TEMPLATE",
      "Target stream name or template, e.g. 'cdc.${source.table}' (single quotes: the shell would expand ${…})"
    ),
    key: optionalString("key", "TEMPLATE", "Entry key template, e.g. '${key.id}'"),
    guarantee: Flag.Literals("guarantee", ["at-least-once", "exactly-once"]).pipe(
      Flag.withMetavar("MODE"),
      Flag.withDescription(
        "exactly-once skips entries already written (no duplicates after a crash or a retry); default at-least-once"
      ),
      Flag.optional
    ),
    envelope: Flag.Literals("envelope", Envelope.formats).pipe(
      Flag.withMetavar("FORMAT"),
      Flag.withDescription("Encoding of each entry's event field: native (default), debezium or cloudevents"),
      Flag.optional
    ),
    checkpoint: optionalString(
      "checkpoint",
      "FILE|redis",
      `Where checkpoints are kept: a file, or redis (the hash ${Flags.DEFAULT_CHECKPOINT_HASH}); a restart resumes there. Default: memory only`
    ),
    pipeline: optionalString(
      "pipeline",
      "NAME",
      "Pipeline name: the checkpoint key, the metrics label, and the default slot and publication (default redflow)"
    ),
    slot: optionalString("slot", "NAME", "Replication slot, created when absent (default: the pipeline name)"),
    publication: optionalString(
      "publication",
      "NAME",
      "Publication, created for the tables when absent (default: the pipeline name)"
    ),
    snapshot: Flag.Literals("snapshot", ["initial", "never"]).pipe(
      Flag.withMetavar("MODE"),
      Flag.withDescription(
        "initial (default): read the tables' rows first when there is no checkpoint; never: changes only"
      ),
      Flag.optional
    ),
    batchSize: Flags.intAtLeast("batch-size", 1, "events per batch").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Window of events written but not yet checkpointed (default 4000)"),
      Flag.optional
    ),
    maxlen: Flags.intAtLeast("maxlen", 1, "a stream length").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Trim each stream to about N entries (MAXLEN ~)"),
      Flag.optional
    ),
    ...OperatorFlags.flags,
    lease: Flags.lease,
    metricsPort: Flags.metricsPort.pipe(
      Flag.withDescription(
        "Serve /metrics, /health and /ready on this port (0 = a free port; a taken port is an error)"
      ),
      Flag.optional
    )
  },
  (flags) =>
    Output.handler(
      Effect.flatMap(
        Effect.promise(() => import("../run.ts")),
        (work) => work.run(flags)
      )
    )
).pipe(
  Command.withDescription(
    "Run a PostgreSQL → Redis Streams pipeline until SIGTERM or Ctrl-C, then drain: what was read is written and checkpointed, the replication slot is acknowledged, and the command exits 0."
  ),
  Command.withExamples([
    {
      command:
        "redflow run --source postgres://redflow@db:5432/shop --tables public.orders,public.customers --redis redis://localhost:6379 --stream 'cdc.${source.table}' --checkpoint ./shop.ckpt",
      description: "Capture two tables into cdc.orders and cdc.customers, resumable from ./shop.ckpt"
    },
    {
      command: "redflow run --config pipeline.yaml --metrics-port 9000",
      description: "The settings of pipeline.yaml, with the metrics served on port 9000"
    }
  ])
)
