/**
 * What a failed command prints and the exit code it ends with.
 *
 * | exit | when |
 * |---|---|
 * | 0 | done (also after Ctrl-C drained the run) |
 * | 1 | any other fatal error (Redis unreachable, a fatal reply error, a corrupt checkpoint file) |
 * | 2 | bad arguments or configuration: the message names the flag or the pipeline file's setting and what it expects; |
 * |   | also a PostgreSQL server or table that cannot work as configured (wal_level, a missing table, no replica identity) |
 * | 3 | authentication failure (NOAUTH, WRONGPASS) or an ACL that denies a command or key (NOPERM); |
 * |   | also a PostgreSQL role refused (a wrong password, no REPLICATION, no SELECT on a table) |
 * | 4 | a drain that did not finish within --drain-timeout |
 * | 130 | a second signal during a drain |
 */
import * as Cause from "effect/Cause"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import { CliError } from "effect/cli"
import type { ConfigError } from "@redflow/core/ConfigError"
import { flagOf, reasonOf } from "./optionFlags.ts"

/** A flag value that cannot work, found before anything runs. */
export class UsageError extends Schema.TaggedError<UsageError>()("UsageError", {
  /** The flag at fault, without dashes. */
  flag: Schema.String,
  /** What the flag expects, and what it got. */
  message: Schema.String
}) {}

/** A stream that the command reads does not exist (exit 1: the name may be right and the stream not made yet). */
export class StreamNotFound extends Schema.TaggedError<StreamNotFound>()("StreamNotFound", {
  stream: Schema.String
}) {
  override get message(): string {
    return `stream ${JSON.stringify(this.stream)} does not exist`
  }
}

/** A consumer group that the command reads does not exist on its stream (exit 1), with how to see or make one. */
export class GroupNotFound extends Schema.TaggedError<GroupNotFound>()("GroupNotFound", {
  stream: Schema.String,
  group: Schema.String
}) {
  override get message(): string {
    return (
      `consumer group ${JSON.stringify(this.group)} does not exist on stream ${JSON.stringify(this.stream)}: ` +
      `\`redflow stream groups ${this.stream}\` lists its groups; \`redflow consume --stream ${this.stream} --group ${this.group} …\` ` +
      `(or XGROUP CREATE ${this.stream} ${this.group} 0) creates it`
    )
  }
}

/** The demo found no Redis to run on: no `--redis`, no `REDIS_URL`, no `redis-server` on `PATH`. */
export class NoRedis extends Schema.TaggedError<NoRedis>()("NoRedis", {
  /** What was tried, and why each failed. */
  attempts: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return (
      "no Redis to run the demo on: pass --redis URL or set REDIS_URL (a container works: `docker run -d -p " +
      "6379:6379 redis:7`, then --redis redis://localhost:6379), or install redis-server (e.g. `apt-get install " +
      "redis-server`) and the demo starts its own. " +
      `Tried: ${this.attempts.join("; ")}`
    )
  }
}

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2
export const EXIT_AUTH = 3
export const EXIT_INTERRUPTED = 130

const USAGE_TAGS = new Set(["UsageError", "ConfigError", "PipelineConfigError", "PostgresConfigError"])

const AUTH_TAGS = new Set(["RedisAuthFailed", "PostgresPermissionError"])

const tagOf = (error: unknown): string | undefined =>
  Predicate.hasProperty(error, "_tag") && typeof error._tag === "string" ? error._tag : undefined

const messageOf = (error: unknown): string =>
  Predicate.hasProperty(error, "message") && typeof error.message === "string" && error.message !== ""
    ? error.message
    : String(error)

/** The exit code for a failure. */
export const exitCode = (cause: Cause.Cause<unknown>): number => {
  if (Cause.hasInterruptsOnly(cause)) return EXIT_INTERRUPTED
  const error = Cause.squash(cause)
  if (CliError.isCliError(error)) return EXIT_USAGE
  const tag = tagOf(error)
  if (tag !== undefined && AUTH_TAGS.has(tag)) return EXIT_AUTH
  if (tag !== undefined && USAGE_TAGS.has(tag)) return EXIT_USAGE
  // A bad option, or a port that is taken: either way the user changes --metrics-port.
  if (tag === "MetricsServerError" && (error as { reason?: unknown }).reason !== "listen-failed") return EXIT_USAGE
  return EXIT_FAILURE
}

/** The one line a failure prints (without the `redflow:` prefix). */
export const describe = (cause: Cause.Cause<unknown>): string => {
  if (Cause.hasInterruptsOnly(cause)) return "interrupted"
  const error = Cause.squash(cause)
  const tag = tagOf(error)
  const message = messageOf(error).split("\n")[0]!
  switch (tag) {
    case "UsageError":
      return `--${(error as UsageError).flag}: ${message}`
    case "RedisAuthFailed":
      return (error as { code?: unknown }).code === "NOPERM"
        ? `permission denied: ${message} (grant the user those commands and keys in its ACL, or use another user)`
        : `authentication failed: ${message} (check the user and password in --redis or REDIS_URL)`
    case "ConfigError": {
      // One that reached the top unmapped (found at run time, such as a database the server does not have): the
      // flag when the command line has one, else the component and the option.
      const config = error as ConfigError
      const flag = flagOf(config)
      return flag === undefined ? message : `--${flag}: ${reasonOf(config)}`
    }
    case "StreamNotFound":
    case "GroupNotFound":
    case "NoRedis":
    case "PipelineConfigError":
    case "PostgresPermissionError":
    case "PostgresSlotInUse":
    case "PostgresUnavailable":
    case "PostgresProtocolError":
    case "PostgresConfigError":
      return message
    case "RedisUnavailable":
      return `Redis is not reachable: ${message}`
    case "ServerStartFailed":
      return `could not start the demo's ${(error as { server?: unknown }).server}: ${message}`
    case "MetricsServerError":
      return (error as { reason?: unknown }).reason === "address-in-use"
        ? `--metrics-port: ${message} (pick another port, or 0 for a free one)`
        : `--metrics-port: ${message}`
    case undefined:
      return Cause.hasDies(cause) ? `unexpected error: ${message}` : message
    default:
      return `${tag}: ${message}`
  }
}
