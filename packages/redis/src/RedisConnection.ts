/**
 * The Redis connection service: one ioredis client (standalone, Sentinel or Cluster) behind a small interface that
 * turns every driver failure into a {@link RedisError} at the boundary.
 *
 * The client is configured for a CDC pipeline rather than for convenience:
 * - no offline queue: a command issued while disconnected fails at once, so the sink's retry policy (and its
 *   backpressure on the source) is in charge, and memory stays bounded while Redis is down;
 * - no automatic re-send of unanswered commands after a reconnect: a lost reply is an unknown outcome that the
 *   sink's write protocol resolves, not a blind duplicate;
 * - authentication failures stop the reconnect loop and fail every later call with `RedisAuthFailed` at once;
 * - a database the server does not have (`SELECT` refused) is a configuration error, not a silent fall back to db 0;
 * - while it cannot connect, a call fails with the server and the real cause (refused, a host name that does not
 *   resolve, a TLS handshake that failed, the server's own refusal such as `maxclients`), not ioredis's "Stream isn't
 *   writeable".
 *
 * @example
 * ```ts
 * const program = Effect.gen(function*() {
 *   const redis = yield* RedisConnection
 *   return yield* redis.run((client) => client.xlen("orders.events"))
 * }).pipe(Effect.provide(RedisConnection.layer({ url: "redis://localhost:6379" })))
 * ```
 *
 * @since 0.1.0
 */
import type { ConnectionOptions as TlsOptions } from "node:tls"
import { Cluster, Redis } from "ioredis"
import type { ClusterOptions, RedisOptions } from "ioredis"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as SchemaTransformation from "effect/SchemaTransformation"
import * as Scope from "effect/Scope"
import * as ConfigError from "@redflow/core/ConfigError"
import * as Metrics from "@redflow/core/Metrics"
import * as Commands from "./internal/commands.ts"
import { PositiveMillis } from "./internal/options.ts"
import { refusal } from "./internal/refusalProbe.ts"
import {
  classify,
  connectionFailure,
  RedisAuthFailed,
  RedisCommandError,
  type RedisError,
  RedisUnavailable,
  serverRefusal
} from "./RedisError.ts"
import * as RedisUrl from "./RedisUrl.ts"

/**
 * The ioredis client behind a connection.
 *
 * @since 0.1.0
 * @category models
 */
export type Client = Redis | Cluster

/**
 * An argument of a raw command.
 *
 * @since 0.1.0
 * @category models
 */
export type Arg = string | number

/**
 * TLS settings of a `rediss://` connection: the CA to trust, a client certificate, and whether to verify the server.
 *
 * @since 0.1.0
 * @category options
 */
export interface TlsSettings {
  /** PEM CA bundle (file contents) to trust, for a server certificate not signed by a public CA. */
  readonly ca?: string | Buffer
  /** PEM client certificate and key, for servers started with `--tls-auth-clients yes`. */
  readonly cert?: string | Buffer
  readonly key?: string | Buffer
  readonly servername?: string
  /** Default true. Turn off only for a test server. */
  readonly rejectUnauthorized?: boolean
}

/**
 * Options of {@link make} and {@link layer}: the URL, credentials overriding it, timeouts, TLS and the client name.
 *
 * @since 0.1.0
 * @category options
 */
export interface Options {
  /** `redis://`, `rediss://`, `redis+sentinel://` or `redis+cluster://`; see {@link RedisUrl}. */
  readonly url: string | Redacted.Redacted<string>
  /** Overrides the URL's user. */
  readonly username?: string
  /** Overrides the URL's password. */
  readonly password?: Redacted.Redacted<string>
  /** Password for the Sentinel processes themselves, when they have one. */
  readonly sentinelPassword?: Redacted.Redacted<string>
  /** Time to establish a connection. Default 5 s. */
  readonly connectTimeout?: Duration.Input
  /** Time for one command's reply. Default 5 s. A timed-out command may still run: outcome unknown. */
  readonly commandTimeout?: Duration.Input
  /** Idle time on a socket with replies outstanding before the peer is declared dead. Default 10 s. */
  readonly socketTimeout?: Duration.Input
  readonly tls?: TlsSettings
  /** `CLIENT SETNAME`, visible in `CLIENT LIST`. Default `redflow`. */
  readonly clientName?: string
}

