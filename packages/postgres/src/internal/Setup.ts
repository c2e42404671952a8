/**
 * The start-up checks of the PostgreSQL source, run on a plain SQL session before anything is read: the server's
 * settings, the role's attributes, the tables (existence, kind, privileges, replica identity), the publication and
 * the replication slot. Also the WAL position for the lag metrics, and the mapping of connection failures to the
 * package's typed errors. Every failure names the server, the setting or table at fault, and the statement that
 * fixes it.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import {
  PostgresConfigError,
  PostgresPermissionError,
  PostgresProtocolError,
  PostgresSlotInUse,
  PostgresUnavailable
} from "../PostgresError.ts"
import type { PostgresError } from "../PostgresError.ts"
import * as Pgoutput from "./Pgoutput.ts"
import { quoteIdent, ReplicationError } from "./ReplicationClient.ts"
import type { Row, Session } from "./Session.ts"
import type { ColumnInfo, TableInfo } from "./Tables.ts"

export { quoteIdent }

// ---------------------------------------------------------------------------------------------------------------
// Connection failures
// ---------------------------------------------------------------------------------------------------------------

/** Node socket errors of a server that is down, restarting, or out of reach for now. */
const transientSocketCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "EPIPE"
])

/**
 * SQLSTATEs of a server that will take the connection later: shut down by an administrator (`57P01`), crashed
 * (`57P02`), starting up or shutting down (`57P03`), out of connection slots or WAL senders (`53300`), and the
 * connection exceptions of class 08.
 */
const transientSqlStates = new Set(["57P01", "57P02", "57P03", "53300", "08000", "08001", "08003", "08006"])

// pg's own messages for a connection lost or never completed, which carry no code.
const transientMessage =
  /timeout|timed out|Connection terminated|ended unexpectedly|socket hang up|closed the connection|not queryable/i

const isTransient = (error: ReplicationError): boolean =>
  error.code !== undefined
    ? transientSocketCodes.has(error.code) || transientSqlStates.has(error.code)
    : transientMessage.test(error.message)

/** The server's own words, without the prefix the session or client put before them. */
const serverWords = (error: ReplicationError): string => {
  const cause = error.cause
  return cause instanceof Error && cause.message !== "" ? cause.message : error.message
}

/** `db` of `host:port/db`. */
const databaseOf = (server: string): string => server.slice(server.indexOf("/") + 1) || "postgres"

const hbaFix = (user: string, database: string) =>
  `add lines for this role and this client's address to the server's pg_hba.conf, before any reject line: ` +
  `\`host ${database} ${user} <client address>/32 scram-sha-256\` for the SQL session and ` +
  `\`host replication ${user} <client address>/32 scram-sha-256\` for the replication connection; then ` +
  `SELECT pg_reload_conf()`

/**
 * Maps a failure to connect (or of a session that lost its server) to the package's errors:
 *
 * - wrong or missing password, no such role, a role without LOGIN, pg_hba.conf rejection (`28P01`, `28000`), no
 *   CONNECT on the database, a replication connection of a role without `REPLICATION` (`42501`, PostgreSQL 15:
 *   "must be superuser or replication role to start walsender") → {@link PostgresPermissionError}
 * - the database does not exist (`3D000`) → {@link PostgresConfigError} on `url`
 * - refused, unresolvable or unreachable host, timeouts, administrator shutdown (`57P01`), starting up (`57P03`),
 *   and anything else → {@link PostgresUnavailable}; {@link isRetryable} says which of these are worth a retry.
 *
 * @example
 * ```ts
 * Session.make({ url }).pipe(Effect.mapError((error) => classifyConnectError(error, "db:5432/shop", "redflow")))
 * ```
 */
