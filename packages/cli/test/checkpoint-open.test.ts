/**
 * A checkpoint path that cannot be written is found before anything is written: `redflow produce --checkpoint` in a
 * read-only directory, run as an unprivileged user (root ignores permissions, so as root the child runs as
 * `nobody`), exits 1 with a message naming the path, the errno and the fix, and the stream stays empty. Before the
 * check, the first batch landed, then the checkpoint commit failed with EACCES, and every retry added the same events
 * again.
 */
import { spawn } from "node:child_process"
import { chmodSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { BIN, unique, withClient } from "./support.ts"

let server: RedisTestServer.SpawnedServer
let dir: string

beforeAll(async () => {
  server = await RedisTestServer.spawnRedisServer()
  dir = mkdtempSync(join(tmpdir(), "redflow-ro-"))
  chmodSync(dir, 0o555)
})

afterAll(async () => {
  await server?.stop()
  if (dir) rmSync(dir, { recursive: true, force: true })
})

/** `nobody` when this process is root, else this (already unprivileged) user. */
const unprivileged = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {}

/** Runs the CLI as an unprivileged user; resolves with its exit code and output. */
const runUnprivileged = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const { REDIS_URL: _ignored, ...env } = process.env
    const child = spawn(process.execPath, [BIN, ...args], {
      ...unprivileged,
      cwd: tmpdir(),
      env: { ...env, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d))
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`redflow ${args.join(" ")} did not finish in 120 s\n${stderr}`))
    }, 120_000)
    child.on("exit", (code) => {
      clearTimeout(timer)
      setImmediate(() => resolve({ code, stdout, stderr }))
    })
  })

describe("redflow produce --checkpoint in a read-only directory (as an unprivileged user)", () => {
  it("exits 1 before writing: the message names the path, EACCES and the fix; XLEN 0", async () => {
    const stream = unique("ro-checkpoint")
    const checkpoint = join(dir, "produce.ckpt")
    const result = await runUnprivileged([
      "produce",
      "--redis",
      server.url,
      "--stream",
      stream,
      "--events",
      "2000",
      "--checkpoint",
      checkpoint
    ])
    expect(result.code, result.stderr).toBe(1)
    // Nothing was written: not the stream, not the dead-letter stream.
    expect(await withClient(server.url, (c) => c.xlen(stream))).toBe(0)
    expect(await withClient(server.url, (c) => c.xlen("redflow.dead-letter"))).toBe(0)
    const lines = result.stderr.trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(
      new RegExp(
        `^redflow: error: CheckpointError: cannot write checkpoints to ${checkpoint.replaceAll(".", "\\.")}: ` +
          `the directory ${dir.replaceAll(".", "\\.")} does not let this user \\(uid \\d+\\) create files \\(EACCES: .*\\); ` +
          "make it writable for this user, or choose a checkpoint path in a writable directory$"
      )
    )
    expect(readdirSync(dir)).toEqual([])
  })
})