/**
 * The options once checked, durations in milliseconds.
 *
 * @since 0.1.0
 * @category options
 */
export interface ResolvedOptions {
  readonly url: RedisUrl.ParsedUrl
  readonly connectTimeoutMs: number
  readonly commandTimeoutMs: number
  readonly socketTimeoutMs: number
  readonly options: Options
}

/**
 * What {@link RedisConnection} offers: commands on the connection (`send`, `run`), every driver failure already a
 * {@link RedisError}, and dedicated connections for blocking reads.
 *
 * @since 0.1.0
 * @category models
 */
export interface RedisConnectionService {
  /** The URL without secrets, for logs. */
  readonly description: string
  readonly topology: RedisUrl.ParsedUrl["kind"]
  /** Time for one command's reply on this connection, in milliseconds (a blocking read adds its `BLOCK` to it). */
  readonly commandTimeoutMs: number
  /**
   * @deprecated the options are this module's: read {@link commandTimeoutMs}, {@link topology} or
   * {@link description}.
   */
  readonly resolved: ResolvedOptions
  /**
   * The ioredis client.
   *
   * @deprecated send commands with {@link send} (one command) or {@link run} (a pipeline, a script), which type
   * failures; close a dedicated connection with its scope.
   */
  readonly client: Client
  /**
   * Sends one raw command (`name` and its arguments, `context.key` the key it is about, for messages) and gives its
   * reply as the server sent it: the one way to send a command this package does not wrap.
   */
  readonly send: (
    name: string,
    args: ReadonlyArray<Arg>,
    context?: { readonly key?: string }
  ) => Effect.Effect<unknown, RedisError>
  /** Runs a driver call, classifying any failure. */
  readonly run: <A>(
    f: (client: Client) => Promise<A>,
    context?: { readonly command?: string; readonly key?: string }
  ) => Effect.Effect<A, RedisError>
  /**
   * An effect that completes once the client has (re)connected and is ready, after this call: a retry takes it before
   * trying, and cuts its backoff short with it, so that work resumes as soon as Redis is back rather than at the end
   * of a delay that may have grown to seconds during the outage.
   */
  readonly nextReconnect: () => Effect.Effect<void>
  /**
   * A dedicated connection with the same settings (for blocking reads that must not hold up other commands),
   * closed with the scope. `commandTimeout` may be raised for it, e.g. above a `BLOCK` time.
   */
  readonly dedicated: (overrides?: {
    readonly commandTimeout?: Duration.Input
    /**
     * For a connection that sits in blocking reads: closed by dropping the socket rather than with QUIT, which would
     * wait behind a blocked command.
     */
    readonly blocking?: boolean
  }) => Effect.Effect<RedisConnectionService, RedisError, Scope.Scope>
}

/**
 * The connection service.
 *
 * @since 0.1.0
 * @category services
 */
export class RedisConnection extends Context.Service<RedisConnection, RedisConnectionService>()(
  "@redflow/redis/RedisConnection"
) {}

/** The component named by the connection's configuration errors. */
const COMPONENT = "RedisConnection"

/** The URL decoded by {@link RedisUrl.parse}, failing with its words at the option's path. */
const Url = Schema.Union([Schema.String, Schema.Redacted(Schema.String)]).pipe(
  Schema.decodeTo(
    Schema.declare(
      (u): u is RedisUrl.ParsedUrl => Predicate.hasProperty(u, "kind") && Predicate.hasProperty(u, "hosts")
    ),
    SchemaTransformation.transformEffect<RedisUrl.ParsedUrl, string | Redacted.Redacted<string>>({
      decode: (input) => {
        const parsed = RedisUrl.parse(input)
        return parsed instanceof ConfigError.ConfigError
          ? Effect.fail(new SchemaIssue.InvalidValue({ message: parsed.reason }))
          : Effect.succeed(parsed)
      },
      encode: (url) => Effect.succeed(RedisUrl.describe(url))
    })
  )
)

