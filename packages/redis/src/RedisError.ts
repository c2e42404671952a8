/**
 * One tagged error per failure mode of docs/GUARANTEES.md's failure table, and `classify`, the one place where a driver
 * error becomes one of them.
 *
 * Classification is by the reply's leading error code (`OOM`, `READONLY`, …), never by a substring of the
 * whole message: a key name or a script error can contain any word.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * Connection refused or reset, server loading, partition: the write did not happen, or its outcome is unknown.
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisUnavailable extends Schema.TaggedError<RedisUnavailable>()("RedisUnavailable", {
  message: Schema.String,
  /** True when the command may have executed (the connection dropped after it was written). */
  outcomeUnknown: Schema.Boolean,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/**
 * NOAUTH, WRONGPASS or NOPERM: credentials or ACL are wrong; or TLS: the server's certificate cannot be verified
 * (wrong CA, wrong host name, expired). None of these fixes itself: never retried.
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisAuthFailed extends Schema.TaggedError<RedisAuthFailed>()("RedisAuthFailed", {
  message: Schema.String,
  code: Schema.Literals(["NOAUTH", "WRONGPASS", "NOPERM", "TLS"]),
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/**
 * The server refused a write over `maxmemory`. Nothing of a script or transaction was written.
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisOutOfMemory extends Schema.TaggedError<RedisOutOfMemory>()("RedisOutOfMemory", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/**
 * A command or the connection did not answer in time. The command may still execute: outcome unknown.
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisTimeout extends Schema.TaggedError<RedisTimeout>()("RedisTimeout", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/**
 * A write reached a replica.
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisReadOnly extends Schema.TaggedError<RedisReadOnly>()("RedisReadOnly", {
  message: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/**
 * A cluster redirect that reached the caller (the slot moved while a pipeline was in flight).
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisClusterRedirect extends Schema.TaggedError<RedisClusterRedirect>()("RedisClusterRedirect", {
  message: Schema.String,
  kind: Schema.Literals(["MOVED", "ASK"]),
  slot: Schema.Number,
  address: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/**
 * Any other reply error (WRONGTYPE, syntax, a script error): a bug or a misconfiguration, fatal for the sink.
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisCommandError extends Schema.TaggedError<RedisCommandError>()("RedisCommandError", {
  message: Schema.String,
  code: Schema.String,
  command: Schema.optionalKey(Schema.String),
  key: Schema.optionalKey(Schema.String),
  cause: Schema.optionalKey(Schema.Defect())
}) {}

/**
 * Every failure of a Redis command, one tagged class per failure mode; {@link classify} makes one from a driver
 * error.
 *
 * @since 0.1.0
 * @category errors
 */
export type RedisError =
  | RedisUnavailable
  | RedisAuthFailed
  | RedisOutOfMemory
  | RedisTimeout
  | RedisReadOnly
  | RedisClusterRedirect
  | RedisCommandError

/**
 * The tags of {@link RedisError}: the keys of a failure policy table.
 *
 * @since 0.1.0
 * @category errors
 */
export type RedisErrorTag = RedisError["_tag"]

const isRedisError = (u: unknown): u is RedisError =>
  u instanceof RedisUnavailable ||
  u instanceof RedisAuthFailed ||
  u instanceof RedisOutOfMemory ||
  u instanceof RedisTimeout ||
  u instanceof RedisReadOnly ||
  u instanceof RedisClusterRedirect ||
  u instanceof RedisCommandError

// Node's TLS verification failures: a configuration problem, not a transient one.
const TLS_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "ERR_SSL_WRONG_VERSION_NUMBER"
])

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ECONNABORTED",
  "ERR_SOCKET_CLOSED",
  "ERR_STREAM_DESTROYED"
])

// Reply codes that mean "the server cannot take this now, try again": not a bug, not data loss.
const TRANSIENT_REPLY = /^(LOADING|BUSY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|NOREPLICAS)\b/
const AUTH_REPLY = /^(NOAUTH|WRONGPASS|NOPERM)\b/
const REDIRECT_REPLY = /^(MOVED|ASK) (\d+) (\S+)/
const REPLY_CODE = /^([A-Z][A-Z_]+)\b/

const messageOf = (u: unknown): string =>
  u instanceof Error ? u.message : typeof u === "string" ? u : (JSON.stringify(u) ?? String(u))

/**
 * Maps anything ioredis (or Node's socket layer) throws to a {@link RedisError}. Pure: the same input always gives
 * the same tag, so the policy table can be tested without a server.
 *
 * `written` says whether the command had been handed to the socket: a connection lost after that is an unknown
 * outcome, before it a plain "did not happen".
 *
 * @since 0.1.0
 * @category constructors
 */
