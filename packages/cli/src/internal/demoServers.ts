/**
 * The servers `redflow demo` starts for itself when it is given none: a `redis-server`, and a PostgreSQL with
 * `wal_level=logical` (`initdb` into a temp dir, trust on 127.0.0.1 only, no Unix socket). Each runs on a free port in
 * its own process group (a Ctrl-C at the terminal reaches the demo, which drains through them, not the servers), is
 * stopped by pid when the scope closes, and leaves nothing behind: the temp dir goes too. Should the process end
 * without closing its scopes, an exit hook SIGKILLs whatever it started.
 *
 * The demo's own concern, not the test harness's (`@redflow/testing` does more: containers, crashes, restarts), so
 * the published command line does not carry the harness.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"

/** A server the demo started, and how to reach it. */
export interface Started {
  readonly url: string
  readonly port: number
  /** For redis-server: the server; for PostgreSQL: the postmaster (the leader of its process group). */
  readonly pid: number
}

/** `redis-server` is not on `PATH`. */
export class RedisNotInstalled extends Schema.TaggedError<RedisNotInstalled>()("RedisNotInstalled", {
  message: Schema.String
}) {}

/** The PostgreSQL server binaries are not there; `missing` says where they were looked for and what each lacks. */
export class PostgresNotInstalled extends Schema.TaggedError<PostgresNotInstalled>()("PostgresNotInstalled", {
  missing: Schema.Array(Schema.String),
  message: Schema.String
}) {}

/** A server was found but did not start; the message ends with the tail of its log. */
export class ServerStartFailed extends Schema.TaggedError<ServerStartFailed>()("ServerStartFailed", {
  server: Schema.Literals(["redis-server", "PostgreSQL"]),
  reason: Schema.Literals(["no-user", "initdb-failed", "spawn-failed", "port-in-use", "exited", "timeout"]),
  message: Schema.String
}) {}

const OUTPUT_LIMIT = 16_384
const START_TIMEOUT = { redis: "10 seconds", postgres: "60 seconds" } as const
/** SIGTERM stops redis-server; SIGINT is PostgreSQL's fast shutdown. Past the grace period, SIGKILL. */
const STOP = {
  redis: { signal: "SIGTERM", graceMs: 2_000 },
  postgres: { signal: "SIGINT", graceMs: 10_000 }
} as const
const HOST = "127.0.0.1"

// ---------------------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------------------

interface Child {
  readonly pid: number
  readonly exited: Promise<void>
  readonly hasExited: () => boolean
  /** The tail of what it wrote on stdout and stderr. */
  readonly output: () => string
}

const running = new Set<number>()
let exitHookInstalled = false

const killGroup = (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(-pid, signal)
  } catch {
    // the group is gone
  }
}

const installExitHook = () => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once("exit", () => {
    for (const pid of running) killGroup(pid, "SIGKILL")
  })
}

/** The identity the PostgreSQL binaries run as: `postgres` when this process is root (initdb refuses root). */
interface Identity {
  readonly uid: number
  readonly gid: number
}

const spawnOptions = (as: Identity | undefined): ChildProcess.SpawnOptions => ({
  stdio: ["ignore", "pipe", "pipe"],
  env: { ...process.env, LC_ALL: "C", LANG: "C" },
  ...(as === undefined ? {} : { uid: as.uid, gid: as.gid })
})

/** Spawns a server in its own process group, registered for release before it is ready. */
const spawnServer = (
  binary: string,
  args: ReadonlyArray<string>,
  as: Identity | undefined,
  stopWith: { readonly signal: NodeJS.Signals; readonly graceMs: number }
): Effect.Effect<Child, NodeJS.ErrnoException, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<Child, NodeJS.ErrnoException>((resume) => {
      let output = ""
      const child = ChildProcess.spawn(binary, [...args], { ...spawnOptions(as), detached: true })
      const append = (chunk: Buffer) => {
        output = (output + chunk.toString("utf8")).slice(-OUTPUT_LIMIT)
      }
      child.stdout?.on("data", append)
      child.stderr?.on("data", append)
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
      // `on`, not `once`: a later "error" event without a listener would crash the demo.
      child.on("error", (error: NodeJS.ErrnoException) => {
        if (child.pid === undefined) resume(Effect.fail(error))
      })
      child.once("spawn", () => {
        const pid = child.pid as number
        installExitHook()
        running.add(pid)
        void exited.then(() => running.delete(pid))
        resume(
          Effect.succeed({
            pid,
            exited,
            hasExited: () => child.exitCode !== null || child.signalCode !== null,
            output: () => output
          })
        )
      })
    }),
    (child) => Effect.promise(() => stop(child, stopWith.signal, stopWith.graceMs))
  )

