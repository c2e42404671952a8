/**
 * A PostgreSQL server for a test, ready for logical decoding: `initdb` into a temp dir, `wal_level=logical`,
 * replication slots and WAL senders enabled, trust authentication on 127.0.0.1 only (no Unix socket), on a free
 * port. The postmaster runs in its own process group and is stopped by pid when the scope closes; the temp dir is
 * removed. `crash()` is `pg_ctl stop -m immediate` (no shutdown checkpoint: the recovery path), `restart()` starts it
 * again on the same port and data dir.
 *
 * The binaries are taken from `binDir`, `PG_BIN_DIR`, or the newest `/usr/lib/postgresql/<version>/bin`; when this
 * process is root they run as the `postgres` user. Without them it fails with {@link PostgresNotInstalled}.
 *
 * @example
 * ```ts
 * import { PostgresTestServer } from "@redflow/testing"
 *
 * it.effect("decodes", () =>
 *   Effect.gen(function*() {
 *     const server = yield* PostgresTestServer.make()
 *     // server.url === "postgres://postgres@127.0.0.1:40123/postgres"
 *     yield* server.crash
 *     yield* server.restart
 *   }))
 * ```
 *
 * @since 0.1.0
 */
import * as Fs from "node:fs/promises"
import * as Path from "node:path"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { freePort } from "./internal/FreePort.ts"
import * as Poll from "./internal/Poll.ts"
import * as PostgresProcess from "./internal/PostgresProcess.ts"
import { tempDir } from "./internal/RedisProcess.ts"
import { runScoped } from "./internal/Scoped.ts"

/**
 * The PostgreSQL server binaries are not there. `missing` names what was looked for and where; the message says how
 * to install them.
 *
 * @since 0.1.0
 * @category errors
 */
export class PostgresNotInstalled extends Schema.TaggedError<PostgresNotInstalled>()("PostgresNotInstalled", {
  missing: Schema.Array(Schema.String),
  message: Schema.String
}) {}

/**
 * The server did not start: `reason` is `"no-user"` (root, and no `postgres` user to run as), `"initdb-failed"`,
 * `"spawn-failed"`, `"port-in-use"`, `"exited"` or `"timeout"`; `output` is the tail of its log.
 *
 * @since 0.1.0
 * @category errors
 */
export class PostgresStartFailed extends Schema.TaggedError<PostgresStartFailed>()("PostgresStartFailed", {
  reason: Schema.Literals(["no-user", "initdb-failed", "spawn-failed", "port-in-use", "exited", "timeout"]),
  output: Schema.String,
  message: Schema.String
}) {}

/**
 * `pg_ctl` (the crash) failed or could not be run.
 *
 * @since 0.1.0
 * @category errors
 */
export class PostgresControlFailed extends Schema.TaggedError<PostgresControlFailed>()("PostgresControlFailed", {
  command: Schema.String,
  output: Schema.String,
  message: Schema.String
}) {}

/**
 * Why a test server could not start: the binaries are missing, or the server did not come up.
 *
 * @since 0.1.0
 * @category errors
 */
export type StartError = PostgresNotInstalled | PostgresStartFailed

/**
 * Options of {@link make} and {@link layer}: where the binaries are, the OS user, extra settings, the port, and how
 * long a start and a stop may take.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** The directory holding `initdb`, `postgres`, `pg_ctl`, `pg_isready`. Default `PG_BIN_DIR`, else the newest one. */
  readonly binDir?: string | undefined
  /** The OS user the binaries run as when this process is root. Default `postgres`. */
  readonly osUser?: string | undefined
  /** Extra `postgresql.conf` settings, e.g. `{ max_wal_size: "64MB" }`. */
  readonly settings?: Readonly<Record<string, string | number | boolean>> | undefined
  /** Listen on this port rather than a free one. */
  readonly port?: number | undefined
  /** How long a start (or a restart, crash recovery included) may take to accept connections. Default 60 seconds. */
  readonly startTimeout?: Duration.Input | undefined
  /** How long a stop waits after SIGINT (fast shutdown) before SIGKILL of the process group. Default 10 seconds. */
  readonly stopGrace?: Duration.Input | undefined
}

