/**
 * `redflow consume`: its flags and help. The work (the consumer group worker) is in `../consume.ts`, loaded when the
 * command runs.
 */
import * as Effect from "effect/Effect"
import { Command, Flag } from "effect/cli"
import * as Flags from "../flags.ts"
import * as Output from "../output.ts"

export const command = Command.make(
  "consume",
  {
    redis: Flags.redis,
    stream: Flag.String("stream").pipe(Flag.withDescription("Stream to read, e.g. orders.events")),
    group: Flag.String("group").pipe(
      Flag.withDescription("Consumer group (created at the start of the stream when missing)")
    ),
    consumer: Flag.String("consumer").pipe(
      Flag.withDescription("This consumer's name in the group; keep it across restarts to recover its pending entries")
    ),
    count: Flags.intAtLeast("count", 1, "a number of messages").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Exit after N messages were processed and acknowledged (default: run until Ctrl-C)"),
      Flag.optional
    ),
    claimIdle: Flags.intAtLeast("claim-idle", 1, "milliseconds").pipe(
      Flag.withMetavar("MS"),
      Flag.withDescription("Take over entries other consumers left pending this long (XAUTOCLAIM; default 30000)"),
      Flag.optional
    ),
    deadLetter: Flag.String("dead-letter").pipe(
      Flag.withMetavar("STREAM"),
      Flag.withDescription("Where undecodable or too-often-delivered entries go (default <stream>.dead-letter)"),
      Flag.optional
    ),
    maxDeliveries: Flags.intAtLeast("max-deliveries", 1, "a number of deliveries").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Deliveries before an entry goes to the dead-letter stream (default 5)"),
      Flag.optional
    ),
    concurrency: Flags.intAtLeast("concurrency", 1, "a number of handlers").pipe(
      Flag.withMetavar("N"),
      Flag.withDescription("Messages processed at once"),
      Flag.withDefault(1)
    ),
    startId: Flag.String("start-id").pipe(
      Flag.withMetavar("ID"),
      Flag.withDescription("Where a new group starts: 0 (the whole stream), $ (only new entries) or an id"),
      Flag.withDefault("0")
    ),
    envelope: Flags.envelope,
    print: Flag.Boolean("print").pipe(
      Flag.withDescription("Print each event as one JSON line on stdout"),
      Flag.withDefault(false)
    ),
    metricsPort: Flags.metricsPort.pipe(
      Flag.withDescription(
        "Serve /metrics, /health and /ready on this port while consuming (0 = a free port; a taken port is an error)"
      ),
      Flag.optional
    )
  },
  (input) =>
    Output.handler(
      Effect.flatMap(
        Effect.promise(() => import("../consume.ts")),
        (work) => work.run(input)
      )
    )
).pipe(
  Command.withDescription(
    "A consumer-group worker: reads a stream with XREADGROUP, acknowledges each event after processing it, takes over entries idle past --claim-idle and dead-letters poison entries. With --count N it exits after N messages are processed and acknowledged."
  ),
  Command.withExamples([
    {
      command:
        "redflow consume --redis redis://localhost:6379 --stream orders.events --group mygroup --consumer worker1",
      description: "Work until Ctrl-C (which finishes and acknowledges what is in flight)"
    },
    {
      command: "redflow consume --stream orders.events --group mygroup --consumer worker2 --count 100 --print",
      description: "Process 100 events, printing each as JSON, then exit"
    }
  ])
)