/**
 * Stops a server by pid with `signal`, then SIGKILLs its whole process group (the postmaster and its backends) after
 * the grace period. Resolves once it has exited.
 */
const stop = (child: Child, signal: NodeJS.Signals, graceMs: number): Promise<void> => {
  if (child.hasExited()) return child.exited
  try {
    process.kill(child.pid, "SIGCONT")
    process.kill(child.pid, signal)
  } catch {
    // exited in between
  }
  const timer = setTimeout(() => killGroup(child.pid, "SIGKILL"), graceMs)
  return child.exited.finally(() => clearTimeout(timer))
}

/** Runs a binary to completion: its exit code and output (a missing binary rejects). */
const runToEnd = (
  binary: string,
  args: ReadonlyArray<string>,
  as: Identity | undefined
): Promise<{ readonly code: number; readonly output: string }> =>
  new Promise((resolve, reject) => {
    let output = ""
    const child = ChildProcess.spawn(binary, [...args], spawnOptions(as))
    const append = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-OUTPUT_LIMIT)
    }
    child.stdout?.on("data", append)
    child.stderr?.on("data", append)
    child.on("error", reject)
    child.once("close", (code, signal) => resolve({ code: code ?? (signal === null ? 0 : 128), output }))
  })

/** A port the OS says is free now (another process may take it first: starts retry on "address in use"). */
const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.unref()
    server.once("error", reject)
    server.listen({ host: HOST, port: 0, exclusive: true }, () => {
      const address = server.address()
      server.close(() =>
        address !== null && typeof address === "object"
          ? resolve(address.port)
          : reject(new Error("the OS gave no TCP port"))
      )
    })
  })

/** A temporary directory removed when the scope closes. */
const tempDir = (prefix: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => Fs.mkdtemp(Path.join(Os.tmpdir(), `redflow-demo-${prefix}-`))),
    (dir) => Effect.promise(() => Fs.rm(dir, { recursive: true, force: true }))
  )

/** Not ready yet: keep polling. */
class NotYet {
  readonly state: string
  constructor(state: string) {
    this.state = state
  }
}

/** Polls `probe` until it succeeds, fails with something else than {@link NotYet}, or the time is up. */
const awaitReady = <E>(
  probe: Effect.Effect<void, E | NotYet>,
  interval: Duration.Input,
  timeout: Duration.Input,
  onTimeout: (state: string) => E
): Effect.Effect<void, E> =>
  Effect.suspend(() => {
    let state = "no answer yet"
    return probe.pipe(
      Effect.tapError((e) =>
        Effect.sync(() => {
          if (e instanceof NotYet) state = e.state
        })
      ),
      Effect.retry({ schedule: Schedule.spaced(interval), while: (e) => e instanceof NotYet }),
      Effect.timeoutOrElse({ duration: timeout, orElse: () => Effect.fail(onTimeout(state)) })
    ) as Effect.Effect<void, E>
  })

const tail = (text: string) => text.trim().split("\n").slice(-10).join("\n")

// ---------------------------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------------------------

/** One PING over a fresh connection: resolves with the first line of the reply. */
const ping = (port: number): Promise<string> =>
  new Promise((resolve, reject) => {
    const socket = Net.connect({ host: HOST, port })
    let reply = ""
    socket.setTimeout(1_000, () => socket.destroy(new Error("no reply to PING within 1 s")))
    socket.once("connect", () => socket.write("PING\r\n"))
    socket.on("data", (chunk) => {
      reply += chunk.toString("utf8")
      const end = reply.indexOf("\r\n")
      if (end >= 0) {
        socket.destroy()
        resolve(reply.slice(0, end))
      }
    })
    socket.once("error", reject)
    socket.once("close", () => reject(new Error("connection closed before a reply")))
  })

