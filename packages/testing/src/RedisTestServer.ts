/**
 * A Redis server for a test, from the first source that works:
 *
 * 1. `REDIS_URL` (or the `url` option) when set;
 * 2. a `redis-server` spawned on a free port, with its own temp dir, stopped by pid when the scope closes;
 * 3. a `redis:7` container through testcontainers (loaded lazily) when a Docker engine answers.
 *
 * Otherwise it fails with {@link NoRedisAvailable}, whose message names the three ways out.
 *
 * @example
 * ```ts
 * import { RedisTestServer } from "@redflow/testing"
 *
 * it.effect("pings", () =>
 *   Effect.gen(function*() {
 *     const server = yield* RedisTestServer.make({ args: ["--enable-debug-command", "local"] })
 *     // server.url === "redis://127.0.0.1:40123", server.pid is the redis-server process
 *   }))
 * ```
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Docker from "./internal/Docker.ts"
import { freePort as osFreePort } from "./internal/FreePort.ts"
import * as RedisProcess from "./internal/RedisProcess.ts"
import { runScoped } from "./internal/Scoped.ts"
import { ContainerStartFailed, NoRedisAvailable, ServerStartFailed } from "./TestingError.ts"

/**
 * Where the server came from.
 *
 * @since 0.1.0
 * @category models
 */
export type Source = "env" | "process" | "container"

/**
 * Options of {@link make} and {@link spawn}: extra `redis-server` arguments, whether `REDIS_URL` or a container may
 * be used instead, the binary, the port, and how long a start may take.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /**
   * Extra `redis-server` arguments, e.g. `["--requirepass", "pw"]`, `["--enable-debug-command", "local"]`,
   * `["--maxmemory", "1mb"]`. They cannot be applied to a server named by `REDIS_URL`, so by default `REDIS_URL`
   * is only used when no extra arguments are given (see `useEnv`).
   */
  readonly args?: ReadonlyArray<string> | undefined
  /** Use this URL as is (takes the place of `REDIS_URL`). */
  readonly url?: string | undefined
  /** Whether to use `REDIS_URL` when set. Default: `true` when `args` is empty, `false` otherwise. */
  readonly useEnv?: boolean | undefined
  /** The server binary. Default `redis-server` from `PATH`. */
  readonly binary?: string | undefined
  /** Whether to fall back to a Docker container. Default `true`. */
  readonly docker?: boolean | undefined
  /** Container image for the Docker fallback. Default `redis:7`. */
  readonly image?: string | undefined
  /** How long a spawned server may take to answer PING. Default 10 seconds. */
  readonly startTimeout?: Duration.Input | undefined
  /** Spawn on this port rather than a free one; implies a spawned server (`REDIS_URL` is not used). */
  readonly port?: number | undefined
}

/**
 * A running test server. `pid` is set when this package spawned it (and will stop it).
 *
 * @since 0.1.0
 * @category models
 */
export interface Server {
  readonly url: string
  readonly host: string
  readonly port: number
  readonly pid?: number | undefined
  /** The arguments the server was started with (for a spawned process: its whole command line). */
  readonly args: ReadonlyArray<string>
  readonly source: Source
  readonly containerId?: string | undefined
}

/**
 * Why no test server could be had: none found or started, a process that did not start, or a container that did not.
 *
 * @since 0.1.0
 * @category errors
 */
export type StartError = NoRedisAvailable | ServerStartFailed | ContainerStartFailed

const defaults = {
  binary: "redis-server",
  image: "redis:7",
  startTimeout: "10 seconds"
} as const

const fromUrl = (url: string, args: ReadonlyArray<string>): Server => {
  const parsed = new URL(url)
  return {
    url,
    host: parsed.hostname,
    port: parsed.port === "" ? 6379 : Number(parsed.port),
    args,
    source: "env"
  }
}

/**
 * Spawns `redis-server --port P --bind 127.0.0.1 --dir <tmp> --save "" --appendonly no …args` on a free port and
 * waits until it answers PING. The process is stopped by pid (SIGTERM, then SIGKILL after 2 s) and the temp dir
 * removed when the scope closes, whether the test passed or not.
 *
 * @since 0.1.0
 * @category constructors
 */
export const spawn = (
  options: Options = {}
): Effect.Effect<Server & { readonly pid: number }, ServerStartFailed, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* RedisProcess.tempDir("redis")
    const extra = options.args ?? []
    const process = yield* RedisProcess.start({
      binary: options.binary ?? defaults.binary,
      args: (port) => [...RedisProcess.baseArgs(port, dir), ...extra],
      startTimeout: options.startTimeout ?? defaults.startTimeout,
      port: options.port
    })
    return {
      url: `redis://${process.host}:${process.port}`,
      host: process.host,
      port: process.port,
      pid: process.pid,
      args: process.args,
      source: "process" as const
    }
  })

