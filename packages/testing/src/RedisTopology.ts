/**
 * Redis topologies for tests, built from `redis-server` processes on free ports: standalone, primary + replica,
 * sentinel, cluster. Each is a scoped resource: every process is stopped by pid and every temp dir removed when the
 * scope closes, even when the test failed. Each reports its addresses and pids so a test can make real faults
 * (SIGKILL the master, SIGSTOP a node, move a slot).
 *
 * The waits run on the wall clock, so these work inside `it.effect` (whose `TestClock` a process ignores).
 *
 * @example
 * ```ts
 * const { master, replica } = yield* RedisTopology.primaryReplica()
 * yield* RedisTopology.kill(master.pid)
 * ```
 *
 * @since 0.1.0
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs/promises"
import * as Path from "node:path"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import { freePort } from "./internal/FreePort.ts"
import * as Poll from "./internal/Poll.ts"
import * as RedisProcess from "./internal/RedisProcess.ts"
import * as Resp from "./internal/Resp.ts"
import { runScoped } from "./internal/Scoped.ts"
import { ProcessSignalFailed, type ServerStartFailed, TopologyError } from "./TestingError.ts"

/**
 * A host and port.
 *
 * @since 0.1.0
 * @category models
 */
export interface Address {
  readonly host: string
  readonly port: number
}

/**
 * A `redis-server` (or sentinel) process started by this module.
 *
 * @since 0.1.0
 * @category models
 */
export interface Node extends Address {
  readonly pid: number
  /** `redis://127.0.0.1:<port>` */
  readonly url: string
  /** `127.0.0.1:<port>`, the form Redis uses in MOVED/ASK replies and CLUSTER NODES. */
  readonly address: string
}

/**
 * Options every topology takes: extra `redis-server` arguments for the data nodes, the binary, and how long each
 * process may take to start and the topology to be ready.
 *
 * @since 0.1.0
 * @category options
 */
export interface ServerOptions {
  /** Extra `redis-server` arguments for every data node, e.g. `["--enable-debug-command", "local"]`. */
  readonly args?: ReadonlyArray<string> | undefined
  /** How long each process may take to answer PING. Default 10 seconds. */
  readonly startTimeout?: Duration.Input | undefined
  /** How long the topology may take to reach its ready state. Default 20 seconds. */
  readonly readyTimeout?: Duration.Input | undefined
  /** The server binary. Default `redis-server`. */
  readonly binary?: string | undefined
}

type TopologyName = TopologyError["topology"]

const toNode = (process: RedisProcess.RedisProcess): Node => ({
  host: process.host,
  port: process.port,
  pid: process.pid,
  url: `redis://${process.host}:${process.port}`,
  address: `${process.host}:${process.port}`
})

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error))

const topologyError = (topology: TopologyName, step: string, reason: string) =>
  new TopologyError({ topology, step, reason, message: `${topology}: ${step} failed: ${reason}` })

/** Sends one command; a transport failure or an error reply fails with a TopologyError naming `step`. */
const call = (topology: TopologyName, step: string, node: Address, ...args: ReadonlyArray<string | number>) =>
  Effect.tryPromise({
    try: () => Resp.command(node, args, { timeoutMs: 5_000 }),
    catch: (error) => topologyError(topology, step, `${node.host}:${node.port}: ${errorText(error)}`)
  }).pipe(
    Effect.flatMap((reply) =>
      reply instanceof Resp.ReplyError
        ? Effect.fail(topologyError(topology, step, `${node.host}:${node.port} replied ${reply.message}`))
        : Effect.succeed(reply)
    )
  )

/** Sends one command for a probe: any failure means "not yet". */
const probe = (node: Address, ...args: ReadonlyArray<string | number>) =>
  Effect.tryPromise({
    try: () => Resp.command(node, args, { timeoutMs: 1_000 }),
    catch: (error) => new Poll.NotYet(`${node.host}:${node.port}: ${errorText(error)}`)
  }).pipe(
    Effect.flatMap((reply) =>
      reply instanceof Resp.ReplyError
        ? Poll.notYet(`${node.host}:${node.port} replied ${reply.message}`)
        : Effect.succeed(reply)
    )
  )

