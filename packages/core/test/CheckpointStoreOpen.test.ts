/**
 * `CheckpointStore.layerFile` proves it can write when it is built, so a pipeline fails before writing anything
 * rather than at its first checkpoint. (The read-only directory case needs an unprivileged user, which root is not:
 * packages/cli/test/checkpoint-open.test.ts runs it as a child process.)
 */
import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as NodePath from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Option } from "effect"
import * as CheckpointStore from "../src/CheckpointStore.ts"
import * as Position from "../src/Position.ts"

const tempDir = Effect.acquireRelease(
  Effect.promise(() => Fs.mkdtemp(NodePath.join(Os.tmpdir(), "redflow-open-"))),
  (dir) => Effect.promise(() => Fs.rm(dir, { recursive: true, force: true }))
)

describe("CheckpointStore.layerFile checks it can write", () => {
  it.effect("a path under a regular file fails the layer with CheckpointError open, naming the path and errno", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const file = NodePath.join(dir, "not-a-directory")
      yield* Effect.promise(() => Fs.writeFile(file, "x"))
      const path = NodePath.join(file, "checkpoints.json")
      const exit = yield* CheckpointStore.CheckpointStore.use((s) => s.load("p")).pipe(
        Effect.provide(CheckpointStore.layerFile(path)),
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
      const failure = error !== undefined && error._tag === "Fail" ? error.error : undefined
      assert.instanceOf(failure, CheckpointStore.CheckpointError)
      assert.strictEqual(failure!.operation, "open")
      assert.strictEqual(failure!.path, path)
      assert.match(
        failure!.message,
        new RegExp(`^cannot write checkpoints to ${path}: a part of ${file} is not a directory \\((ENOTDIR|EEXIST): `)
      )
    })
  )

  it.effect("a writable path: the layer builds, creates the directory, leaves no probe file, commits work", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const nested = NodePath.join(dir, "a", "b")
      const path = NodePath.join(nested, "checkpoints.json")
      const store = yield* CheckpointStore.makeFile(path)
      assert.deepStrictEqual(yield* Effect.promise(() => Fs.readdir(nested)), [])
      assert.deepStrictEqual(yield* store.load("p"), Option.none())
      yield* store.commit("p", Position.fromSequence(7))
      assert.deepStrictEqual(yield* Effect.promise(() => Fs.readdir(nested)), ["checkpoints.json"])
      assert.deepStrictEqual(yield* store.load("p"), Option.some(Position.fromSequence(7)))
    })
  )
})