export const classifyConnectError = (
  error: ReplicationError,
  server: string,
  user: string
): PostgresPermissionError | PostgresConfigError | PostgresUnavailable => {
  const words = serverWords(error)
  const quotedUser = quoteIdent(user)
  const permission = (reason: string, fix: string) =>
    new PostgresPermissionError({ server, user, reason, fix, cause: error })
  switch (error.code) {
    case "28P01":
      return permission(
        words,
        `give the role's password (the password option, or in the URL); ALTER ROLE ${quotedUser} PASSWORD '…' sets a new one`
      )
    case "28000":
      if (/does not exist/i.test(words)) {
        return permission(
          words,
          `correct the user in the URL, or create the role: CREATE ROLE ${quotedUser} LOGIN REPLICATION PASSWORD '…'`
        )
      }
      if (/not permitted to log in/i.test(words)) {
        return permission(words, `ALTER ROLE ${quotedUser} WITH LOGIN`)
      }
      return permission(words, hbaFix(user, databaseOf(server)))
    case "42501":
      if (/walsender|WAL sender|replication role|REPLICATION attribute/i.test(words)) {
        return permission(
          `${words} (a replication connection needs the REPLICATION attribute)`,
          `ALTER ROLE ${quotedUser} WITH REPLICATION`
        )
      }
      if (/permission denied for database/i.test(words)) {
        return permission(words, `GRANT CONNECT ON DATABASE ${quoteIdent(databaseOf(server))} TO ${quotedUser}`)
      }
      return permission(words, `grant the role what the server asks for above`)
    case "3D000":
      return new PostgresConfigError({
        field: "url",
        server,
        reason: words,
        fix: `correct the database in the URL, or create it: CREATE DATABASE ${quoteIdent(databaseOf(server))}`
      })
  }
  if (error.code === undefined && /password must be a string|password authentication|no password/i.test(words)) {
    return permission(
      `the server asks for a password and none was given (${words})`,
      "give the role's password: the password option, or in the URL"
    )
  }
  return new PostgresUnavailable({ server, reason: words, cause: error })
}

/**
 * Whether a failure is worth retrying: the server is down, restarting, out of connection slots or out of reach
 * for now. Takes a raw {@link ReplicationError} or a classified error (a {@link PostgresUnavailable} is retryable
 * when the failure under it is; configuration, permission, slot-in-use and protocol errors never are).
 */
export const isRetryable = (error: ReplicationError | PostgresError): boolean => {
  switch (error._tag) {
    case "PostgresReplicationError":
      return isTransient(error)
    case "PostgresUnavailable":
      return error.cause instanceof ReplicationError ? isTransient(error.cause) : true
    default:
      return false
  }
}

/** A catalog query that failed under one of the checks: the server went away, or refused something unexpected. */
const queryFailed = (server: string) => (error: ReplicationError) =>
  new PostgresUnavailable({ server, reason: serverWords(error), cause: error })

const run = (session: Session, sql: string, params: ReadonlyArray<unknown> = []) =>
  Effect.mapError(session.query(sql, params), queryFailed(session.server))

const bool = (value: string | null | undefined): boolean => value === "t" || value === "true"

// ---------------------------------------------------------------------------------------------------------------
// Server and role
// ---------------------------------------------------------------------------------------------------------------

export interface ServerInfo {
  /** `server_version_num`, e.g. `150020`. */
  readonly versionNum: number
  /** `server_version`, e.g. `15.20 (Debian 15.20-0+deb12u1)`. */
  readonly version: string
  readonly database: string
}

const restartFix = (setting: string, value: string) =>
  `ALTER SYSTEM SET ${setting} = ${value}, then restart the server (a reload is not enough for ${setting})`

/**
 * Checks that the server can serve logical replication: version 10 or later, `wal_level = logical`,
 * `max_replication_slots` and `max_wal_senders` above 0, and a primary (PostgreSQL before 16 decodes on the
 * primary only).
 */
export const checkServer = (session: Session): Effect.Effect<ServerInfo, PostgresConfigError | PostgresUnavailable> =>
  Effect.gen(function* () {
    const rows = yield* run(
      session,
      `SELECT current_setting('server_version_num') AS version_num, current_setting('server_version') AS version,
              current_setting('wal_level') AS wal_level, current_setting('max_replication_slots') AS max_slots,
              current_setting('max_wal_senders') AS max_senders, pg_is_in_recovery()::text AS in_recovery,
              current_database() AS database`
    )
    const row = rows[0] ?? {}
    const server = session.server
    const versionNum = Number(row.version_num)
    const version = row.version ?? "unknown"
    const config = (field: string, reason: string, fix: string) =>
      new PostgresConfigError({ field, server, reason, fix })
    if (!(versionNum >= 100_000)) {
      return yield* config(
        "server_version",
        `PostgreSQL ${version} has no built-in logical replication (pgoutput and publications came in version 10)`,
        "upgrade the server to PostgreSQL 10 or later"
      )
    }
    if (row.wal_level !== "logical") {
      return yield* config(
        "wal_level",
        `wal_level is ${row.wal_level ?? "unknown"}, and logical decoding needs wal_level = logical`,
        restartFix("wal_level", "logical")
      )
    }
    for (const [setting, value] of [
      ["max_replication_slots", row.max_slots],
      ["max_wal_senders", row.max_senders]
    ] as const) {
      if (!(Number(value) > 0)) {
        return yield* config(
          setting,
          `${setting} is ${value ?? "unknown"}: the source needs a replication slot and a WAL sender`,
          restartFix(setting, "10")
        )
      }
    }
    if (bool(row.in_recovery) && versionNum < 160_000) {
      return yield* config(
        "url",
        `the server is a standby (in recovery), and PostgreSQL ${version} decodes changes on the primary only`,
        "point the URL at the primary"
      )
    }
    return { versionNum, version, database: row.database ?? databaseOf(server) }
  })