const Pem = Schema.Union([Schema.String, Schema.Uint8Array])

/** The connection's options as a Schema: what each option accepts. */
const OptionsSchema = Schema.Struct({
  url: Url,
  username: Schema.optionalKey(Schema.String),
  password: Schema.optionalKey(Schema.Redacted(Schema.String)),
  sentinelPassword: Schema.optionalKey(Schema.Redacted(Schema.String)),
  connectTimeout: Schema.optionalKey(PositiveMillis),
  commandTimeout: Schema.optionalKey(PositiveMillis),
  socketTimeout: Schema.optionalKey(PositiveMillis),
  tls: Schema.optionalKey(
    Schema.Struct({
      ca: Schema.optionalKey(Pem),
      cert: Schema.optionalKey(Pem),
      key: Schema.optionalKey(Pem),
      servername: Schema.optionalKey(Schema.String),
      rejectUnauthorized: Schema.optionalKey(Schema.Boolean)
    })
  ),
  clientName: Schema.optionalKey(Schema.String)
})

const decodeOptions = ConfigError.decoder(COMPONENT, OptionsSchema)

/**
 * Checks the options before anything connects: fails with the `ConfigError` (component `RedisConnection`) whose path
 * names the option, e.g. `["url"]` for a malformed URL.
 *
 * @since 0.1.0
 * @category options
 */
export const resolve = (options: Options): Effect.Effect<ResolvedOptions, ConfigError.ConfigError> =>
  Effect.flatMap(decodeOptions(options), (decoded) =>
    decoded.tls !== undefined && !decoded.url.tls
      ? Effect.fail(
          ConfigError.make(
            COMPONENT,
            ["tls"],
            "tls options were given but the URL is not rediss://",
            "use rediss:// to connect over TLS"
          )
        )
      : Effect.succeed({
          url: decoded.url,
          connectTimeoutMs: decoded.connectTimeout ?? 5000,
          commandTimeoutMs: decoded.commandTimeout ?? 5000,
          socketTimeoutMs: decoded.socketTimeout ?? 10000,
          options
        })
  )

interface ClientState {
  authError: RedisAuthFailed | undefined
  /** The server refused to `SELECT` the URL's database: the client stopped, nothing may go to another database. */
  dbError: ConfigError.ConfigError | undefined
  /** Why the client last failed to connect, in words to show (cleared once ready); `refusal` when the server said it. */
  lastFailure: { readonly message: string; readonly refusal: boolean } | undefined
  probing: boolean
}

// The connection cannot work as configured: stop reconnecting.
const stopped = (state: ClientState) => state.authError !== undefined || state.dbError !== undefined

const selectFailed = (db: number, description: string, reply: string) =>
  /^ERR DB index is out of range\b/.test(reply)
    ? ConfigError.make(
        COMPONENT,
        ["url"],
        `database ${db} of ${description} does not exist: the server answered SELECT ${db} with "${reply}"`,
        `use a database from 0 to its "databases" setting minus one (0-15 by default), or raise "databases"`
      )
    : ConfigError.make(
        COMPONENT,
        ["url"],
        `database ${db} of ${description} cannot be selected: the server answered SELECT ${db} with "${reply}"`,
        `check the database in the URL (the number after the host)`
      )

// What a call gets once the client stopped on a refused SELECT: fatal, with the same words.
const selectFailedCall = (error: ConfigError.ConfigError) =>
  new RedisCommandError({
    message: `${error.reason}${error.fix === undefined ? "" : `; ${error.fix}`}`,
    code: "ERR",
    command: "SELECT"
  })

const isSelectReply = (u: unknown): boolean =>
  (u as { command?: { name?: unknown } } | null)?.command?.name === "select"

