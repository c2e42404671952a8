/**
 * Spawning and stopping `redis-server` processes.
 *
 * Every process is registered for release the moment it exists, before it is ready, so a failed start or an
 * interrupted test still stops it. It runs in its own process group, so a Ctrl-C meant for the program that started
 * it (the terminal signals the whole foreground group) does not stop it under that program's feet. Stopping is by pid: SIGTERM (plus SIGCONT, in case a test left it paused),
 * then SIGKILL after a grace period. A process-exit hook SIGKILLs whatever is still running if the test process
 * ends without closing its scopes.
 *
 * @internal
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import { ServerStartFailed } from "../TestingError.ts"
import { freePort } from "./FreePort.ts"
import * as Poll from "./Poll.ts"
import * as Resp from "./Resp.ts"

export interface RedisProcess {
  readonly pid: number
  readonly host: string
  readonly port: number
  readonly binary: string
  readonly args: ReadonlyArray<string>
  /** The last lines the process wrote (its log goes to stdout). */
  readonly output: () => string
  readonly hasExited: () => boolean
  /** Resolves when the process has exited and been reaped. */
  readonly exited: Promise<void>
}

const OUTPUT_LIMIT = 16_384
const STOP_GRACE_MS = 2_000

const running = new Map<number, ChildProcess.ChildProcess>()
let exitHookInstalled = false

const installExitHook = () => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once("exit", () => {
    for (const child of running.values()) {
      try {
        child.kill("SIGKILL")
      } catch {
        // already gone
      }
    }
  })
}

/** The exit promise of a process this module started, if it is one. */
export const exitOf = (pid: number): Promise<void> | undefined => {
  const child = running.get(pid)
  return child === undefined ? undefined : new Promise((resolve) => child.once("exit", () => resolve()))
}

const hasExited = (child: ChildProcess.ChildProcess) => child.exitCode !== null || child.signalCode !== null

/** Stops a child by pid: SIGTERM and SIGCONT, SIGKILL after the grace period; resolves once it has exited. */
const stopChild = (child: ChildProcess.ChildProcess, exited: Promise<void>): Promise<void> => {
  if (hasExited(child)) return exited
  const pid = child.pid
  try {
    child.kill("SIGTERM")
    // A SIGSTOPped server keeps SIGTERM pending until it runs again.
    if (pid !== undefined) process.kill(pid, "SIGCONT")
  } catch {
    // exited in between
  }
  const killTimer = setTimeout(() => {
    try {
      child.kill("SIGKILL")
    } catch {
      // exited in between
    }
  }, STOP_GRACE_MS)
  return exited.finally(() => clearTimeout(killTimer))
}

const spawnChild = (
  binary: string,
  args: ReadonlyArray<string>,
  port: number,
  host: string
): Effect.Effect<RedisProcess, ServerStartFailed, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<{ readonly process: RedisProcess; readonly child: ChildProcess.ChildProcess }, ServerStartFailed>(
      (resume) => {
        let output = ""
        // Its own process group: a Ctrl-C at the terminal goes to the whole foreground group, and must reach the
        // program that started the server (which drains through it, then stops it), not the server itself.
        const child = ChildProcess.spawn(binary, [...args], { stdio: ["ignore", "pipe", "pipe"], detached: true })
        const append = (chunk: Buffer) => {
          output = (output + chunk.toString("utf8")).slice(-OUTPUT_LIMIT)
        }
        child.stdout?.on("data", append)
        child.stderr?.on("data", append)
        const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
        // `on`, not `once`: an unhandled later "error" event would crash the test process.
        child.on("error", (error: NodeJS.ErrnoException) => {
          if (child.pid !== undefined) return
          const notInstalled = error.code === "ENOENT"
          resume(
            Effect.fail(
              new ServerStartFailed({
                binary,
                args: [...args],
                reason: notInstalled ? "not-installed" : "spawn-failed",
                output: "",
                message: notInstalled
                  ? `${binary} is not installed (not found on PATH or at that path)`
                  : `could not spawn ${binary}: ${error.message}`
              })
            )
          )
        })
        child.once("spawn", () => {
          const pid = child.pid as number
          installExitHook()
          running.set(pid, child)
          void exited.then(() => running.delete(pid))
          resume(
            Effect.succeed({
              child,
              process: {
                pid,
                host,
                port,
                binary,
                args,
                output: () => output,
                hasExited: () => hasExited(child),
                exited
              }
            })
          )
        })
      }
    ),
    ({ child, process }) =>
      Effect.promise(() => stopChild(child, process.exited)).pipe(
        Effect.tap(() => Effect.logDebug("stopped redis process")),
        Effect.annotateLogs({ pid: process.pid, port: process.port })
      )
  ).pipe(Effect.map(({ process }) => process))