export interface RoleInfo {
  readonly user: string
  readonly superuser: boolean
  readonly replication: boolean
}

/** Checks that the session's role may stream changes: it has `REPLICATION`, or is a superuser. */
export const checkRole = (session: Session): Effect.Effect<RoleInfo, PostgresPermissionError | PostgresUnavailable> =>
  Effect.gen(function* () {
    const rows = yield* run(
      session,
      `SELECT r.rolname AS user, quote_ident(r.rolname) AS quoted, r.rolsuper::text AS superuser,
              r.rolreplication::text AS replication
         FROM pg_roles r WHERE r.rolname = current_user`
    )
    const row = rows[0] ?? {}
    const role = { user: row.user ?? "", superuser: bool(row.superuser), replication: bool(row.replication) }
    if (!role.superuser && !role.replication) {
      return yield* new PostgresPermissionError({
        server: session.server,
        user: role.user,
        reason: "the role lacks the REPLICATION attribute, which streaming changes from a replication slot needs",
        fix: `ALTER ROLE ${row.quoted ?? quoteIdent(role.user)} WITH REPLICATION (as a superuser)`
      })
    }
    return role
  })

// ---------------------------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------------------------

export interface TableName {
  readonly schema: string
  readonly table: string
}

const tablesError = (reason: string, fix: string, server?: string) =>
  new PostgresConfigError({ field: "tables", ...(server === undefined ? {} : { server }), reason, fix })

// Unquoted identifiers as PostgreSQL reads them (folded to lower case); quoted ones with "" for a quote.
const identifier = /^(?:"((?:[^"]|"")+)"|([A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*))/

/**
 * Parses `schema.table` or `table` (schema `public`) as PostgreSQL reads a qualified name: unquoted parts fold to
 * lower case, quoted parts (`"My Table"`, `public."a.b"`) are taken as written.
 */
export const parseTableName = (name: string): Effect.Effect<TableName, PostgresConfigError> => {
  const parts: Array<string> = []
  let rest = name.trim()
  let complete = false
  for (;;) {
    const match = identifier.exec(rest)
    if (match === null) break
    parts.push(match[1] !== undefined ? match[1].replaceAll('""', '"') : match[2]!.toLowerCase())
    rest = rest.slice(match[0].length)
    complete = !rest.startsWith(".")
    if (complete) break
    rest = rest.slice(1)
  }
  if (!complete || rest !== "" || parts.length > 2) {
    return Effect.fail(
      tablesError(
        `${JSON.stringify(name)} is not a table name`,
        'write schema.table or table (schema public); quote a name with capitals, spaces or dots in double quotes, e.g. public."Order Lines"'
      )
    )
  }
  return Effect.succeed(
    parts.length === 1 ? { schema: "public", table: parts[0]! } : { schema: parts[0]!, table: parts[1]! }
  )
}

const relkindNames: Record<string, string> = {
  v: "a view",
  m: "a materialized view",
  f: "a foreign table",
  S: "a sequence",
  i: "an index",
  I: "a partitioned index",
  c: "a composite type",
  t: "a TOAST table"
}

/** A replica identity that lets the server log UPDATE and DELETE of a published table. */
const hasIdentity = (replident: string | null | undefined, hasPrimaryKey: boolean, hasIdentityIndex: boolean) =>
  replident === "f" || (replident === "d" && hasPrimaryKey) || (replident === "i" && hasIdentityIndex)

const identityError = (
  server: string,
  quoted: string,
  unquoted: string,
  replident: string | null | undefined,
  of?: string
) => {
  const state =
    replident === "n"
      ? "REPLICA IDENTITY NOTHING"
      : replident === "i"
        ? "REPLICA IDENTITY USING INDEX, and that index is gone"
        : "no primary key and REPLICA IDENTITY DEFAULT"
  return tablesError(
    `table ${quoted}${of === undefined ? "" : ` (a partition of ${of})`} has no replica identity (${state}): once it ` +
      `is published the database itself refuses UPDATE and DELETE on it ("cannot update table "${unquoted}" ` +
      `because it does not have a replica identity and publishes updates")`,
    `ALTER TABLE ${quoted} ADD PRIMARY KEY (<key columns>), or ALTER TABLE ${quoted} REPLICA IDENTITY FULL ` +
      `(old rows then carry every column)`,
    server
  )
}

