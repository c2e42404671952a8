import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { uniquePrefix } from "../support.ts"
import { landed } from "./harness.ts"

const fixture = join(import.meta.dirname, "..", "fixtures", "produce.ts")

describe("crash after XADD, before the checkpoint (spec scenario)", () => {
  for (const guarantee of ["at-least-once", "exactly-once"] as const) {
    it.live(`${guarantee}: SIGKILL between the acknowledged write and the checkpoint, then restart`, () =>
      Effect.gen(function* () {
        const server = yield* RedisTestServer.make()
        const prefix = uniquePrefix(`crash-${guarantee}`)
        const dir = mkdtempSync(join(tmpdir(), "redflow-crash-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
        const file = join(dir, "checkpoint.json")
        const count = 6_000
        const batch = 500
        const args = [server.url, prefix, String(count), file, guarantee, String(batch)]

        // No pacing; SIGKILL at the fifth checkpoint commit.
        const first = spawnSync(process.execPath, [fixture, ...args, "0", "5"], { encoding: "utf8" })
        expect(first.signal).toBe("SIGKILL")
        expect(first.stdout).toContain("crashing before checkpoint")
        const saved = JSON.parse(readFileSync(file, "utf8")).checkpoints["crash-test"] as string
        const checkpointAtCrash = Number(BigInt(`0x${saved}`))
        const before = yield* landed(server.url, prefix, count)
        // Redis holds the fifth batch; the checkpoint stops at the fourth.
        expect(before.entries).toBeGreaterThan(checkpointAtCrash)

        const second = spawnSync(process.execPath, [fixture, ...args], { encoding: "utf8" })
        expect(second.stderr).toBe("")
        expect(second.status).toBe(0)
        const after = yield* landed(server.url, prefix, count)
        expect(after.missing).toEqual([])
        if (guarantee === "exactly-once") {
          expect(after.duplicates).toBe(0)
          expect(after.outOfOrder).toBe(0)
        } else {
          // Replayed from the checkpoint: the acknowledged-but-uncheckpointed batch appears twice, nothing more.
          expect(after.duplicates).toBe(before.entries - checkpointAtCrash)
          expect(after.duplicates).toBeGreaterThan(0)
          expect(after.duplicates).toBeLessThanOrEqual(batch)
        }
      })
    )
  }
})