const waitFor = <A, E, R>(
  topology: TopologyName,
  what: string,
  timeout: Duration.Input,
  check: Effect.Effect<A, E, R>
) =>
  Poll.until(check, {
    interval: "50 millis",
    timeout,
    onTimeout: (state) =>
      topologyError(
        topology,
        `waiting for ${what}`,
        `not reached within ${Poll.describe(timeout)}; last seen: ${state}`
      )
  })

const defaults = {
  readyTimeout: "20 seconds",
  masterName: "mymaster",
  sentinels: 3,
  quorum: 2,
  downAfterMs: 1_000,
  failoverTimeoutMs: 3_000,
  masters: 3,
  nodeTimeoutMs: 2_000
} as const

/**
 * For nodes that replicate (either way, after a failover). The default diskless sync waits 5 s for more replicas
 * before the first full sync; nothing else is coming here.
 */
const replicationArgs: ReadonlyArray<string> = ["--repl-diskless-sync-delay", "0"]

/** Starts one data node in a temp dir of its own. */
const startNode = (
  options: ServerOptions,
  extra: (port: number, dir: string) => ReadonlyArray<string> = () => []
): Effect.Effect<Node, ServerStartFailed, Scope.Scope> =>
  Effect.gen(function* () {
    const dir = yield* RedisProcess.tempDir("node")
    const process = yield* RedisProcess.start({
      binary: options.binary,
      args: (port) => [...RedisProcess.baseArgs(port, dir), ...extra(port, dir), ...(options.args ?? [])],
      startTimeout: options.startTimeout
    })
    return toNode(process)
  })

// ---------------------------------------------------------------------------------------------------------------
// standalone

/**
 * One `redis-server` on a free port.
 *
 * @since 0.1.0
 * @category constructors
 */
export const standalone = (options: ServerOptions = {}): Effect.Effect<Node, ServerStartFailed, Scope.Scope> =>
  startNode(options)

// ---------------------------------------------------------------------------------------------------------------
// primary + replica

/**
 * A master and its replica, as {@link primaryReplica} starts them.
 *
 * @since 0.1.0
 * @category models
 */
export interface PrimaryReplica {
  readonly master: Node
  readonly replica: Node
}

const replicationInfo = (node: Address) =>
  probe(node, "INFO", "replication").pipe(Effect.map((reply) => Resp.parseInfo(String(reply))))

const linkUp = (replica: Address) =>
  replicationInfo(replica).pipe(
    Effect.flatMap((info) =>
      info.get("master_link_status") === "up"
        ? Effect.void
        : Poll.notYet(`master_link_status:${info.get("master_link_status") ?? "?"}`)
    )
  )

/**
 * A master and one replica (`--replicaof`), ready once the replica reports `master_link_status:up`. A write to the
 * replica fails with `READONLY`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const primaryReplica = (
  options: ServerOptions = {}
): Effect.Effect<PrimaryReplica, ServerStartFailed | TopologyError, Scope.Scope> =>
  Effect.gen(function* () {
    const master = yield* startNode(options, () => replicationArgs)
    const replica = yield* startNode(options, () => [
      ...replicationArgs,
      "--replicaof",
      master.host,
      String(master.port)
    ])
    yield* waitFor(
      "primaryReplica",
      "the replication link",
      options.readyTimeout ?? defaults.readyTimeout,
      linkUp(replica)
    )
    return { master, replica }
  })

// ---------------------------------------------------------------------------------------------------------------
// sentinel

/**
 * Options of {@link sentinel}: those of every topology, plus the master's name, the number of sentinels, the
 * quorum and their timeouts.
 *
 * @since 0.1.0
 * @category options
 */