export const classify = (cause: unknown, context: { readonly command?: string; readonly key?: string } = {}) => {
  if (isRedisError(cause)) return cause
  const message = messageOf(cause)
  const code = (cause as { code?: unknown } | null)?.code
  const name = cause instanceof Error ? cause.name : ""

  const auth = AUTH_REPLY.exec(message)
  if (auth) return new RedisAuthFailed({ message, code: auth[1] as RedisAuthFailed["code"], cause })
  if (typeof code === "string" && TLS_CODES.has(code)) {
    return new RedisAuthFailed({ message: `TLS: ${connectionFailure(cause, true)}`, code: "TLS", cause })
  }
  if (/^OOM\b/.test(message)) return new RedisOutOfMemory({ message, cause })
  if (/^READONLY\b/.test(message)) return new RedisReadOnly({ message, cause })
  const redirect = REDIRECT_REPLY.exec(message)
  if (redirect) {
    return new RedisClusterRedirect({
      message,
      kind: redirect[1] as "MOVED" | "ASK",
      slot: Number(redirect[2]),
      address: redirect[3]!,
      cause
    })
  }
  if (TRANSIENT_REPLY.test(message)) return new RedisUnavailable({ message, outcomeUnknown: false, cause })
  if (/^Command timed out\b/.test(message) || code === "ETIMEDOUT" || name === "TimeoutError") {
    return new RedisTimeout({ message, cause })
  }
  if (name === "ReplyError" || (REPLY_CODE.test(message) && name !== "Error" && name !== "MaxRetriesPerRequestError")) {
    const replyCode = REPLY_CODE.exec(message)?.[1] ?? "ERR"
    return new RedisCommandError({ message: withContext(message, context), code: replyCode, cause, ...context })
  }
  if (typeof code === "string" && CONNECTION_CODES.has(code)) {
    // A reset after the command was sent is an unknown outcome; a refusal is not.
    return new RedisUnavailable({ message, outcomeUnknown: code !== "ECONNREFUSED" && code !== "ENOTFOUND", cause })
  }
  // ioredis aborts a pipeline whose connection closed under it: the commands may or may not have run.
  if (name === "AbortError" || /^Command aborted due to connection close/.test(message)) {
    return new RedisUnavailable({ message, outcomeUnknown: true, cause })
  }
  if (
    /^(Connection is closed|Stream isn't writeable|Cluster isn't ready|Reached the max retries per request)/.test(
      message
    ) ||
    /None of (the )?(startup|sentinels)|Failed to refresh slots cache|All sentinels are unreachable/.test(message) ||
    name === "MaxRetriesPerRequestError" ||
    name === "ClusterAllFailedError"
  ) {
    return new RedisUnavailable({ message, outcomeUnknown: /^Connection is closed/.test(message), cause })
  }
  return new RedisCommandError({ message: withContext(message, context), code: "UNKNOWN", cause, ...context })
}

/** A fatal reply says which command on which key it answered, unless it says so already. */
const withContext = (message: string, context: { readonly command?: string; readonly key?: string }) => {
  if (context.command === undefined && context.key === undefined) return message
  if (context.key !== undefined && message.includes(context.key)) return message
  const on = context.key === undefined ? "" : ` on ${context.key}`
  return `${message} (${context.command ?? "command"}${on})`
}

const codeOf = (u: unknown): string | undefined => {
  const code = (u as { code?: unknown } | null)?.code
  return typeof code === "string" ? code : undefined
}

// Node's own text for a TLS socket that closed during the handshake (a plain server never answers one).
const TLS_HANDSHAKE_CLOSED = /^Client network socket disconnected before secure TLS connection was established/

/**
 * Why a connection attempt failed, in words a user can act on: the cause as Node or the server gave it, and what to
 * check. `tls` says whether the URL asked for TLS (`rediss://`). The caller prefixes the server.
 *
 * @example
 * ```ts
 * connectionFailure(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:6390"), { code: "ECONNREFUSED" }), false)
 * // "connection refused (connect ECONNREFUSED 127.0.0.1:6390): nothing listens on that port; is the server running,
 * //  and are the host and port right?"
 * ```
 *
 * @since 0.1.0
 * @category formatting
 */
export const connectionFailure = (cause: unknown, tls: boolean): string => {
  const message = messageOf(cause)
  const code = codeOf(cause)
  const tlsHint = "is the server speaking TLS on that port? A plain server needs redis://, a TLS one its tls-port"
  switch (code) {
    case "ECONNREFUSED":
      return `connection refused (${message}): nothing listens on that port; is the server running, and are the host and port right?`
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `the host name does not resolve (${message}); check the host in the URL`
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return `no route to the host (${message}); check the host in the URL and the network`
    case "ETIMEDOUT":
      return tls
        ? `TLS handshake failed: no TLS connection within the connect timeout (${message}); ${tlsHint}`
        : `no connection within the connect timeout (${message}); is the host reachable and the server answering?`
  }
  if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || (tls && TLS_HANDSHAKE_CLOSED.test(message))) {
    return `TLS handshake failed (${message}): ${tlsHint}`
  }
  return message
}

/**
 * What a server that refused a new client before any command said (its first line, without the `-`), with the fix
 * when it is a known refusal.
 *
 * @since 0.1.0
 * @category formatting
 */
export const serverRefusal = (line: string): string =>
  /^ERR max number of clients reached\b/.test(line)
    ? `the server refused the connection: ${line}; it is at its maxclients limit: raise maxclients or close idle clients`
    : `the server refused the connection: ${line}`

/**
 * Whether a write that failed with this error may nevertheless have been applied by the server.
 *
 * @since 0.1.0
 * @category guards
 */
export const isOutcomeUnknown = (error: RedisError): boolean =>
  error._tag === "RedisTimeout" || (error._tag === "RedisUnavailable" && error.outcomeUnknown)