/**
 * A running test server.
 *
 * @since 0.1.0
 * @category models
 */
export interface Server {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string
  readonly host: string
  readonly port: number
  readonly user: string
  readonly database: string
  /** The directory of the server binaries (`pgbench`, `pg_recvlogical` and `psql` live there too). */
  readonly binDir: string
  readonly dataDir: string
  /** The postmaster's pid now (a restart changes it). */
  readonly pid: () => number
  /** Whether the postmaster is running. */
  readonly isRunning: () => boolean
  /** The tail of the server's log, across restarts. */
  readonly output: () => string
  /** `pg_ctl stop -m immediate`: a crash, no shutdown checkpoint. Resolves once the postmaster has exited. */
  readonly crash: Effect.Effect<void, PostgresControlFailed>
  /** Starts the server again on the same port and data dir (stopping it first, fast, if it runs). */
  readonly restart: Effect.Effect<void, PostgresStartFailed>
}

const defaults = {
  user: "postgres",
  database: "postgres",
  host: "127.0.0.1",
  startTimeout: "60 seconds",
  stopGrace: "10 seconds",
  settings: {
    wal_level: "logical",
    max_replication_slots: 16,
    max_wal_senders: 16,
    listen_addresses: "'127.0.0.1'",
    // No Unix socket: the only way in is TCP on loopback, where pg_hba.conf trusts.
    unix_socket_directories: "''",
    max_connections: 50,
    shared_buffers: "32MB"
  }
} as const

// Trust on loopback TCP only, for sessions and for replication connections; nothing else is accepted.
const PG_HBA = ["host all all 127.0.0.1/32 trust", "host replication all 127.0.0.1/32 trust", ""].join("\n")

const OUTPUT_LIMIT = 32_768

const envBinDir = Config.option(Config.String("PG_BIN_DIR")).pipe(
  Effect.map(Option.filter((dir) => dir !== "")),
  Effect.orElseSucceed(() => Option.none<string>())
)

const settingLine = (name: string, value: string | number | boolean) =>
  `${name} = ${typeof value === "string" && !value.startsWith("'") && !/^[\w.]+$/.test(value) ? `'${value}'` : value}`

const locate = (binDir: string | undefined) =>
  Effect.promise(() => PostgresProcess.findBinDir(binDir)).pipe(
    Effect.flatMap(({ found, tried }) =>
      found !== undefined
        ? Effect.succeed(found)
        : Effect.fail(
            new PostgresNotInstalled({
              missing: [...tried],
              message:
                `No PostgreSQL server binaries (${PostgresProcess.REQUIRED_BINARIES.join(", ")}): ${tried.join("; ")}. ` +
                "Install them (`apt-get install -y postgresql`), or point PG_BIN_DIR (or the binDir option) at the " +
                "directory that holds them."
            })
          )
    )
  )