const resolveOne = (
  session: Session,
  name: string
): Effect.Effect<TableInfo, PostgresConfigError | PostgresPermissionError | PostgresUnavailable> =>
  Effect.gen(function* () {
    const server = session.server
    const { schema, table } = yield* parseTableName(name)
    const found = yield* run(
      session,
      `SELECT c.oid::text AS oid, c.relkind::text AS relkind, c.relreplident::text AS replident,
              quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS quoted,
              quote_ident(n.nspname) AS quoted_schema, has_schema_privilege(n.oid, 'USAGE')::text AS usage,
              has_table_privilege(c.oid, 'SELECT')::text AS can_select,
              current_user AS user, quote_ident(current_user) AS quoted_user,
              current_setting('server_version_num') AS version_num
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = $2`,
      [schema, table]
    )
    const row = found[0]
    const display = `${quoteIdent(schema)}.${quoteIdent(table)}`
    if (row === undefined) {
      const elsewhere = yield* run(
        session,
        `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS quoted
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE lower(c.relname) = lower($2) AND c.relkind IN ('r', 'p') AND NOT (n.nspname = $1 AND c.relname = $2)
            AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
          ORDER BY 1`,
        [schema, table]
      )
      const others = elsewhere.map((r) => r.quoted ?? "")
      return yield* tablesError(
        `table ${display} (from ${JSON.stringify(name)}) does not exist` +
          (others.length > 0 ? `; tables of that name: ${others.join(", ")}` : ""),
        others.length > 0
          ? `name the table you mean, e.g. ${others[0]}`
          : "create the table, or correct its name in the tables option",
        server
      )
    }
    const quoted = row.quoted ?? display
    const oid = Number(row.oid)
    const relkind = row.relkind ?? ""
    if (relkind !== "r" && relkind !== "p") {
      return yield* tablesError(
        `${quoted} is ${relkindNames[relkind] ?? `a relation of kind ${relkind}`}, and only ordinary and partitioned ` +
          "tables can be published",
        "name the table(s) it reads from instead",
        server
      )
    }
    if (relkind === "p" && Number(row.version_num) < 130_000) {
      return yield* tablesError(
        `${quoted} is a partitioned table, which PostgreSQL before 13 cannot publish`,
        "name its partitions instead, or upgrade to PostgreSQL 13 or later",
        server
      )
    }
    const user = row.user ?? ""
    if (!bool(row.usage)) {
      return yield* new PostgresPermissionError({
        server,
        user,
        reason: `no USAGE on schema ${row.quoted_schema}, which reading ${quoted} needs`,
        fix: `GRANT USAGE ON SCHEMA ${row.quoted_schema} TO ${row.quoted_user}`
      })
    }
    if (!bool(row.can_select)) {
      return yield* new PostgresPermissionError({
        server,
        user,
        reason: `no SELECT on table ${quoted}, which the snapshot reads`,
        fix: `GRANT SELECT ON ${quoted} TO ${row.quoted_user}`
      })
    }

    const columnRows = yield* run(
      session,
      `SELECT a.attname AS name, a.atttypid::text AS type_oid, t.typname AS type_name,
              (a.attgenerated <> '')::text AS generated
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum`,
      [oid]
    )
    const columns: Array<ColumnInfo> = columnRows.map((c) => ({
      name: c.name ?? "",
      typeOid: Number(c.type_oid),
      typeName: c.type_name ?? "",
      generated: bool(c.generated)
    }))
    const keyRows = yield* run(
      session,
      `SELECT i.indisprimary::text AS is_primary, i.indisreplident::text AS is_identity, a.attname AS name
         FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident)
        ORDER BY i.indexrelid, k.ord`,
      [oid]
    )
    const primaryKey = keyRows.filter((k) => bool(k.is_primary)).map((k) => k.name ?? "")
    const identityIndex = keyRows.filter((k) => bool(k.is_identity)).map((k) => k.name ?? "")
    const replident = row.replident ?? "d"

    // What the server checks on UPDATE/DELETE is the identity of the table written to: for a partitioned table, each
    // leaf partition, whose identity is its own (REPLICA IDENTITY on the parent does not reach the partitions).
    const leaves: ReadonlyArray<Row> =
      relkind === "p"
        ? yield* run(
            session,
            `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS quoted, c.relname AS name,
                    c.relreplident::text AS replident,
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)::text AS has_pk,
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)::text AS has_index
               FROM pg_partition_tree($1::oid::regclass) p
               JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE p.isleaf AND c.relkind = 'r'
              ORDER BY 1`,
            [oid]
          )
        : [
            {
              quoted,
              name: table,
              replident,
              has_pk: String(primaryKey.length > 0),
              has_index: String(identityIndex.length > 0)
            }
          ]
    if (relkind === "p" && replident === "n") {
      return yield* identityError(server, quoted, table, replident)
    }
    for (const leaf of leaves) {
      if (!hasIdentity(leaf.replident, bool(leaf.has_pk), bool(leaf.has_index))) {
        return yield* identityError(
          server,
          leaf.quoted ?? quoted,
          leaf.name ?? table,
          leaf.replident,
          relkind === "p" ? quoted : undefined
        )
      }
    }

    const identityColumns =
      replident === "f"
        ? columns.map((c) => c.name)
        : replident === "i"
          ? identityIndex
          : replident === "d"
            ? primaryKey
            : []
    return {
      schema,
      table,
      oid,
      quoted,
      columns,
      primaryKey,
      replicaIdentity: replident as TableInfo["replicaIdentity"],
      identityColumns
    }
  })

