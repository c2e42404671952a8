/**
 * One application instance of examples/feature-flags.ts, run as a process of its own by that example:
 * `feature-flags-instance.ts <name>` with `REDIS_URL` and `FLAGS_STREAM` in its environment. It holds every flag in
 * memory, follows the flags' change stream from its start with a plain subscription (XREAD: every instance sees
 * every change), reports each change it applied on stdout as a JSON line, and answers `state` and
 * `decide <flag> <users>` on stdin; its stdin closing ends it (exit 0).
 *
 * It imports only what an instance needs (no PostgreSQL, no harness): five of them start at once.
 */
import * as Readline from "node:readline"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { resolve } from "node:path"
import { Cause, Config, Effect, Stream } from "effect"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as RedisConnection from "@redflow/redis/RedisConnection"
import * as RedisStreamConsumer from "@redflow/redis/RedisStreamConsumer"

/** A failure as one line on stderr (the parent shows it if the instance exits). */
const report = (cause: Cause.Cause<unknown>) =>
  Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.sync(() => process.stderr.write(`${Cause.pretty(cause)}\n`))

export type Flag = { readonly id: string; readonly enabled: boolean; readonly rollout: number }

/** FNV-1a of `flag:user`, in 0..99: the user's place in the flag's rollout, the same in every process. */
export const bucket = (flag: string, user: number): number => {
  let h = 0x811c9dc5
  const key = `${flag}:${user}`
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0) % 100
}

/** Whether `flag` is on for `user`. */
export const isEnabled = (flag: Flag | undefined, user: number): boolean =>
  flag !== undefined && flag.enabled && bucket(flag.id, user) < flag.rollout

/** How many of users 1..`users` the flag lets in. */
export const decide = (flag: Flag | undefined, users: number): number => {
  let n = 0
  for (let user = 1; user <= users; user++) if (isEnabled(flag, user)) n++
  return n
}

/** What an instance prints on stdout, one JSON object a line. */
export type Report =
  | { readonly type: "ready"; readonly pid: number }
  | {
      readonly type: "applied"
      readonly event: string
      readonly op: CdcEvent["op"]
      readonly flag: string
      /** When it applied it (Date.now()) and when PostgreSQL committed it (`source.ts_ms`). */
      readonly at: number
      readonly commit: number
    }
  | { readonly type: "state"; readonly flags: ReadonlyArray<Flag> }
  | { readonly type: "decided"; readonly flag: string; readonly users: number; readonly enabled: number }

/** The instance's program. */
export const instanceMain = (name: string) =>
  NodeRuntime.runMain(
    Effect.gen(function* () {
      const stream = yield* Config.String("FLAGS_STREAM")
      const url = yield* Config.String("REDIS_URL")
      const flags = new Map<string, Flag>()
      const say = (report: Report) => process.stdout.write(`${JSON.stringify(report)}\n`)
      const apply = (event: CdcEvent) => {
        if (event.op === "t") flags.clear()
        else if (event.op === "d") flags.delete(String(event.before?.id))
        else {
          const row = event.after as Flag
          flags.set(row.id, { id: row.id, enabled: row.enabled, rollout: row.rollout })
        }
        const flag = String((event.after ?? event.before)?.id ?? "*")
        say({ type: "applied", event: event.id, op: event.op, flag, at: Date.now(), commit: event.source.ts_ms })
      }
      const follow = RedisStreamConsumer.subscribe({ stream, from: "0-0" }).pipe(
        Stream.runForEach((entry) => Effect.sync(() => apply(entry.event))),
        Effect.provide(RedisConnection.layer({ url, clientName: `feature-flags-${name}` }))
      )
      // Commands from the parent; its stdin closing (the parent stopping, or gone) ends the instance.
      const commands = Effect.callback<void>((resume) => {
        const lines = Readline.createInterface({ input: process.stdin })
        lines.on("line", (line) => {
          const [command, flag, users] = line.trim().split(" ")
          if (command === "state") say({ type: "state", flags: [...flags.values()] })
          else if (command === "decide" && flag !== undefined) {
            const n = Number(users ?? 100)
            say({ type: "decided", flag, users: n, enabled: decide(flags.get(flag), n) })
          }
        })
        lines.on("close", () => resume(Effect.void))
        return Effect.sync(() => lines.close())
      })
      say({ type: "ready", pid: process.pid })
      yield* Effect.raceFirst(follow, commands)
    }).pipe(Effect.tapCause(report)),
    { disableErrorReporting: true }
  )

// Started as a program, not imported (by feature-flags.ts, for its types and the rollout functions).
if (process.argv[1] !== undefined && resolve(process.argv[1]) === import.meta.filename)
  instanceMain(process.argv[2] ?? "app")