export interface SentinelOptions extends ServerOptions {
  /** Default `mymaster`. */
  readonly masterName?: string | undefined
  /** Number of sentinels. Default 3. */
  readonly sentinels?: number | undefined
  /** Default 2. */
  readonly quorum?: number | undefined
  /** `down-after-milliseconds`. Default 1000. */
  readonly downAfterMs?: number | undefined
  /** `failover-timeout`. Default 3000. */
  readonly failoverTimeoutMs?: number | undefined
}

/**
 * A master, its replica and the sentinels that watch them, as {@link sentinel} starts them, with helpers to find the
 * current master and wait for a failover.
 *
 * @since 0.1.0
 * @category models
 */
export interface Sentinel {
  readonly masterName: string
  /** The master at start. After a failover it may be dead or a replica: ask `currentMaster`. */
  readonly master: Node
  readonly replica: Node
  readonly sentinels: ReadonlyArray<Node>
  /** `redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/<masterName>` */
  readonly url: string
  /** The master address as a majority of the sentinels report it now. */
  readonly currentMaster: Effect.Effect<Address, TopologyError>
  /**
   * Waits until every sentinel reports a master other than `previous` (default: the initial master) and that node
   * answers `ROLE` as master; returns it.
   */
  readonly waitForNewMaster: (options?: {
    readonly previous?: Address | undefined
    readonly timeout?: Duration.Input | undefined
  }) => Effect.Effect<Node, TopologyError>
}

const masterAddrReply = (reply: Resp.Reply): Address | undefined =>
  Array.isArray(reply) && reply.length === 2 ? { host: String(reply[0]), port: Number(reply[1]) } : undefined

const sentinelConfig = (options: {
  readonly port: number
  readonly dir: string
  readonly masterName: string
  readonly master: Address
  readonly quorum: number
  readonly downAfterMs: number
  readonly failoverTimeoutMs: number
}) =>
  [
    `port ${options.port}`,
    "bind 127.0.0.1",
    `dir ${options.dir}`,
    "sentinel resolve-hostnames no",
    `sentinel monitor ${options.masterName} ${options.master.host} ${options.master.port} ${options.quorum}`,
    `sentinel down-after-milliseconds ${options.masterName} ${options.downAfterMs}`,
    `sentinel failover-timeout ${options.masterName} ${options.failoverTimeoutMs}`,
    `sentinel parallel-syncs ${options.masterName} 1`,
    ""
  ].join("\n")