/**
 * Resolves the `tables` option against the catalog, in the order given and without duplicates (`orders` and
 * `public.orders` are one table). Each must exist, be an ordinary or partitioned table the role can read, and have
 * a replica identity (a primary key, an identity index, or FULL), without which the server refuses UPDATE and
 * DELETE on it once it is published.
 */
export const resolveTables = (
  session: Session,
  names: ReadonlyArray<string>
): Effect.Effect<ReadonlyArray<TableInfo>, PostgresConfigError | PostgresPermissionError | PostgresUnavailable> =>
  Effect.gen(function* () {
    if (names.length === 0) {
      return yield* tablesError("no tables given", "name at least one table, as schema.table or table", session.server)
    }
    const tables: Array<TableInfo> = []
    for (const name of names) {
      const info = yield* resolveOne(session, name)
      if (!tables.some((t) => t.oid === info.oid)) tables.push(info)
    }
    return tables
  })

// ---------------------------------------------------------------------------------------------------------------
// Publication
// ---------------------------------------------------------------------------------------------------------------

export interface PublicationState {
  /** Whether it was created now. */
  readonly created: boolean
  /** A `FOR ALL TABLES` publication. */
  readonly allTables: boolean
  /** Tables it publishes that are not among the source's (`schema.table`, quoted): their changes are ignored. */
  readonly others: ReadonlyArray<string>
}

const publicationError = (server: string, reason: string, fix: string) =>
  new PostgresConfigError({ field: "publication", server, reason, fix })

/** A publication name as the server stores it: non-empty, at most 63 bytes (longer ones are cut short). */
export const validatePublicationName = (name: string): Effect.Effect<string, PostgresConfigError> =>
  name === "" || Buffer.byteLength(name, "utf8") > 63 || name.includes("\u0000")
    ? Effect.fail(
        new PostgresConfigError({
          field: "publication",
          reason: `${JSON.stringify(name)} is not a publication name (1 to 63 bytes)`,
          fix: "give a shorter publication name, e.g. redflow"
        })
      )
    : Effect.succeed(name)

/**
 * Makes sure the publication `name` publishes `tables`. Absent: created `FOR TABLE` them (with
 * `publish_via_partition_root` when one is partitioned, so a partition's changes come as the table's). Present: it
 * must publish insert, update, delete and truncate, include every table (or be `FOR ALL TABLES`) with all of its
 * columns and rows, and publish partitioned tables via their root.
 */