const container = (image: string, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => Docker.startRedisContainer(image, args),
      catch: (cause) =>
        new ContainerStartFailed({
          image,
          cause,
          message: `could not start a ${image} container with testcontainers (is the optional dependency installed?): ${
            cause instanceof Error ? cause.message : String(cause)
          }`
        })
    }),
    (started) => Effect.promise(() => started.stop().catch(() => undefined))
  ).pipe(
    Effect.map((started): Server => {
      const host = started.getHost()
      const port = started.getMappedPort(6379)
      return { url: `redis://${host}:${port}`, host, port, args, source: "container", containerId: started.getId() }
    })
  )

const envRedisUrl = Config.option(Config.String("REDIS_URL")).pipe(
  Effect.map(Option.filter((url) => url !== "")),
  Effect.orElseSucceed(() => Option.none<string>())
)

/**
 * A Redis server for the current scope: `REDIS_URL`, else a spawned `redis-server`, else a Docker container.
 *
 * @example
 * ```ts
 * const server = yield* RedisTestServer.make({ args: ["--requirepass", "secret"] })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Server, StartError, Scope.Scope> =>
  Effect.gen(function* () {
    const args = options.args ?? []
    const attempts: Array<string> = []
    if (options.url !== undefined) return fromUrl(options.url, args)
    const envUrl = yield* envRedisUrl
    if (Option.isSome(envUrl)) {
      if (options.useEnv ?? (args.length === 0 && options.port === undefined)) return fromUrl(envUrl.value, args)
      attempts.push(`REDIS_URL is set but not used: a shared server cannot take the arguments ${args.join(" ")}`)
    } else {
      attempts.push("REDIS_URL is not set")
    }

    const spawned = yield* spawn(options).pipe(
      Effect.map(Option.some),
      Effect.catchIf(
        (error) => error.reason === "not-installed",
        (error) =>
          Effect.sync(() => {
            attempts.push(error.message)
            return Option.none<Server>()
          })
      )
    )
    if (Option.isSome(spawned)) return spawned.value

    if (options.docker ?? true) {
      if (yield* Effect.promise(() => Docker.engineAnswers())) {
        return yield* container(options.image ?? defaults.image, args)
      }
      attempts.push("no Docker engine answered (DOCKER_HOST, /var/run/docker.sock)")
    } else {
      attempts.push("the Docker fallback is disabled")
    }
    return yield* new NoRedisAvailable({
      attempts,
      message:
        "No Redis server for tests. Set REDIS_URL to a server you own, install redis-server " +
        "(e.g. `apt-get install redis-server`), or run a Docker engine so testcontainers can start redis:7. " +
        `Tried: ${attempts.join("; ")}.`
    })
  })

/**
 * The server of the surrounding layer.
 *
 * @since 0.1.0
 * @category services
 */
export class RedisTestServer extends Context.Service<RedisTestServer, Server>()("@redflow/testing/RedisTestServer") {}

/**
 * A layer holding one server for every test that uses it (share it with `layer(...)` from `@effect/vitest`).
 *
 * @example
 * ```ts
 * layer(RedisTestServer.layer())("stream sink", (it) => {
 *   it.effect("writes", () => Effect.gen(function*() { const { url } = yield* RedisTestServer.RedisTestServer }))
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<RedisTestServer, StartError> =>
  Layer.effect(RedisTestServer, make(options))

/**
 * A spawned server for code outside Effect; `stop()` stops it by pid and removes its temp dir.
 *
 * @since 0.1.0
 * @category models
 */
export interface SpawnedServer {
  readonly url: string
  readonly host: string
  readonly port: number
  readonly pid: number
  readonly args: ReadonlyArray<string>
  readonly stop: () => Promise<void>
}

/**
 * Spawns a `redis-server` for a test or a benchmark script outside Effect.
 *
 * @example
 * ```ts
 * const server = await RedisTestServer.spawnRedisServer({ args: ["--maxmemory", "10mb"] })
 * try { ... } finally { await server.stop() }
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const spawnRedisServer = async (options: Options = {}): Promise<SpawnedServer> => {
  const { value, close } = await runScoped(spawn(options))
  return {
    url: value.url,
    host: value.host,
    port: value.port,
    pid: value.pid,
    args: value.args,
    stop: close
  }
}

/**
 * {@link make} for code outside Effect: `REDIS_URL`, else a spawned server, else a container.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = async (options: Options = {}): Promise<Server & { readonly stop: () => Promise<void> }> => {
  const { value, close } = await runScoped(make(options))
  return { ...value, stop: close }
}

/**
 * A free TCP port with nothing listening on it: connecting to it is refused.
 *
 * @since 0.1.0
 * @category utils
 */
export const freePort = (): Promise<number> => osFreePort()