// ioredis's words for "not connected now"; the reason is in the client's last connection error.
const NOT_CONNECTED = /^(Stream isn't writeable|Connection is closed)/

const tlsOptions = (resolved: ResolvedOptions): TlsOptions | undefined => {
  if (!resolved.url.tls) return undefined
  const t = resolved.options.tls ?? {}
  return {
    ...(t.ca !== undefined ? { ca: t.ca } : {}),
    ...(t.cert !== undefined ? { cert: t.cert } : {}),
    ...(t.key !== undefined ? { key: t.key } : {}),
    ...(t.servername !== undefined ? { servername: t.servername } : {}),
    rejectUnauthorized: t.rejectUnauthorized ?? true
  }
}

const baseOptions = (resolved: ResolvedOptions, state: ClientState, commandTimeoutMs: number): RedisOptions => {
  const { url, options } = resolved
  const username = options.username ?? url.username
  const password = options.password ?? url.password
  const tls = tlsOptions(resolved)
  return {
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password: Redacted.value(password) } : {}),
    ...(tls !== undefined ? { tls } : {}),
    db: url.db,
    connectionName: options.clientName ?? "redflow",
    lazyConnect: true,
    connectTimeout: resolved.connectTimeoutMs,
    commandTimeout: commandTimeoutMs,
    socketTimeout: resolved.socketTimeoutMs,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    enableReadyCheck: true,
    // ioredis reconnects after WRONGPASS/NOAUTH by design: stop once the auth error is known.
    retryStrategy: (times) => (stopped(state) ? null : Math.min(50 * 2 ** Math.min(times, 6), 2000)),
    reconnectOnError: () => false
  }
}

// ioredis's overloads add a reply-mapping generic that exactOptionalPropertyTypes cannot unify.
const newRedis = (options: RedisOptions): Redis => new Redis(options as never)

const createClient = (resolved: ResolvedOptions, state: ClientState, commandTimeoutMs: number): Client => {
  const { url } = resolved
  const base = baseOptions(resolved, state, commandTimeoutMs)
  switch (url.kind) {
    case "standalone":
      return newRedis({ ...base, host: url.hosts[0]!.host, port: url.hosts[0]!.port })
    case "sentinel": {
      const sentinelPassword = resolved.options.sentinelPassword
      return newRedis({
        ...base,
        sentinels: url.hosts.map((h) => ({ host: h.host, port: h.port })),
        name: url.masterName!,
        ...(sentinelPassword !== undefined ? { sentinelPassword: Redacted.value(sentinelPassword) } : {}),
        ...(url.tls ? { enableTLSForSentinelMode: true } : {}),
        failoverDetector: true,
        sentinelRetryStrategy: (times: number) => (stopped(state) ? null : Math.min(50 * 2 ** Math.min(times, 6), 2000))
      })
    }
    case "cluster": {
      const clusterOptions: ClusterOptions = {
        redisOptions: base,
        lazyConnect: true,
        enableOfflineQueue: false,
        enableReadyCheck: true,
        maxRedirections: 16,
        retryDelayOnMoved: 0,
        clusterRetryStrategy: (times) => (stopped(state) ? null : Math.min(50 * 2 ** Math.min(times, 6), 2000)),
        slotsRefreshTimeout: resolved.connectTimeoutMs
      }
      // ioredis's overloads add a reply-mapping generic that exactOptionalPropertyTypes cannot unify.
      return new Cluster(
        url.hosts.map((h) => ({ host: h.host, port: h.port })),
        clusterOptions as never
      )
    }
  }
}

