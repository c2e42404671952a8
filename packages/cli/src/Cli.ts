/**
 * The `redflow` command line: `run` (a PostgreSQL → Redis Streams pipeline, from flags or a YAML file), `produce`,
 * `consume`, `stream info|groups|pending|trim|claim` and `demo`, built with Effect's CLI module.
 *
 * Exit codes: 0 done (also after a signal that drained the run), 1 any other fatal error, 2 bad arguments or
 * configuration (the message names the flag or the pipeline file's setting; also a PostgreSQL server or table that
 * cannot work as configured), 3 authentication or permission failure (Redis, or a PostgreSQL role refused), 4 a
 * drain that did not finish within `--drain-timeout`, 130 a second signal that stopped a drain. A failure prints one line on stderr; `--verbose` adds
 * the cause.
 *
 * @example
 * ```ts
 * // bin.ts
 * Cli.main(process.argv.slice(2))
 * ```
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Runtime from "effect/Runtime"
import { CliError, CliOutput, Command } from "effect/cli"
import * as Consume from "./internal/commands/consume.ts"
import * as Demo from "./internal/commands/demo.ts"
import * as Produce from "./internal/commands/produce.ts"
import * as Run from "./internal/commands/run.ts"
import * as Errors from "./internal/errors.ts"
import * as HeapCompaction from "./internal/heapCompaction.ts"
import { Json, Verbose } from "./internal/flags.ts"
import { Reported } from "./internal/output.ts"
import * as Shutdown from "./internal/shutdown.ts"
import * as Stream from "./internal/stream.ts"

/**
 * The version of this package, read from its package.json when asked (`redflow --version`): the file one level
 * above this module, in the sources as in the published `dist/`.
 */
export const version = (): string =>
  (JSON.parse(Fs.readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version

/** The root command. */
export const command = Command.make("redflow").pipe(
  Command.withDescription(
    "Move CDC events into Redis Streams and back out: run a PostgreSQL pipeline, produce, consume, inspect, demo."
  ),
  Command.withSubcommands([Run.command, Produce.command, Consume.command, Stream.command, Demo.command]),
  Command.withGlobalFlags([Json, Verbose, Shutdown.DrainTimeout])
)

/**
 * Parse errors as one line each plus a pointer to `--help`, on stderr; help and version as usual on stdout.
 */
const presenter: CliOutput.Presenter = {
  present: (event) =>
    event._tag === "InvalidInvocation"
      ? Effect.gen(function* () {
          const path = event.commandPath.join(" ")
          // After an unknown subcommand, the flags meant for it are unrecognized too: that second error is noise.
          const unknown = event.errors.some((e) => e._tag === "UnknownSubcommand")
          for (const error of event.errors.filter((e) => !unknown || e._tag !== "UnrecognizedOption")) {
            yield* Console.error(`redflow: error: ${error.message.split("\n")[0]}`)
          }
          yield* Console.error(`Run \`${path} --help\` for the flags and what they expect.`)
        })
      : CliOutput.defaultPresenter.present(event)
}

/** The exit code of a finished run. */
export const exitCodeOf = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit)) return Errors.EXIT_OK
  const error = Cause.squash(exit.cause)
  if (error instanceof Reported || error instanceof Shutdown.Stopped) return error.exitCode
  if (CliError.isCliError(error)) return Errors.EXIT_USAGE
  return Errors.exitCode(exit.cause)
}

/**
 * A failure that no command reported (one of the CLI itself), said in one line; `--verbose` adds the cause. Parse
 * errors were said by the presenter, and a signal's outcome by {@link Shutdown}.
 */
const reportUnreported = (args: ReadonlyArray<string>) => (exit: Exit.Exit<unknown, unknown>) =>
  Effect.gen(function* () {
    if (Exit.isSuccess(exit)) return
    const error = Cause.squash(exit.cause)
    if (error instanceof Reported || error instanceof Shutdown.Stopped || exitCodeOf(exit) === Errors.EXIT_USAGE) return
    if (!Cause.hasInterruptsOnly(exit.cause)) yield* Console.error(`redflow: error: ${Errors.describe(exit.cause)}`)
    if (args.includes("--verbose")) yield* Console.error(Cause.pretty(exit.cause))
  })

/**
 * The command line with these arguments, as `redflow` runs it: under {@link Shutdown.supervise} (Ctrl-C and SIGTERM
 * drain or stop it), with the quiet-heap compaction beside it, output through the `Console`. It fails as the command
 * did; {@link exitCodeOf} says the exit code.
 */
export const run = (args: ReadonlyArray<string>): Effect.Effect<void, unknown> =>
  Effect.scoped(
    Effect.andThen(
      // The quiet-heap compaction runs beside every command; a short one ends before its first sample.
      Effect.forkScoped(HeapCompaction.run(HeapCompaction.nodeProcess())),
      Shutdown.supervise(Command.runWith(command, { version: version() })(args))
    )
  ).pipe(
    Effect.onExit(reportUnreported(args)),
    Effect.provide(CliOutput.layerPresenter(presenter)),
    Effect.provide(NodeServices.layer)
  )

/** Exits the process with the code {@link exitCodeOf} gives. */
const teardown: Runtime.Teardown = (exit, onExit) => onExit(exitCodeOf(exit))

/**
 * Runs `program` as the `redflow` process, by `NodeRuntime.runMain`: its own error report is off (the program says
 * what failed, once) and {@link teardown} maps the exit to the code.
 */
export const runProcess = <A, E>(program: Effect.Effect<A, E>): void =>
  NodeRuntime.runMain(program, { disableErrorReporting: true, teardown })

/** Runs the command line with these arguments and exits the process with the exit code. */
export const main = (args: ReadonlyArray<string>): void => runProcess(run(args))