/**
 * A PostgreSQL server for the current scope, with `wal_level=logical`, stopped by pid and its data dir removed when
 * the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Server, StartError, Scope.Scope> =>
  Effect.gen(function* () {
    const binDir = yield* locate(options.binDir ?? Option.getOrUndefined(yield* envBinDir))
    const bin = (name: string) => Path.join(binDir, name)
    const as = yield* Effect.tryPromise({
      try: () => PostgresProcess.identity(options.osUser),
      catch: (cause) =>
        new PostgresStartFailed({
          reason: "no-user",
          output: "",
          message:
            `This process is root and initdb refuses root, but it cannot run as ${options.osUser ?? "postgres"}: ` +
            `${cause instanceof Error ? cause.message : String(cause)}. Create that user or pass osUser.`
        })
    })
    const dir = yield* tempDir("postgres")
    const dataDir = Path.join(dir, "data")
    if (as !== undefined) yield* Effect.promise(() => Fs.chown(dir, as.uid, as.gid))

    const initdb = yield* Effect.promise(() =>
      PostgresProcess.run(
        bin("initdb"),
        ["-D", dataDir, "-A", "trust", "-U", defaults.user, "-E", "UTF8", "--locale=C", "--no-sync"],
        as
      ).catch((error: unknown) => ({ code: -1, output: error instanceof Error ? error.message : String(error) }))
    )
    if (initdb.code !== 0) {
      return yield* new PostgresStartFailed({
        reason: "initdb-failed",
        output: initdb.output,
        message: `initdb -D ${dataDir} failed (exit ${initdb.code}):\n${initdb.output.slice(-2_000)}`
      })
    }
    const settings = { ...defaults.settings, ...options.settings }
    yield* Effect.promise(async () => {
      await Fs.appendFile(
        Path.join(dataDir, "postgresql.conf"),
        ["", "# @redflow/testing", ...Object.entries(settings).map(([k, v]) => settingLine(k, v)), ""].join("\n")
      )
      await Fs.writeFile(Path.join(dataDir, "pg_hba.conf"), PG_HBA)
    })

    let output = ""
    const append = (text: string) => {
      output = (output + text).slice(-OUTPUT_LIMIT)
    }
    const startTimeout = options.startTimeout ?? defaults.startTimeout
    const stopGraceMs = Duration.toMillis(Duration.fromInputUnsafe(options.stopGrace ?? defaults.stopGrace))

    const failure = (reason: PostgresStartFailed["reason"], message: string) =>
      new PostgresStartFailed({
        reason,
        output,
        message: [message, `--- last output of postgres ---`, output.slice(-2_000)].join("\n")
      })

    const awaitReady = (child: PostgresProcess.Child, port: number): Effect.Effect<void, PostgresStartFailed> => {
      const probe = Effect.suspend((): Effect.Effect<void, PostgresStartFailed | Poll.NotYet> => {
        if (child.hasExited()) {
          return Effect.fail(
            /could not bind|Address already in use/i.test(output)
              ? failure("port-in-use", `port ${port} was taken before postgres bound it`)
              : failure("exited", "postgres exited before accepting connections")
          )
        }
        return Effect.promise(() =>
          PostgresProcess.run(
            bin("pg_isready"),
            ["-q", "-h", defaults.host, "-p", String(port), "-U", defaults.user, "-d", defaults.database, "-t", "5"],
            undefined
          ).catch(() => ({ code: -1, output: "" }))
        ).pipe(Effect.flatMap(({ code }) => (code === 0 ? Effect.void : Poll.notYet(`pg_isready exit ${code}`))))
      })
      return Poll.until(probe, {
        interval: "50 millis",
        timeout: startTimeout,
        onTimeout: (state) =>
          failure(
            "timeout",
            `postgres on port ${port} did not accept connections within ${Poll.describe(startTimeout)} (${state})`
          )
      })
    }

    let current: PostgresProcess.Child | undefined

    const startOn = (port: number): Effect.Effect<PostgresProcess.Child, PostgresStartFailed> =>
      Effect.tryPromise({
        try: () => PostgresProcess.spawnServer(bin("postgres"), ["-D", dataDir, "-p", String(port)], as, append),
        catch: (cause) =>
          failure("spawn-failed", `could not spawn postgres: ${cause instanceof Error ? cause.message : String(cause)}`)
      }).pipe(
        Effect.tap((child) =>
          Effect.sync(() => {
            current = child
          })
        ),
        Effect.tap((child) => awaitReady(child, port))
      )

    const stopCurrent = Effect.suspend(() =>
      current === undefined ? Effect.void : Effect.promise(() => PostgresProcess.stop(current!, stopGraceMs))
    )
    yield* Effect.addFinalizer(() => stopCurrent)

    const firstStart = (
      options.port !== undefined ? Effect.succeed(options.port) : Effect.promise(() => freePort())
    ).pipe(Effect.flatMap((port) => stopCurrent.pipe(Effect.andThen(startOn(port)), Effect.as(port))))
    const port = yield* firstStart.pipe(
      Effect.retry({ times: options.port !== undefined ? 0 : 2, while: (error) => error.reason === "port-in-use" })
    )
    yield* Effect.logDebug("started postgres").pipe(Effect.annotateLogs({ pid: current!.pid, port }))

    const crash = Effect.suspend(() => {
      const child = current!
      const command = `pg_ctl stop -D ${dataDir} -m immediate`
      return Effect.tryPromise({
        try: () => PostgresProcess.run(bin("pg_ctl"), ["stop", "-D", dataDir, "-m", "immediate", "-w"], as),
        catch: (cause) =>
          new PostgresControlFailed({
            command,
            output: "",
            message: `could not run ${command}: ${cause instanceof Error ? cause.message : String(cause)}`
          })
      }).pipe(
        Effect.flatMap(({ code, output }) =>
          code === 0
            ? Effect.promise(() => child.exited)
            : Effect.fail(new PostgresControlFailed({ command, output, message: `${command} failed:\n${output}` }))
        )
      )
    })

    const restart = stopCurrent.pipe(Effect.andThen(startOn(port)), Effect.asVoid)

    return {
      url: `postgres://${defaults.user}@${defaults.host}:${port}/${defaults.database}`,
      host: defaults.host,
      port,
      user: defaults.user,
      database: defaults.database,
      binDir,
      dataDir,
      pid: () => current!.pid,
      isRunning: () => current !== undefined && !current.hasExited(),
      output: () => output,
      crash,
      restart
    } satisfies Server
  })

/**
 * The server of the surrounding layer.
 *
 * @since 0.1.0
 * @category services
 */