const open = (
  resolved: ResolvedOptions,
  description: string,
  commandTimeoutMs: number,
  blocking = false
): Effect.Effect<RedisConnectionService, RedisError | ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function* () {
    const state: ClientState = { authError: undefined, dbError: undefined, lastFailure: undefined, probing: false }
    const probes = yield* FiberSet.make<void>()
    const runProbe = yield* FiberSet.runtime(probes)<never>()
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => createClient(resolved, state, commandTimeoutMs)),
      (client) =>
        blocking
          ? Effect.sync(() => client.disconnect())
          : Effect.promise(() =>
              client.quit().then(
                () => undefined,
                () => client.disconnect()
              )
            ).pipe(Effect.timeoutOrElse({ duration: "1 second", orElse: () => Effect.sync(() => client.disconnect()) }))
    )
    const { url } = resolved
    // Where a refusal probe can go: the one host of a standalone URL (Sentinel and Cluster resolve theirs).
    const probeTarget =
      url.kind === "standalone"
        ? { ...url.hosts[0]!, tls: tlsOptions(resolved), timeoutMs: resolved.connectTimeoutMs }
        : undefined
    const noteConnectionError = (err: unknown) => {
      const code = (err as { code?: unknown } | null)?.code
      // Node's socket, DNS and TLS errors carry a code; reply errors do not.
      if (typeof code !== "string") return
      const reset = code === "ECONNRESET" || code === "EPIPE"
      // A reset does not replace what the server itself said when it refused the previous attempt.
      if (!(reset && state.lastFailure?.refusal === true)) {
        state.lastFailure = { message: connectionFailure(err, url.tls), refusal: false }
      }
      // Dropped while still in the handshake: a server that refuses clients says why to a connection that is quiet.
      if (reset && client.status === "connect" && probeTarget !== undefined && !state.probing) {
        state.probing = true
        runProbe(
          refusal(probeTarget).pipe(
            Effect.map((line) => {
              if (Option.isSome(line) && client.status !== "ready") {
                state.lastFailure = { message: serverRefusal(line.value), refusal: true }
              }
            }),
            Effect.ensuring(Effect.sync(() => (state.probing = false)))
          )
        )
      }
    }
    client.on("error", (err: unknown) => {
      // ioredis reports a refused SELECT of the handshake here and carries on in db 0: stop instead.
      if (isSelectReply(err)) {
        state.dbError ??= selectFailed(url.db, description, err instanceof Error ? err.message : String(err))
        client.disconnect()
        return
      }
      const error = classify(err)
      if (error._tag === "RedisAuthFailed") state.authError = error
      noteConnectionError(err)
    })
    const context = yield* Effect.context<never>()
    const reconnects = Metric.withAttributes(Metrics.reconnects, { client: resolved.options.clientName ?? "redflow" })
    client.on("reconnecting", () => {
      Effect.runSyncWith(context)(Metric.update(reconnects, 1))
    })
    // Each "ready" completes the deferred of everyone waiting for it, and the next waiters get a fresh one.
    let ready = Deferred.makeUnsafe<void>()
    client.on("ready", () => {
      state.lastFailure = undefined
      const reached = ready
      ready = Deferred.makeUnsafe<void>()
      Deferred.doneUnsafe(reached, Effect.void)
    })
    const nextReconnect = (): Effect.Effect<void> => Deferred.await(ready)

    // A call made while the client is not connected fails at once (there is no offline queue) and says which server
    // and why, from the client's last connection error, rather than ioredis's "Stream isn't writeable".
    const notConnected = (original?: RedisError) =>
      new RedisUnavailable({
        message: `${description}: ${state.lastFailure?.message ?? `not connected (the client is ${client.status})`}`,
        outcomeUnknown: original?._tag === "RedisUnavailable" && original.outcomeUnknown,
        ...(original !== undefined ? { cause: original } : {})
      })
    const explain = (error: RedisError): RedisError =>
      error._tag === "RedisUnavailable" && NOT_CONNECTED.test(error.message) ? notConnected(error) : error

    const run = <A>(
      f: (client: Client) => Promise<A>,
      context?: { readonly command?: string; readonly key?: string }
    ): Effect.Effect<A, RedisError> =>
      Effect.suspend(() => {
        if (state.authError !== undefined) return Effect.fail(state.authError)
        if (state.dbError !== undefined) return Effect.fail(selectFailedCall(state.dbError))
        // What ioredis would refuse without sending: fail the same way (nothing sent), with the reason.
        if (client.status !== "ready") return Effect.fail(notConnected())
        return Effect.tryPromise({
          try: () => f(client),
          catch: (cause) => {
            const error = classify(cause, context)
            if (error._tag === "RedisAuthFailed") state.authError = error
            // A client closed by an auth failure answers "Connection is closed": report the real reason.
            if (state.authError !== undefined) return state.authError
            return state.dbError !== undefined ? selectFailedCall(state.dbError) : explain(error)
          }
        })
      })

    // Connect now so a bad password or ACL fails the layer at once. An unreachable server does not: the client
    // keeps reconnecting in the background and the sink's retry policy waits for it.
    yield* Effect.tryPromise({ try: () => client.connect(), catch: (cause) => classify(cause) }).pipe(
      Effect.timeoutOrElse({
        duration: Duration.millis(resolved.connectTimeoutMs),
        orElse: () => Effect.logWarning(`Redis at ${description} did not answer within the connect timeout`)
      }),
      Effect.catch((error): Effect.Effect<void, RedisAuthFailed | ConfigError.ConfigError> => {
        if (state.dbError !== undefined) return Effect.fail(state.dbError)
        const authError = state.authError ?? (error._tag === "RedisAuthFailed" ? error : undefined)
        if (authError !== undefined) {
          client.disconnect()
          return Effect.fail(authError)
        }
        return Effect.logWarning(`Redis at ${description} is not reachable yet (${explain(error).message}); will retry`)
      })
    )
    if (state.dbError !== undefined) return yield* state.dbError

    const service: RedisConnectionService = {
      description,
      topology: resolved.url.kind,
      commandTimeoutMs,
      resolved,
      client,
      send: (name, args, context) =>
        run((client) => Commands.send(client, Commands.make(name, [...args])), {
          command: name,
          ...(context?.key === undefined ? {} : { key: context.key })
        }),
      run,
      nextReconnect,
      dedicated: (overrides) =>
        open(
          resolved,
          description,
          overrides?.commandTimeout !== undefined
            ? Duration.toMillis(Duration.fromInputUnsafe(overrides.commandTimeout))
            : commandTimeoutMs,
          overrides?.blocking ?? false
        ).pipe(Effect.mapError((error) => (error._tag === "ConfigError" ? selectFailedCall(error) : error)))
    }
    return service
  })

