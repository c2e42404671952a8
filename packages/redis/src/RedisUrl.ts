/**
 * Parsing of Redflow's connection URLs, before any connection is made:
 *
 * - `redis://[user[:password]@]host[:port][/db]`
 * - `rediss://…` the same over TLS
 * - `redis+sentinel://[user[:password]@]h1:p1,h2:p2/mastername[/db]`
 * - `redis+cluster://[user[:password]@]h1:p1,h2:p2`
 *
 * A malformed URL is a `ConfigError` (component `RedisConnection`, path `["url"]`) that says what is wrong and shows
 * the expected form. The password is kept `Redacted` and never appears in a message.
 *
 * @since 0.1.0
 */
import * as Redacted from "effect/Redacted"
import { ConfigError, make as configError } from "@redflow/core/ConfigError"

/**
 * One server address of a URL.
 *
 * @since 0.1.0
 * @category models
 */
export interface HostPort {
  readonly host: string
  readonly port: number
}

/**
 * A connection URL, parsed: the topology, TLS, the servers, the credentials and the database.
 *
 * @since 0.1.0
 * @category models
 */
export interface ParsedUrl {
  readonly kind: "standalone" | "sentinel" | "cluster"
  readonly tls: boolean
  readonly hosts: ReadonlyArray<HostPort>
  readonly username?: string
  readonly password?: Redacted.Redacted<string>
  readonly db: number
  /** Sentinel only: the monitored master's name. */
  readonly masterName?: string
}

const FORMS =
  "expected redis://[user[:password]@]host[:port][/db], rediss://…, " +
  "redis+sentinel://[user:password@]host:port[,host:port…]/mastername[/db] or redis+cluster://host:port[,host:port…]"

const fail = (what: string) => configError("RedisConnection", ["url"], `Invalid Redis URL: ${what} (${FORMS})`)

const parseHostPort = (text: string, defaultPort: number): HostPort | ConfigError => {
  // [ipv6]:port, host:port or host
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+))(?::(\d+))?$/.exec(text)
  if (!m) return fail(`cannot read host "${text}"`)
  const host = m[1] ?? m[2]!
  const port = m[3] === undefined ? defaultPort : Number(m[3])
  if (!Number.isInteger(port) || port < 1 || port > 65535) return fail(`port ${m[3]} of "${text}" is not 1-65535`)
  return { host, port }
}

/**
 * Parses a URL, returning the parsed form or the `ConfigError` (component `RedisConnection`, path `["url"]`) saying
 * what is wrong.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (input: string | Redacted.Redacted<string>): ParsedUrl | ConfigError => {
  const url = (Redacted.isRedacted(input) ? Redacted.value(input) : input).trim()
  if (url === "") return fail("the URL is empty")
  const scheme = /^([a-z+]+):\/\/(.*)$/i.exec(url)
  if (!scheme) return fail("missing scheme")
  const protocol = scheme[1]!.toLowerCase()
  const kind =
    protocol === "redis" || protocol === "rediss"
      ? "standalone"
      : protocol === "redis+sentinel" || protocol === "rediss+sentinel"
        ? "sentinel"
        : protocol === "redis+cluster" || protocol === "rediss+cluster"
          ? "cluster"
          : undefined
  if (kind === undefined) return fail(`unknown scheme "${protocol}://"`)
  const tls = protocol.startsWith("rediss")
  let rest = scheme[2]!
  const query = rest.indexOf("?")
  if (query >= 0) rest = rest.slice(0, query)

  let username: string | undefined
  let password: Redacted.Redacted<string> | undefined
  const at = rest.lastIndexOf("@")
  if (at >= 0) {
    const auth = rest.slice(0, at)
    rest = rest.slice(at + 1)
    const colon = auth.indexOf(":")
    try {
      const user = decodeURIComponent(colon >= 0 ? auth.slice(0, colon) : auth)
      if (colon >= 0) password = Redacted.make(decodeURIComponent(auth.slice(colon + 1)))
      if (user !== "") username = user
      else if (colon < 0) return fail("an empty user before @")
    } catch {
      return fail("the user or password is not valid percent-encoding")
    }
  }

  const slash = rest.indexOf("/")
  const hostPart = slash >= 0 ? rest.slice(0, slash) : rest
  const path =
    slash >= 0
      ? rest
          .slice(slash + 1)
          .split("/")
          .filter((s) => s !== "")
      : []
  if (hostPart === "") return fail("no host")
  const defaultPort = kind === "sentinel" ? 26379 : 6379
  const hosts: Array<HostPort> = []
  for (const h of hostPart.split(",")) {
    const parsed = parseHostPort(h, defaultPort)
    if (parsed instanceof ConfigError) return parsed
    hosts.push(parsed)
  }
  if (kind === "standalone" && hosts.length > 1) return fail("several hosts need redis+sentinel:// or redis+cluster://")

  let masterName: string | undefined
  let dbText: string | undefined
  if (kind === "sentinel") {
    masterName = path[0]
    if (masterName === undefined) return fail("a sentinel URL needs the master name as its path")
    dbText = path[1]
    if (path.length > 2) return fail(`unexpected path "/${path.join("/")}"`)
  } else {
    dbText = path[0]
    if (path.length > 1) return fail(`unexpected path "/${path.join("/")}"`)
  }
  let db = 0
  if (dbText !== undefined) {
    if (kind === "cluster") return fail("a cluster has only database 0")
    if (!/^\d+$/.test(dbText)) return fail(`database "${dbText}" is not a number`)
    db = Number(dbText)
  }
  return {
    kind,
    tls,
    hosts,
    db,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(masterName !== undefined ? { masterName } : {})
  }
}

/**
 * The URL without its password, for logs and error messages.
 *
 * @since 0.1.0
 * @category formatting
 */
export const describe = (url: ParsedUrl): string => {
  const scheme = (url.tls ? "rediss" : "redis") + (url.kind === "standalone" ? "" : `+${url.kind}`)
  const auth =
    url.username !== undefined ? `${url.username}${url.password ? ":***" : ""}@` : url.password ? ":***@" : ""
  const hosts = url.hosts.map((h) => (h.host.includes(":") ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`))
  const path = url.kind === "sentinel" ? `/${url.masterName}` : url.db !== 0 ? `/${url.db}` : ""
  return `${scheme}://${auth}${hosts.join(",")}${path}`
}