export const ensurePublication = (
  session: Session,
  name: string,
  tables: ReadonlyArray<TableInfo>
): Effect.Effect<PublicationState, PostgresConfigError | PostgresPermissionError | PostgresUnavailable> =>
  Effect.gen(function* () {
    yield* validatePublicationName(name)
    const server = session.server
    if (tables.length === 0) {
      return yield* publicationError(server, `no tables to publish in ${name}`, "name at least one table")
    }
    const lookup = run(
      session,
      `SELECT quote_ident($1) AS quoted, current_user AS user, quote_ident(current_user) AS quoted_user,
              quote_ident(current_database()) AS quoted_database, to_jsonb(p)::text AS publication
         FROM (SELECT 1) one LEFT JOIN pg_publication p ON p.pubname = $1`,
      [name]
    )
    const first = (yield* lookup)[0] ?? {}
    const quoted = first.quoted ?? quoteIdent(name)
    const anyPartitioned = yield* partitioned(session, tables)

    if (first.publication === null || first.publication === undefined) {
      const statement =
        `CREATE PUBLICATION ${quoted} FOR TABLE ${tables.map((t) => t.quoted).join(", ")}` +
        (anyPartitioned ? " WITH (publish_via_partition_root = true)" : "")
      const created = yield* session.query(statement).pipe(
        Effect.as(true),
        Effect.catch((error): Effect.Effect<boolean, PostgresPermissionError | PostgresUnavailable> => {
          // Created by another process between the look-up and now: check that one like any existing one.
          if (error.code === "42710") return Effect.succeed(false)
          if (error.code === "42501") {
            const words = serverWords(error)
            return Effect.flatMap(owners(session, tables), (names) =>
              Effect.fail(
                new PostgresPermissionError({
                  server,
                  user: first.user ?? "",
                  reason: `cannot create publication ${quoted} (${words})`,
                  fix:
                    `have the owner of the tables (${names.join(", ")}), or a superuser, run: ${statement}` +
                    (/permission denied for database/i.test(words)
                      ? ` (the owner needs CREATE on the database too: GRANT CREATE ON DATABASE ${first.quoted_database} TO <owner>)`
                      : "")
                })
              )
            )
          }
          return Effect.fail(queryFailed(server)(error))
        })
      )
      if (created) return { created: true, allTables: false, others: [] }
      return yield* checkExisting(session, name, quoted, tables, anyPartitioned)
    }
    return yield* checkExisting(session, name, quoted, tables, anyPartitioned)
  })

/** The roles owning the tables, for the message that asks one of them to create the publication. */
const owners = (session: Session, tables: ReadonlyArray<TableInfo>) =>
  Effect.map(
    run(
      session,
      `SELECT DISTINCT quote_ident(pg_get_userbyid(relowner)) AS owner FROM pg_class WHERE oid = ANY($1::oid[]) ORDER BY 1`,
      [tables.map((t) => String(t.oid))]
    ),
    (rows) => rows.map((r) => r.owner ?? "")
  )

const partitioned = (session: Session, tables: ReadonlyArray<TableInfo>) =>
  Effect.map(
    run(session, `SELECT count(*)::text AS n FROM pg_class WHERE oid = ANY($1::oid[]) AND relkind = 'p'`, [
      tables.map((t) => String(t.oid))
    ]),
    (rows) => Number(rows[0]?.n) > 0
  )

interface PublicationRow {
  readonly puballtables?: boolean
  readonly pubinsert?: boolean
  readonly pubupdate?: boolean
  readonly pubdelete?: boolean
  readonly pubtruncate?: boolean
  readonly pubviaroot?: boolean
}