/**
 * Validates the options, connects, and closes the client when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<RedisConnectionService, RedisError | ConfigError.ConfigError, Scope.Scope> =>
  Effect.gen(function* () {
    const resolved = yield* resolve(options)
    const description = RedisUrl.describe(resolved.url)
    return yield* open(resolved, description, resolved.commandTimeoutMs).pipe(
      Effect.annotateLogs({ redis: description })
    )
  })

/**
 * A layer from options.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<RedisConnection, RedisError | ConfigError.ConfigError> =>
  Layer.effect(RedisConnection, make(options))

/**
 * A layer from configuration: `REDIS_URL` (required, redacted), and optionally `REDIS_CONNECT_TIMEOUT`,
 * `REDIS_COMMAND_TIMEOUT`, `REDIS_SOCKET_TIMEOUT` (durations such as `5 seconds`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  overrides: Omit<Partial<Options>, "url"> = {}
): Layer.Layer<RedisConnection, RedisError | ConfigError.ConfigError | Config.ConfigError> =>
  Layer.effect(
    RedisConnection,
    Effect.gen(function* () {
      const config = yield* Config.all({
        url: Config.option(Config.Redacted("REDIS_URL")),
        connectTimeout: Config.option(Config.Duration("REDIS_CONNECT_TIMEOUT")),
        commandTimeout: Config.option(Config.Duration("REDIS_COMMAND_TIMEOUT")),
        socketTimeout: Config.option(Config.Duration("REDIS_SOCKET_TIMEOUT"))
      })
      if (Option.isNone(config.url)) {
        return yield* ConfigError.make(
          COMPONENT,
          ["url"],
          "REDIS_URL is not set",
          "set it to the server's URL, e.g. REDIS_URL=redis://localhost:6379"
        )
      }
      return yield* make({
        ...overrides,
        url: config.url.value,
        ...Option.match(config.connectTimeout, { onNone: () => ({}), onSome: (d) => ({ connectTimeout: d }) }),
        ...Option.match(config.commandTimeout, { onNone: () => ({}), onSome: (d) => ({ commandTimeout: d }) }),
        ...Option.match(config.socketTimeout, { onNone: () => ({}), onSome: (d) => ({ socketTimeout: d }) })
      })
    })
  )

export {
  /**
   * Credentials, ACL or TLS verification refused: never retried. Re-exported from `RedisError`, where it lives with
   * the other failure modes.
   *
   * @since 0.1.0
   * @category errors
   */
  RedisAuthFailed
}
