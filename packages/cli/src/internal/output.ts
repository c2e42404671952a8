/**
 * Output of the `redflow` commands: a terse logger on stderr, a live progress line on a TTY, failure reporting with
 * the exit code, and JSON.
 */
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { GlobalFlag } from "effect/cli"
import * as Errors from "./errors.ts"
import { Verbose } from "./flags.ts"

/** A failure already printed; carries the exit code for the process. */
export class Reported extends Schema.TaggedError<Reported>()("Reported", {
  exitCode: Schema.Number
}) {}

const render = (message: unknown): string =>
  Array.isArray(message) ? message.map(render).join(" ") : typeof message === "string" ? message : String(message)

/** On a terminal, what clears the live progress line before a line of text is written over it. */
const clearLine = () => (process.stderr.isTTY ? "\r\x1b[2K" : "")

/** One line on stderr, through the `Console` (over the live progress line on a terminal). */
export const line = (text: string): Effect.Effect<void> => Console.error(`${clearLine()}${text}`)

/** `redflow: warn: message` on stderr, without timestamps or fiber ids. */
const logger = Logger.withConsoleError(
  Logger.make(({ cause, logLevel, message }) => {
    const detail = cause.reasons.length > 0 ? ` (${Errors.describe(cause)})` : ""
    return `${clearLine()}redflow: ${logLevel.toLowerCase()}: ${render(message)}${detail}`
  })
)

/**
 * Runs a command's handler: the CLI logger (warnings and errors; everything with `--verbose`), and on failure one
 * line on stderr (`--verbose` adds the full cause) and a {@link Reported} failure with the exit code.
 */
export const handler = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const verbose = yield* Verbose
    const logLevel = yield* GlobalFlag.LogLevel
    return yield* self.pipe(
      Effect.catchCause((cause): Effect.Effect<never, Reported> =>
        Cause.hasInterruptsOnly(cause)
          ? Effect.interrupt
          : Effect.gen(function* () {
              yield* line(`redflow: error: ${Errors.describe(cause)}`)
              if (verbose) yield* Console.error(Cause.pretty(cause))
              return yield* new Reported({ exitCode: Errors.exitCode(cause) })
            })
      ),
      Effect.provide(Logger.layer([logger])),
      // Retries show in the metrics; a fatal error prints its own line. --log-level, when given, decides.
      Effect.provideService(
        References.MinimumLogLevel,
        Option.getOrElse(logLevel, () => (verbose ? "Debug" : "Error"))
      )
    )
  })

/** Prints one JSON object on stdout. */
export const printJson = (value: unknown): Effect.Effect<void> => Console.log(JSON.stringify(value, null, 2))

/** Prints lines on stdout. */
export const print = (...lines: ReadonlyArray<string>): Effect.Effect<void> => Console.log(lines.join("\n"))

/**
 * Progress on stderr while the scope is open. On a terminal: one live line, redrawn every `everyMs` and cleared when
 * the scope closes. Elsewhere (a pipe, a log file, CI): the same text as a plain line every `plainEveryMs`, so a long
 * run shows it is alive without flooding the log.
 */
export const progressLine = <R>(
  text: Effect.Effect<string, never, R>,
  everyMs = 250,
  plainEveryMs = 5_000
): Effect.Effect<void, never, Scope.Scope | R> =>
  process.stderr.isTTY !== true
    ? Effect.flatMap(text, (text) => Console.error(`redflow: ${text}`)).pipe(
        Effect.delay(`${plainEveryMs} millis`),
        Effect.forever,
        Effect.forkScoped,
        Effect.asVoid
      )
    : Effect.gen(function* () {
        // The live line is redrawn in place, without a newline, which a Console does not write: it goes to the
        // terminal itself (and is cleared before any other line is written over it).
        const draw = Effect.flatMap(text, (text) =>
          Effect.sync(() => process.stderr.write(`\r\x1b[2K${text.slice(0, (process.stderr.columns ?? 120) - 1)}`))
        )
        yield* Effect.addFinalizer(() => Effect.sync(() => process.stderr.write("\r\x1b[2K")))
        yield* draw.pipe(Effect.repeat(Schedule.spaced(`${everyMs} millis`)), Effect.forkScoped)
      })

/**
 * `12345` → `12,345`. Integers (every count and rate printed) are grouped by hand: `toLocaleString` loads ICU's
 * locale data, several megabytes of resident memory for the life of a process that only prints counts.
 */
export const count = (n: number): string =>
  Number.isSafeInteger(n) ? String(n).replace(/\B(?=(\d{3})+$)/g, ",") : n.toLocaleString("en-US")

/** Events per second over `ms`. */
export const rate = (events: number, ms: number) => (ms <= 0 ? 0 : Math.round((events * 1000) / ms))