const checkExisting = (
  session: Session,
  name: string,
  quoted: string,
  tables: ReadonlyArray<TableInfo>,
  anyPartitioned: boolean
): Effect.Effect<PublicationState, PostgresConfigError | PostgresUnavailable> =>
  Effect.gen(function* () {
    const server = session.server
    // to_jsonb: the columns of pg_publication differ across versions (pubtruncate 11, pubviaroot 13).
    const rows = yield* run(
      session,
      `SELECT to_jsonb(p)::text AS publication FROM pg_publication p WHERE pubname = $1`,
      [name]
    )
    const json = rows[0]?.publication
    if (json === undefined || json === null) {
      return yield* publicationError(server, `publication ${quoted} disappeared while it was checked`, "start again")
    }
    const publication = JSON.parse(json) as PublicationRow
    const missingOps = (["insert", "update", "delete", "truncate"] as const).filter((op) => {
      const flag = publication[`pub${op}`]
      // A server without the column (truncate before 11) cannot publish that operation at all.
      return flag === false
    })
    if (missingOps.length > 0) {
      return yield* publicationError(
        server,
        `publication ${quoted} does not publish ${missingOps.join(", ")}, so those changes would never reach the stream`,
        `ALTER PUBLICATION ${quoted} SET (publish = 'insert, update, delete, truncate')`
      )
    }
    if (anyPartitioned && publication.pubviaroot === false) {
      return yield* publicationError(
        server,
        `publication ${quoted} publishes a partitioned table's changes under its partitions' names ` +
          "(publish_via_partition_root is off), which the source does not know",
        `ALTER PUBLICATION ${quoted} SET (publish_via_partition_root = true)`
      )
    }
    const published = yield* run(
      session,
      `SELECT c.oid::text AS oid, quote_ident(pt.schemaname) || '.' || quote_ident(pt.tablename) AS quoted,
              to_jsonb(pt)::text AS entry
         FROM pg_publication_tables pt
         JOIN pg_namespace n ON n.nspname = pt.schemaname
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
        WHERE pt.pubname = $1
        ORDER BY 2`,
      [name]
    )
    const byOid = new Map(published.map((p) => [Number(p.oid), p]))
    const missing = tables.filter((t) => !byOid.has(t.oid))
    if (missing.length > 0) {
      return yield* publicationError(
        server,
        `publication ${quoted} does not publish ${missing.map((t) => t.quoted).join(", ")}`,
        `ALTER PUBLICATION ${quoted} ADD TABLE ${missing.map((t) => t.quoted).join(", ")}`
      )
    }
    // Column lists and row filters (PostgreSQL 15): the stream would carry less than the snapshot reads.
    for (const table of tables) {
      const entry = JSON.parse(byOid.get(table.oid)!.entry ?? "{}") as {
        readonly attnames?: ReadonlyArray<string> | null
        readonly rowfilter?: string | null
      }
      const listed = entry.attnames ?? undefined
      const left = listed === undefined ? [] : table.columns.filter((c) => !c.generated && !listed.includes(c.name))
      const filtered = entry.rowfilter !== undefined && entry.rowfilter !== null
      if (left.length > 0 || filtered) {
        return yield* publicationError(
          server,
          `publication ${quoted} publishes ${table.quoted} ` +
            (filtered ? `only where ${entry.rowfilter}` : `without columns ${left.map((c) => c.name).join(", ")}`) +
            ", while the snapshot reads every row and column",
          `ALTER PUBLICATION ${quoted} DROP TABLE ${table.quoted}; ALTER PUBLICATION ${quoted} ADD TABLE ${table.quoted}`
        )
      }
    }
    const mine = new Set(tables.map((t) => t.oid))
    return {
      created: false,
      allTables: publication.puballtables === true,
      others: published.filter((p) => !mine.has(Number(p.oid))).map((p) => p.quoted ?? "")
    }
  })

// ---------------------------------------------------------------------------------------------------------------
// Slot
// ---------------------------------------------------------------------------------------------------------------

const slotName = /^[a-z0-9_]{1,63}$/

/** A slot name the server accepts: 1 to 63 of lower-case letters, digits and `_`. */
export const validateSlotName = (slot: string): Effect.Effect<string, PostgresConfigError> =>
  slotName.test(slot)
    ? Effect.succeed(slot)
    : Effect.fail(
        new PostgresConfigError({
          field: "slot",
          reason: `${JSON.stringify(slot)} is not a replication slot name`,
          fix: "use 1 to 63 lower-case letters, digits and underscores, e.g. redflow_orders"
        })
      )

export interface SlotState {
  readonly confirmedFlush: Pgoutput.Lsn
  readonly restartLsn: Pgoutput.Lsn
  /** `reserved`, `extended`, `unreserved` (WAL about to be removed), or `unknown` before PostgreSQL 13. */
  readonly walStatus: string
}

interface SlotRow {
  readonly slot_type?: string
  readonly plugin?: string | null
  readonly database?: string | null
  readonly active?: boolean
  readonly active_pid?: number | null
  readonly wal_status?: string | null
  readonly restart_lsn?: string | null
  readonly confirmed_flush_lsn?: string | null
}

const slotError = (server: string, reason: string, fix: string) =>
  new PostgresConfigError({ field: "slot", server, reason, fix })

const dropStatement = (slot: string) => `SELECT pg_drop_replication_slot('${slot}')`

const lostError = (server: string, slot: string) =>
  slotError(
    server,
    `replication slot ${slot} is lost (wal_status = 'lost'): the server removed WAL it had not yet sent ` +
      "(max_slot_wal_keep_size), so changes made since were lost on the server side",
    `${dropStatement(slot)}, then start again with a snapshot (drop this pipeline's checkpoint)`
  )

/**
 * Reads the slot from `pg_replication_slots`: none when absent. A present one must be a logical `pgoutput` slot of
 * this database, not streamed by another process, and not lost.
 */