/**
 * One master, one replica and three sentinels (`down-after-milliseconds 1000`, `failover-timeout 3000`, quorum 2),
 * each sentinel with a writable config file in its own temp dir. Ready once every sentinel sees the master, the
 * replica and the other sentinels, so a SIGKILL of `master.pid` leads to a failover (about 2 to 4 s).
 *
 * @example
 * ```ts
 * const topology = yield* RedisTopology.sentinel()
 * yield* RedisTopology.kill(topology.master.pid)
 * const promoted = yield* topology.waitForNewMaster() // topology.replica
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const sentinel = (
  options: SentinelOptions = {}
): Effect.Effect<Sentinel, ServerStartFailed | TopologyError, Scope.Scope> =>
  Effect.gen(function* () {
    const masterName = options.masterName ?? defaults.masterName
    const count = options.sentinels ?? defaults.sentinels
    const readyTimeout = options.readyTimeout ?? defaults.readyTimeout
    const master = yield* startNode(options, () => replicationArgs)
    const replica = yield* startNode(options, () => [
      ...replicationArgs,
      "--replicaof",
      master.host,
      String(master.port)
    ])
    // Sentinels learn replicas from the master's INFO, polled every 10 s: start them once the replica is attached.
    yield* waitFor("sentinel", "the replication link", readyTimeout, linkUp(replica))

    const sentinels: Array<Node> = []
    for (let i = 0; i < count; i++) {
      const dir = yield* RedisProcess.tempDir("sentinel")
      const file = Path.join(dir, "sentinel.conf")
      const process = yield* RedisProcess.start({
        binary: options.binary,
        startTimeout: options.startTimeout,
        // Sentinel rewrites its config file, so each gets a writable one that names its port.
        prepare: (port) =>
          Effect.promise(() =>
            Fs.writeFile(
              file,
              sentinelConfig({
                port,
                dir,
                masterName,
                master,
                quorum: options.quorum ?? defaults.quorum,
                downAfterMs: options.downAfterMs ?? defaults.downAfterMs,
                failoverTimeoutMs: options.failoverTimeoutMs ?? defaults.failoverTimeoutMs
              })
            )
          ),
        args: () => [file, "--sentinel"]
      })
      sentinels.push(toNode(process))
    }

    // Failover needs the quorum to agree and a leader to be elected: each sentinel must know the replica and
    // every other sentinel (they meet through hello messages on the master, every 2 s).
    const sees = (node: Node) =>
      probe(node, "SENTINEL", "MASTER", masterName).pipe(
        Effect.map(Resp.pairs),
        Effect.flatMap((fields) => {
          const state = `sentinel ${node.port}: flags=${fields.get("flags")} num-slaves=${fields.get(
            "num-slaves"
          )} num-other-sentinels=${fields.get("num-other-sentinels")}`
          return fields.get("flags") === "master" &&
            Number(fields.get("num-slaves")) >= 1 &&
            Number(fields.get("num-other-sentinels")) === count - 1
            ? Effect.void
            : Poll.notYet(state)
        })
      )
    yield* waitFor(
      "sentinel",
      "every sentinel to see the master, the replica and the other sentinels",
      readyTimeout,
      Effect.forEach(sentinels, sees, { discard: true })
    )

    const dataNodes = [master, replica]
    const reportedMasters = Effect.forEach(sentinels, (node) =>
      probe(node, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName).pipe(
        Effect.map(masterAddrReply),
        Effect.orElseSucceed(() => undefined)
      )
    )

    const currentMaster: Effect.Effect<Address, TopologyError> = reportedMasters.pipe(
      Effect.flatMap((reports) => {
        const majority = reports.find(
          (candidate) =>
            candidate !== undefined &&
            reports.filter((r) => r !== undefined && r.host === candidate.host && r.port === candidate.port).length >
              count / 2
        )
        return majority === undefined
          ? Effect.fail(
              topologyError(
                "sentinel",
                "asking the sentinels for the master",
                `no majority: ${JSON.stringify(reports)}`
              )
            )
          : Effect.succeed(majority)
      })
    )

    const waitForNewMaster: Sentinel["waitForNewMaster"] = (waitOptions = {}) => {
      const previous = waitOptions.previous ?? master
      const timeout = waitOptions.timeout ?? defaults.readyTimeout
      const promoted = reportedMasters.pipe(
        Effect.flatMap((reports): Effect.Effect<Node, TopologyError | Poll.NotYet> => {
          const first = reports[0]
          const agreed =
            first !== undefined &&
            reports.every((r) => r !== undefined && r.host === first.host && r.port === first.port)
          if (!agreed || first === undefined) return Poll.notYet(`sentinels report ${JSON.stringify(reports)}`)
          if (first.host === previous.host && first.port === previous.port) {
            return Poll.notYet(`sentinels still report ${first.host}:${first.port}`)
          }
          const node = dataNodes.find((n) => n.host === first.host && n.port === first.port)
          if (node === undefined)
            return Effect.fail(
              topologyError("sentinel", "waiting for a new master", `unknown master ${first.host}:${first.port}`)
            )
          return probe(node, "ROLE").pipe(
            Effect.flatMap((role) =>
              Array.isArray(role) && role[0] === "master"
                ? Effect.succeed(node)
                : Poll.notYet(`${node.address} ROLE ${JSON.stringify(role)}`)
            )
          )
        })
      )
      return waitFor("sentinel", "a new master", timeout, promoted)
    }

    const sentinelAddresses = sentinels.map((s) => s.address).join(",")
    return {
      masterName,
      master,
      replica,
      sentinels,
      url: `redis+sentinel://${sentinelAddresses}/${masterName}`,
      currentMaster,
      waitForNewMaster
    }
  })

// ---------------------------------------------------------------------------------------------------------------
// cluster

/**
 * Options of {@link cluster}: those of every topology, plus the number of masters, the node timeout and the
 * `redis-cli` binary.
 *
 * @since 0.1.0
 * @category options
 */