const failure = (process: RedisProcess, reason: ServerStartFailed["reason"], message: string) =>
  new ServerStartFailed({
    binary: process.binary,
    args: [...process.args],
    reason,
    output: process.output(),
    message: [
      message,
      `--- last output of ${process.binary} (pid ${process.pid}) ---`,
      process.output().slice(-2_000)
    ].join("\n")
  })

/** Waits until the process answers PING (any reply but LOADING counts: NOAUTH means it is up and guarded). */
const awaitReady = (process: RedisProcess, timeout: Duration.Input): Effect.Effect<void, ServerStartFailed> => {
  const exitedEarly = Effect.promise(() => process.exited).pipe(
    Effect.flatMap(() =>
      Effect.fail(
        /Address already in use/i.test(process.output())
          ? failure(process, "port-in-use", `port ${process.port} was taken before ${process.binary} bound it`)
          : failure(process, "exited", `${process.binary} exited before answering PING`)
      )
    )
  )
  const probe = Effect.suspend((): Effect.Effect<void, ServerStartFailed | Poll.NotYet> =>
    process.hasExited()
      ? exitedEarly
      : Effect.tryPromise({
          try: () => Resp.command(process, ["PING"], { timeoutMs: 1_000 }),
          catch: (error) => new Poll.NotYet(error instanceof Error ? error.message : String(error))
        }).pipe(
          Effect.flatMap((reply) =>
            reply instanceof Resp.ReplyError && reply.message.startsWith("LOADING")
              ? Poll.notYet(reply.message)
              : Effect.void
          )
        )
  )
  return Poll.until(probe, {
    interval: "10 millis",
    timeout,
    onTimeout: (state) =>
      failure(
        process,
        "timeout",
        `${process.binary} on port ${process.port} did not answer PING within ${Poll.describe(timeout)} (${state})`
      )
  })
}

export interface StartOptions {
  readonly binary?: string | undefined
  /** Builds the argument list for the port the process will listen on. */
  readonly args: (port: number) => ReadonlyArray<string>
  /** Runs before the process is spawned, e.g. to write a config file that names the port. */
  readonly prepare?: ((port: number) => Effect.Effect<void>) | undefined
  readonly host?: string | undefined
  readonly startTimeout?: Duration.Input | undefined
  /** How many fresh ports to try when the chosen one is taken before the server binds it. */
  readonly portAttempts?: number | undefined
  /** Listen on this port instead of a free one (e.g. to bring a server up where a client already waits). */
  readonly port?: number | undefined
}

/** Spawns a server on a free port and waits until it answers PING; stopped by pid when the scope closes. */
export const start = (options: StartOptions): Effect.Effect<RedisProcess, ServerStartFailed, Scope.Scope> => {
  const binary = options.binary ?? "redis-server"
  const host = options.host ?? "127.0.0.1"
  const timeout = options.startTimeout ?? "10 seconds"
  const port = options.port
  const attempt = (port !== undefined ? Effect.succeed(port) : Effect.promise(() => freePort(host))).pipe(
    Effect.tap((port) => options.prepare?.(port) ?? Effect.void),
    Effect.flatMap((port) => spawnChild(binary, options.args(port), port, host)),
    Effect.tap((process) => awaitReady(process, timeout)),
    Effect.tap((process) =>
      Effect.logDebug("started redis process").pipe(Effect.annotateLogs({ pid: process.pid, port: process.port }))
    )
  )
  return attempt.pipe(
    Effect.retry({
      times: port !== undefined ? 0 : (options.portAttempts ?? 3) - 1,
      while: (error) => error.reason === "port-in-use"
    })
  )
}

/** A temporary directory removed when the scope closes. */
export const tempDir = (prefix: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => Fs.mkdtemp(Path.join(Os.tmpdir(), `redflow-${prefix}-`))),
    (dir) => Effect.promise(() => Fs.rm(dir, { recursive: true, force: true }))
  )

/** The arguments every spawned server gets: loopback only, no persistence, files in `dir`. */
export const baseArgs = (port: number, dir: string): ReadonlyArray<string> => [
  "--port",
  String(port),
  "--bind",
  "127.0.0.1",
  "--dir",
  dir,
  "--save",
  "",
  "--appendonly",
  "no"
]