export const inspectSlot = (
  session: Session,
  slot: string
): Effect.Effect<
  Option.Option<SlotState>,
  PostgresConfigError | PostgresSlotInUse | PostgresUnavailable | PostgresProtocolError
> =>
  Effect.gen(function* () {
    yield* validateSlotName(slot)
    const server = session.server
    // to_jsonb: wal_status arrived in PostgreSQL 13.
    const rows = yield* run(
      session,
      `SELECT to_jsonb(s)::text AS slot, current_database() AS database FROM pg_replication_slots s WHERE slot_name = $1`,
      [slot]
    )
    const row = rows[0]
    if (row === undefined || row.slot === null || row.slot === undefined) return Option.none()
    const state = JSON.parse(row.slot) as SlotRow
    const otherName = `choose another slot name for this source, or drop this one: ${dropStatement(slot)}`
    if (state.slot_type !== "logical") {
      return yield* slotError(
        server,
        `replication slot ${slot} is a ${state.slot_type ?? "non-logical"} slot (a standby's), not a logical one`,
        otherName
      )
    }
    if (state.plugin !== "pgoutput") {
      return yield* slotError(
        server,
        `replication slot ${slot} decodes with plugin ${state.plugin ?? "unknown"}, and the source reads pgoutput`,
        otherName
      )
    }
    if (state.database !== row.database) {
      return yield* slotError(
        server,
        `replication slot ${slot} belongs to database ${state.database ?? "unknown"}, not ${row.database ?? "this one"}`,
        `${otherName} (or point the URL at database ${state.database ?? "unknown"})`
      )
    }
    if (state.active === true) {
      return yield* new PostgresSlotInUse({ server, slot, pid: Number(state.active_pid ?? 0) })
    }
    if (state.wal_status === "lost") return yield* lostError(server, slot)
    const confirmedFlush = Pgoutput.parseLsn(state.confirmed_flush_lsn ?? "")
    const restartLsn = Pgoutput.parseLsn(state.restart_lsn ?? "")
    if (confirmedFlush === undefined || restartLsn === undefined) {
      // An invalidated slot on a server without wal_status, or one still being created.
      return yield* new PostgresProtocolError({
        server,
        reason:
          `replication slot ${slot} has no usable position (confirmed_flush_lsn ${state.confirmed_flush_lsn}, ` +
          `restart_lsn ${state.restart_lsn}): if it was invalidated, ${dropStatement(slot)} and start again with a snapshot`
      })
    }
    return Option.some({ confirmedFlush, restartLsn, walStatus: state.wal_status ?? "unknown" })
  })

export interface WalPosition {
  /** `pg_current_wal_lsn()`. */
  readonly current: Pgoutput.Lsn
  /** Bytes of WAL written since the slot's `confirmed_flush_lsn`: what the source has not acknowledged yet. */
  readonly lagBytes: number
  /** Bytes of WAL the slot holds on the server's disk, from its `restart_lsn`. */
  readonly retainedBytes: number
}

/** The server's WAL position and how far the slot is behind it, for the lag metrics. One cheap query. */
export const walPosition = (
  session: Session,
  slot: string
): Effect.Effect<WalPosition, PostgresConfigError | PostgresUnavailable | PostgresProtocolError> =>
  Effect.gen(function* () {
    yield* validateSlotName(slot)
    const server = session.server
    const rows = yield* run(
      session,
      `SELECT pg_current_wal_lsn()::text AS current, s.slot_name AS slot,
              (pg_current_wal_lsn() - s.confirmed_flush_lsn)::text AS unconfirmed,
              (pg_current_wal_lsn() - s.restart_lsn)::text AS retained
         FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`,
      [slot]
    )
    const row = rows[0] ?? {}
    const current = Pgoutput.parseLsn(row.current ?? "")
    if (current === undefined) {
      return yield* new PostgresProtocolError({ server, reason: `pg_current_wal_lsn() answered ${row.current}` })
    }
    if (row.slot === null || row.slot === undefined) {
      return yield* slotError(
        server,
        `replication slot ${slot} no longer exists (dropped while the source ran): changes made since are lost to it`,
        "start again with a snapshot (drop this pipeline's checkpoint); the slot is created again at start"
      )
    }
    if (
      row.retained === null ||
      row.retained === undefined ||
      row.unconfirmed === null ||
      row.unconfirmed === undefined
    ) {
      return yield* lostError(server, slot)
    }
    return { current, lagBytes: Number(row.unconfirmed), retainedBytes: Number(row.retained) }
  })