const startRedisOn = (port: number, dir: string) =>
  Effect.gen(function* () {
    const args = ["--port", String(port), "--bind", HOST, "--dir", dir, "--save", "", "--appendonly", "no"]
    const child = yield* spawnServer("redis-server", args, undefined, STOP.redis).pipe(
      Effect.mapError((error) =>
        error.code === "ENOENT"
          ? new RedisNotInstalled({ message: "redis-server is not installed (not found on PATH)" })
          : new ServerStartFailed({
              server: "redis-server",
              reason: "spawn-failed",
              message: `could not spawn redis-server: ${error.message}`
            })
      )
    )
    const failed = (reason: ServerStartFailed["reason"], what: string) =>
      new ServerStartFailed({
        server: "redis-server",
        reason,
        message: `${what}; its last output:\n${tail(child.output())}`
      })
    yield* awaitReady(
      Effect.suspend((): Effect.Effect<void, ServerStartFailed | NotYet> =>
        child.hasExited()
          ? Effect.fail(
              /Address already in use/i.test(child.output())
                ? failed("port-in-use", `port ${port} was taken before redis-server bound it`)
                : failed("exited", "redis-server exited before answering PING")
            )
          : Effect.tryPromise({ try: () => ping(port), catch: (e) => new NotYet(String(e)) }).pipe(
              // LOADING: up, not ready; any other reply (PONG, NOAUTH) means it serves.
              Effect.flatMap((reply) => (reply.startsWith("-LOADING") ? Effect.fail(new NotYet(reply)) : Effect.void))
            )
      ),
      "10 millis",
      START_TIMEOUT.redis,
      (state) => failed("timeout", `redis-server on port ${port} did not answer PING within 10 s (${state})`)
    )
    return { url: `redis://${HOST}:${port}`, port, pid: child.pid } satisfies Started
  })

/** A `redis-server` on a free port for the scope: loopback only, no persistence, its files in a temp dir. */
export const redis: Effect.Effect<Started, RedisNotInstalled | ServerStartFailed, Scope.Scope> = Effect.gen(
  function* () {
    const dir = yield* tempDir("redis")
    return yield* Effect.promise(freePort).pipe(
      Effect.flatMap((port) => startRedisOn(port, dir)),
      Effect.retry({ times: 2, while: (e) => e._tag === "ServerStartFailed" && e.reason === "port-in-use" })
    )
  }
)

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------------------------

/** Where the binaries are looked for without `PG_BIN_DIR`: Debian's layout, newest version first. */
const DEFAULT_ROOT = "/usr/lib/postgresql"
const REQUIRED_BINARIES = ["initdb", "postgres", "pg_isready"] as const

const SETTINGS = [
  "wal_level = logical",
  "max_replication_slots = 8",
  "max_wal_senders = 8",
  "listen_addresses = '127.0.0.1'",
  // No Unix socket: the only way in is TCP on loopback, where pg_hba.conf trusts.
  "unix_socket_directories = ''",
  "max_connections = 30",
  "shared_buffers = '32MB'"
]
const PG_HBA = "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"

const envBinDir = Config.option(Config.String("PG_BIN_DIR")).pipe(
  Effect.map(Option.filter((dir) => dir !== "")),
  Effect.orElseSucceed(() => Option.none<string>())
)

/** The first directory holding every required binary: `PG_BIN_DIR` alone when set, else the newest version's. */
const findBinDir = (binDir: Option.Option<string>) =>
  Effect.promise(async () => {
    const candidates = Option.isSome(binDir)
      ? [binDir.value]
      : (await Fs.readdir(DEFAULT_ROOT).catch(() => [] as Array<string>))
          .filter((name) => /^\d+(\.\d+)?$/.test(name))
          .sort((a, b) => Number(b) - Number(a))
          .map((version) => Path.join(DEFAULT_ROOT, version, "bin"))
    const tried: Array<string> = []
    for (const dir of candidates) {
      const missing: Array<string> = []
      for (const binary of REQUIRED_BINARIES) {
        const ok = await Fs.access(Path.join(dir, binary), Fs.constants.X_OK).then(
          () => true,
          () => false
        )
        if (!ok) missing.push(binary)
      }
      if (missing.length === 0) return { found: dir, tried }
      tried.push(`${dir} lacks ${missing.join(", ")}`)
    }
    if (candidates.length === 0) tried.push(`${DEFAULT_ROOT}/<version>/bin does not exist`)
    return { found: undefined, tried }
  }).pipe(
    Effect.flatMap(({ found, tried }) =>
      found !== undefined
        ? Effect.succeed(found)
        : Effect.fail(
            new PostgresNotInstalled({
              missing: tried,
              message: `no PostgreSQL server binaries (${REQUIRED_BINARIES.join(", ")}): ${tried.join("; ")}`
            })
          )
    )
  )