export interface ClusterOptions extends ServerOptions {
  /** Number of masters (no replicas). Default 3. */
  readonly masters?: number | undefined
  /** `cluster-node-timeout` in ms. Default 2000. */
  readonly nodeTimeoutMs?: number | undefined
  /** The `redis-cli` binary used for `--cluster create`. Default `redis-cli`. */
  readonly cliBinary?: string | undefined
}

/**
 * A cluster node: a {@link Node} with its node id and cluster bus port.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClusterNode extends Node {
  /** The node id (`CLUSTER MYID`). */
  readonly id: string
  /** The cluster bus port. */
  readonly busPort: number
}

/**
 * A slot left half-migrated: the source answers ASK for keys it no longer has.
 *
 * @since 0.1.0
 * @category models
 */
export interface SlotMigration {
  readonly slot: number
  /** The owner, in MIGRATING state. */
  readonly from: ClusterNode
  /** The target, in IMPORTING state. */
  readonly to: ClusterNode
  /** Moves `keys` (default: every key in the slot) to the target with MIGRATE; returns how many were moved. */
  readonly moveKeys: (keys?: ReadonlyArray<string>) => Effect.Effect<number, TopologyError>
  /** Moves the remaining keys and gives the slot to the target on every node. */
  readonly complete: Effect.Effect<void, TopologyError>
  /** Clears IMPORTING/MIGRATING on both nodes; keys already moved stay on the target. */
  readonly cancel: Effect.Effect<void, TopologyError>
}

/**
 * A running cluster, as {@link cluster} starts it: its nodes and URL, with helpers to find a key's slot and owner and
 * to move slots.
 *
 * @since 0.1.0
 * @category models
 */
export interface Cluster {
  readonly nodes: ReadonlyArray<ClusterNode>
  /** `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,…` */
  readonly url: string
  /** The slot of a key, as the cluster computes it (`CLUSTER KEYSLOT`). */
  readonly keySlot: (key: string) => Effect.Effect<number, TopologyError>
  /** The node that owns `slot`, as `CLUSTER NODES` of the first node reports it. */
  readonly ownerOf: (slot: number) => Effect.Effect<ClusterNode, TopologyError>
  /**
   * Moves `slot` to `to` for real: IMPORTING/MIGRATING, MIGRATE of every key in it, then `CLUSTER SETSLOT <slot>
   * NODE <id>` on every node. A client with the old slot map then gets `MOVED <slot> <to.address>`.
   */
  readonly migrateSlot: (
    slot: number,
    to: ClusterNode
  ) => Effect.Effect<{ readonly from: ClusterNode; readonly to: ClusterNode }, TopologyError>
  /** Leaves `slot` in MIGRATING (owner) / IMPORTING (`to`) state, for ASK redirects. */
  readonly beginSlotMigration: (slot: number, to: ClusterNode) => Effect.Effect<SlotMigration, TopologyError>
}