export class PostgresTestServer extends Context.Service<PostgresTestServer, Server>()(
  "@redflow/testing/PostgresTestServer"
) {}

/**
 * A layer holding one server for every test that uses it (share it with `layer(...)` from `@effect/vitest`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<PostgresTestServer, StartError> =>
  Layer.effect(PostgresTestServer, make(options))

/**
 * A spawned server for code outside Effect (plain vitest, benchmarks).
 *
 * @since 0.1.0
 * @category models
 */
export interface SpawnedServer {
  readonly url: string
  readonly host: string
  readonly port: number
  readonly user: string
  readonly database: string
  readonly binDir: string
  readonly dataDir: string
  readonly pid: () => number
  readonly isRunning: () => boolean
  readonly output: () => string
  readonly crash: () => Promise<void>
  readonly restart: () => Promise<void>
  /** Stops the server by pid and removes its temp dir. */
  readonly stop: () => Promise<void>
}

/**
 * {@link make} for code outside Effect.
 *
 * @example
 * ```ts
 * const server = await PostgresTestServer.spawnPostgresServer()
 * try { ... } finally { await server.stop() }
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const spawnPostgresServer = async (options: Options = {}): Promise<SpawnedServer> => {
  const { value, close } = await runScoped(make(options))
  return {
    url: value.url,
    host: value.host,
    port: value.port,
    user: value.user,
    database: value.database,
    binDir: value.binDir,
    dataDir: value.dataDir,
    pid: value.pid,
    isRunning: value.isRunning,
    output: value.output,
    crash: () => Effect.runPromise(value.crash),
    restart: () => Effect.runPromise(value.restart),
    stop: close
  }
}

/**
 * Whether a process with this pid exists (for tests that check a server is gone).
 *
 * @since 0.1.0
 * @category utils
 */
export const isAlive = (pid: number): boolean => PostgresProcess.isAlive(pid)