const idOf = (flag: "-u" | "-g", user: string): Promise<number> =>
  new Promise((resolve, reject) =>
    ChildProcess.execFile("id", [flag, user], (error, stdout) =>
      error
        ? reject(new Error(`no user ${user} (id ${flag} ${user}: ${error.message})`))
        : resolve(Number(stdout.trim()))
    )
  )

/** As root, the `postgres` user the binaries run as; otherwise this process's own user. */
const identity = Effect.tryPromise({
  try: async (): Promise<Identity | undefined> =>
    process.getuid?.() !== 0 ? undefined : { uid: await idOf("-u", "postgres"), gid: await idOf("-g", "postgres") },
  catch: (cause) =>
    new ServerStartFailed({
      server: "PostgreSQL",
      reason: "no-user",
      message:
        `this process is root and initdb refuses root, but it cannot run as postgres: ` +
        `${cause instanceof Error ? cause.message : String(cause)}`
    })
})

/**
 * A PostgreSQL for the scope, ready for logical decoding, as `postgres` with trust on loopback. The binaries come
 * from `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/<version>/bin`.
 */
export const postgres: Effect.Effect<Started, PostgresNotInstalled | ServerStartFailed, Scope.Scope> = Effect.gen(
  function* () {
    const binDir = yield* findBinDir(yield* envBinDir)
    const bin = (name: string) => Path.join(binDir, name)
    const as = yield* identity
    const dir = yield* tempDir("postgres")
    const dataDir = Path.join(dir, "data")
    if (as !== undefined) yield* Effect.promise(() => Fs.chown(dir, as.uid, as.gid))
    const initdb = yield* Effect.promise(() =>
      runToEnd(
        bin("initdb"),
        ["-D", dataDir, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"],
        as
      ).catch((error: unknown) => ({ code: -1, output: error instanceof Error ? error.message : String(error) }))
    )
    if (initdb.code !== 0) {
      return yield* new ServerStartFailed({
        server: "PostgreSQL",
        reason: "initdb-failed",
        message: `initdb -D ${dataDir} failed (exit ${initdb.code}):\n${tail(initdb.output)}`
      })
    }
    yield* Effect.promise(async () => {
      await Fs.appendFile(Path.join(dataDir, "postgresql.conf"), ["", "# redflow demo", ...SETTINGS, ""].join("\n"))
      await Fs.writeFile(Path.join(dataDir, "pg_hba.conf"), PG_HBA)
    })

    const startOn = (port: number) =>
      Effect.gen(function* () {
        const child = yield* spawnServer(bin("postgres"), ["-D", dataDir, "-p", String(port)], as, STOP.postgres).pipe(
          Effect.mapError(
            (error) =>
              new ServerStartFailed({
                server: "PostgreSQL",
                reason: "spawn-failed",
                message: `could not spawn ${bin("postgres")}: ${error.message}`
              })
          )
        )
        const failed = (reason: ServerStartFailed["reason"], what: string) =>
          new ServerStartFailed({
            server: "PostgreSQL",
            reason,
            message: `${what}; its last output:\n${tail(child.output())}`
          })
        const isReady = ["-q", "-h", HOST, "-p", String(port), "-U", "postgres", "-d", "postgres", "-t", "5"]
        yield* awaitReady(
          Effect.suspend((): Effect.Effect<void, ServerStartFailed | NotYet> =>
            child.hasExited()
              ? Effect.fail(
                  /could not bind|Address already in use/i.test(child.output())
                    ? failed("port-in-use", `port ${port} was taken before postgres bound it`)
                    : failed("exited", "postgres exited before accepting connections")
                )
              : Effect.promise(() => runToEnd(bin("pg_isready"), isReady, undefined).catch(() => ({ code: -1 }))).pipe(
                  Effect.flatMap(({ code }) =>
                    code === 0 ? Effect.void : Effect.fail(new NotYet(`pg_isready exit ${code}`))
                  )
                )
          ),
          "50 millis",
          START_TIMEOUT.postgres,
          (state) => failed("timeout", `postgres on port ${port} did not accept connections within 60 s (${state})`)
        )
        return { url: `postgres://postgres@${HOST}:${port}/postgres`, port, pid: child.pid } satisfies Started
      })

    return yield* Effect.promise(freePort).pipe(
      Effect.flatMap(startOn),
      Effect.retry({ times: 2, while: (e) => e.reason === "port-in-use" })
    )
  }
)