const runCli = (binary: string, args: ReadonlyArray<string>) =>
  Effect.callback<string, TopologyError>((resume) => {
    ChildProcess.execFile(binary, [...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      if (error === null) return resume(Effect.succeed(stdout))
      resume(
        Effect.fail(
          topologyError(
            "cluster",
            `${binary} ${args.join(" ")}`,
            `${error.message}\n${String(stdout).slice(-2_000)}\n${String(stderr).slice(-2_000)}`
          )
        )
      )
    })
  })

/** `CLUSTER NODES` line → owner id of each slot range it serves (importing/migrating markers skipped). */
const slotOwners = (
  nodesText: string
): ReadonlyArray<{ readonly id: string; readonly from: number; readonly to: number }> =>
  nodesText
    .split("\n")
    .filter((line) => line.trim() !== "")
    .flatMap((line) => {
      const [id = "", , , , , , , , ...slots] = line.trim().split(" ")
      return slots
        .filter((range) => !range.startsWith("["))
        .map((range) => {
          const [from = "0", to = from] = range.split("-")
          return { id, from: Number(from), to: Number(to) }
        })
    })

/**
 * Three masters (`--cluster-enabled yes --cluster-node-timeout 2000`, each with its own `nodes.conf`), joined with
 * `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`, ready once every node reports
 * `cluster_state:ok` and knows every other node.
 *
 * @example
 * ```ts
 * const cluster = yield* RedisTopology.cluster()
 * const slot = yield* cluster.keySlot("orders")
 * const owner = yield* cluster.ownerOf(slot)
 * yield* cluster.migrateSlot(slot, cluster.nodes.find((n) => n.id !== owner.id)!)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const cluster = (
  options: ClusterOptions = {}
): Effect.Effect<Cluster, ServerStartFailed | TopologyError, Scope.Scope> =>
  Effect.gen(function* () {
    const count = options.masters ?? defaults.masters
    if (count < 3) {
      return yield* Effect.fail(
        topologyError("cluster", "checking options", `a cluster needs at least 3 masters, got ${count}`)
      )
    }
    const readyTimeout = options.readyTimeout ?? defaults.readyTimeout
    const started: Array<Node & { readonly busPort: number }> = []
    for (let i = 0; i < count; i++) {
      // The bus port defaults to port + 10000, which may be taken or past 65535: take a free one too.
      const busPort = yield* Effect.promise(() => freePort())
      const node = yield* startNode(options, (_port, dir) => [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        Path.join(dir, "nodes.conf"),
        "--cluster-node-timeout",
        String(options.nodeTimeoutMs ?? defaults.nodeTimeoutMs),
        "--cluster-port",
        String(busPort)
      ])
      started.push({ ...node, busPort })
    }

    yield* runCli(options.cliBinary ?? "redis-cli", [
      "--cluster",
      "create",
      ...started.map((n) => n.address),
      "--cluster-replicas",
      "0",
      "--cluster-yes"
    ])

    const clusterOk = (node: Node) =>
      probe(node, "CLUSTER", "INFO").pipe(
        Effect.map((reply) => Resp.parseInfo(String(reply))),
        Effect.flatMap((info) =>
          info.get("cluster_state") === "ok" && Number(info.get("cluster_known_nodes")) === count
            ? Effect.void
            : Poll.notYet(
                `${node.address} cluster_state:${info.get("cluster_state")} cluster_known_nodes:${info.get(
                  "cluster_known_nodes"
                )}`
              )
        )
      )
    yield* waitFor(
      "cluster",
      "cluster_state:ok on every node",
      readyTimeout,
      Effect.forEach(started, clusterOk, { discard: true })
    )

    const nodes: ReadonlyArray<ClusterNode> = yield* Effect.forEach(started, (node) =>
      call("cluster", "CLUSTER MYID", node, "CLUSTER", "MYID").pipe(Effect.map((id) => ({ ...node, id: String(id) })))
    )
    const first = nodes[0] as ClusterNode
    const byId = (id: string, step: string) => {
      const node = nodes.find((n) => n.id === id)
      return node === undefined
        ? Effect.fail(topologyError("cluster", step, `no node with id ${id}`))
        : Effect.succeed(node)
    }

    const ownerSeenBy = (viewer: ClusterNode, slot: number, step: string) =>
      call("cluster", step, viewer, "CLUSTER", "NODES").pipe(
        Effect.flatMap((text) => {
          const owner = slotOwners(String(text)).find((r) => r.from <= slot && slot <= r.to)
          return owner === undefined
            ? Effect.fail(topologyError("cluster", step, `${viewer.address} knows no owner of slot ${slot}`))
            : byId(owner.id, step)
        })
      )

    const ownerOf = (slot: number) => ownerSeenBy(first, slot, `finding the owner of slot ${slot}`)

    const keySlot = (key: string) =>
      call("cluster", "CLUSTER KEYSLOT", first, "CLUSTER", "KEYSLOT", key).pipe(Effect.map(Number))

    const moveKeys = (slot: number, from: ClusterNode, to: ClusterNode, keys: ReadonlyArray<string>) =>
      keys.length === 0
        ? Effect.succeed(0)
        : call(
            "cluster",
            `MIGRATE of slot ${slot}`,
            from,
            "MIGRATE",
            to.host,
            to.port,
            "",
            0,
            5_000,
            "KEYS",
            ...keys
          ).pipe(Effect.as(keys.length))

    const moveAllKeys = (slot: number, from: ClusterNode, to: ClusterNode): Effect.Effect<number, TopologyError> =>
      call("cluster", `CLUSTER GETKEYSINSLOT ${slot}`, from, "CLUSTER", "GETKEYSINSLOT", slot, 100).pipe(
        Effect.map((reply) => (Array.isArray(reply) ? reply.map(String) : [])),
        Effect.flatMap((keys) =>
          keys.length === 0
            ? Effect.succeed(0)
            : moveKeys(slot, from, to, keys).pipe(
                Effect.flatMap((moved) => moveAllKeys(slot, from, to).pipe(Effect.map((rest) => moved + rest)))
              )
        )
      )

    const assignEverywhere = (slot: number, to: ClusterNode) =>
      Effect.gen(function* () {
        const step = `CLUSTER SETSLOT ${slot} NODE ${to.id}`
        // The target first, so it bumps its epoch and claims the slot before the source lets go.
        for (const node of [to, ...nodes.filter((n) => n.id !== to.id)]) {
          yield* call("cluster", step, node, "CLUSTER", "SETSLOT", slot, "NODE", to.id)
        }
        yield* waitFor(
          "cluster",
          `every node to see slot ${slot} on ${to.address}`,
          readyTimeout,
          Effect.forEach(
            nodes,
            (viewer) =>
              ownerSeenBy(viewer, slot, step).pipe(
                Effect.mapError((error) => new Poll.NotYet(error.reason)),
                Effect.flatMap((owner) =>
                  owner.id === to.id ? Effect.void : Poll.notYet(`${viewer.address} sees ${owner.address}`)
                )
              ),
            { discard: true }
          )
        )
      })

    const beginSlotMigration = (slot: number, to: ClusterNode) =>
      Effect.gen(function* () {
        const from = yield* ownerOf(slot)
        if (from.id === to.id) {
          return yield* Effect.fail(
            topologyError("cluster", `migrating slot ${slot}`, `slot ${slot} is already on ${to.address}`)
          )
        }
        yield* call("cluster", `IMPORTING slot ${slot}`, to, "CLUSTER", "SETSLOT", slot, "IMPORTING", from.id)
        yield* call("cluster", `MIGRATING slot ${slot}`, from, "CLUSTER", "SETSLOT", slot, "MIGRATING", to.id)
        const migration: SlotMigration = {
          slot,
          from,
          to,
          moveKeys: (keys) => (keys === undefined ? moveAllKeys(slot, from, to) : moveKeys(slot, from, to, keys)),
          complete: moveAllKeys(slot, from, to).pipe(Effect.andThen(assignEverywhere(slot, to))),
          cancel: Effect.forEach(
            [to, from],
            (node) => call("cluster", `CLUSTER SETSLOT ${slot} STABLE`, node, "CLUSTER", "SETSLOT", slot, "STABLE"),
            { discard: true }
          )
        }
        return migration
      })

    const migrateSlot = (slot: number, to: ClusterNode) =>
      beginSlotMigration(slot, to).pipe(
        Effect.tap((migration) => migration.complete),
        Effect.map((migration) => ({ from: migration.from, to: migration.to }))
      )

    return {
      nodes,
      url: `redis+cluster://${nodes.map((n) => n.address).join(",")}`,
      keySlot,
      ownerOf,
      migrateSlot,
      beginSlotMigration
    } satisfies Cluster
  })

// ---------------------------------------------------------------------------------------------------------------
// process faults

const signal = (pid: number, name: NodeJS.Signals) =>
  Effect.try({
    try: () => process.kill(pid, name),
    catch: (error) => {
      const code = (error as NodeJS.ErrnoException).code
      return new ProcessSignalFailed({
        pid,
        signal: name,
        reason: code ?? errorText(error),
        message: `could not send ${name} to pid ${pid}: ${code === "ESRCH" ? "no such process" : errorText(error)}`
      })
    }
  }).pipe(Effect.asVoid)

/**
 * Freezes a process with SIGSTOP: it keeps its sockets and accepts TCP connects, but answers nothing.
 *
 * @since 0.1.0
 * @category faults
 */
export const pause = (pid: number): Effect.Effect<void, ProcessSignalFailed> => signal(pid, "SIGSTOP")

/**
 * Lets a paused process run again with SIGCONT.
 *
 * @since 0.1.0
 * @category faults
 */
export const resume = (pid: number): Effect.Effect<void, ProcessSignalFailed> => signal(pid, "SIGCONT")

/**
 * Kills a process with SIGKILL; for a process this package started, waits until it has exited.
 *
 * @since 0.1.0
 * @category faults
 */
export const kill = (pid: number): Effect.Effect<void, ProcessSignalFailed> =>
  Effect.suspend(() => {
    const exited = RedisProcess.exitOf(pid)
    return signal(pid, "SIGKILL").pipe(
      Effect.andThen(exited === undefined ? Effect.void : Effect.promise(() => exited))
    )
  })

/**
 * Whether a process with this pid exists.
 *
 * @since 0.1.0
 * @category utils
 */
export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

// ---------------------------------------------------------------------------------------------------------------
// plain async forms, for benchmark scripts and non-Effect tests

type Closeable<A> = A & { readonly close: () => Promise<void> }

const started = async <A extends object, E>(acquire: Effect.Effect<A, E, Scope.Scope>): Promise<Closeable<A>> => {
  const { value, close } = await runScoped(acquire)
  return { ...value, close }
}

/**
 * {@link standalone} outside Effect; `close()` stops the process.
 *
 * @since 0.1.0
 * @category constructors
 */
export const startStandalone = (options?: ServerOptions): Promise<Closeable<Node>> => started(standalone(options))

/**
 * {@link primaryReplica} outside Effect; `close()` stops both processes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const startPrimaryReplica = (options?: ServerOptions): Promise<Closeable<PrimaryReplica>> =>
  started(primaryReplica(options))

/**
 * {@link sentinel} outside Effect; `close()` stops every process. Its Effect helpers run with `Effect.runPromise`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const startSentinel = (options?: SentinelOptions): Promise<Closeable<Sentinel>> => started(sentinel(options))

/**
 * {@link cluster} outside Effect; `close()` stops every node. Its Effect helpers run with `Effect.runPromise`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const startCluster = (options?: ClusterOptions): Promise<Closeable<Cluster>> => started(cluster(options))
