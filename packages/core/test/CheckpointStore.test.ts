import * as Fs from "node:fs/promises"
import * as Os from "node:os"
import * as NodePath from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as CheckpointStore from "../src/CheckpointStore.ts"
import * as Position from "../src/Position.ts"

const p = Position.fromSequence

/** A fresh directory, removed when the test's scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.promise(() => Fs.mkdtemp(NodePath.join(Os.tmpdir(), "redflow-checkpoints-"))),
  (dir) => Effect.promise(() => Fs.rm(dir, { recursive: true, force: true }))
)

const withStore = <A, E>(path: string, f: (store: CheckpointStore.CheckpointStore["Service"]) => Effect.Effect<A, E>) =>
  CheckpointStore.CheckpointStore.use(f).pipe(Effect.provide(CheckpointStore.layerFile(path)))

describe("CheckpointStore", () => {
  describe("layerMemory", () => {
    it.effect("loads none, then what was committed, and exposes its contents", () =>
      Effect.gen(function* () {
        const store = yield* CheckpointStore.CheckpointStore
        const memory = yield* CheckpointStore.MemoryCheckpoints
        assert.deepStrictEqual(yield* store.load("a"), Option.none())
        yield* store.commit("a", p(10))
        yield* store.commit("b", p(3))
        assert.deepStrictEqual(yield* store.load("a"), Option.some(p(10)))
        // commit stores what it is given, even backwards.
        yield* store.commit("a", p(7))
        assert.deepStrictEqual(yield* store.load("a"), Option.some(p(7)))
        assert.deepStrictEqual(
          yield* memory.contents,
          new Map([
            ["a", p(7)],
            ["b", p(3)]
          ])
        )
      }).pipe(Effect.provide(CheckpointStore.layerMemory))
    )

    it.effect("layerMemoryFrom starts from the given checkpoints, and each layer has its own map", () =>
      Effect.gen(function* () {
        const store = yield* CheckpointStore.CheckpointStore
        assert.deepStrictEqual(yield* store.load("x"), Option.some(p(1)))
        const other = yield* CheckpointStore.CheckpointStore.useSync((s) => s).pipe(
          Effect.provide(CheckpointStore.layerMemory)
        )
        assert.deepStrictEqual(yield* other.load("x"), Option.none())
      }).pipe(Effect.provide(CheckpointStore.layerMemoryFrom([["x", p(1)]])))
    )
  })

  describe("layerFile", () => {
    it.effect("a missing file means no checkpoint", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = NodePath.join(dir, "checkpoints.json")
        assert.deepStrictEqual(yield* withStore(path, (s) => s.load("pipeline")), Option.none())
      })
    )

    it.effect("round-trips, and a new layer instance reads what another committed", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = NodePath.join(dir, "nested", "deeper", "checkpoints.json")
        yield* withStore(path, (s) =>
          Effect.gen(function* () {
            yield* s.commit("orders", p(41))
            yield* s.commit("payments", p(7))
            yield* s.commit("orders", p(42))
            assert.deepStrictEqual(yield* s.load("orders"), Option.some(p(42)))
          })
        )
        const reread = yield* withStore(path, (s) => Effect.all([s.load("orders"), s.load("payments"), s.load("none")]))
        assert.deepStrictEqual(reread, [Option.some(p(42)), Option.some(p(7)), Option.none()])
        const onDisk = JSON.parse(yield* Effect.promise(() => Fs.readFile(path, "utf8")))
        assert.deepStrictEqual(onDisk, { version: 1, checkpoints: { orders: p(42), payments: p(7) } })
        // Keys that happen to be Object.prototype members are just keys.
        assert.deepStrictEqual(yield* withStore(path, (s) => s.load("constructor")), Option.none())
      })
    )

    it.effect("stores sharing a file keep each other's keys", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = NodePath.join(dir, "checkpoints.json")
        const layer = CheckpointStore.layerFile(path)
        const a = yield* CheckpointStore.CheckpointStore.useSync((s) => s).pipe(Effect.provide(layer))
        const b = yield* CheckpointStore.CheckpointStore.useSync((s) => s).pipe(
          Effect.provide(CheckpointStore.layerFile(path))
        )
        yield* Effect.all(
          Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).commit(`k${i}`, p(i))),
          { concurrency: 1 }
        )
        yield* Effect.all(
          Array.from({ length: 10 }, (_, i) => a.commit(`c${i}`, p(i))),
          { concurrency: "unbounded" }
        )
        for (let i = 0; i < 20; i++) assert.deepStrictEqual(yield* a.load(`k${i}`), Option.some(p(i)))
        for (let i = 0; i < 10; i++) assert.deepStrictEqual(yield* b.load(`c${i}`), Option.some(p(i)))
      })
    )

    it.effect("leaves no temporary files behind", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = NodePath.join(dir, "checkpoints.json")
        yield* withStore(path, (s) =>
          Effect.all(
            Array.from({ length: 25 }, (_, i) => s.commit("k", p(i))),
            { concurrency: "unbounded", discard: true }
          )
        )
        assert.deepStrictEqual(yield* Effect.promise(() => Fs.readdir(dir)), ["checkpoints.json"])
      })
    )

    it.effect("a failed commit leaves the old file and no temporary file", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = NodePath.join(dir, "checkpoints.json")
        yield* withStore(path, (s) => s.commit("k", p(1)))
        // A directory where the rename would land makes the rename fail after the temp file was written.
        const blocked = NodePath.join(dir, "blocked.json")
        yield* Effect.promise(() => Fs.mkdir(NodePath.join(blocked, "child"), { recursive: true }))
        const error = yield* Effect.flip(withStore(blocked, (s) => s.commit("k", p(2))))
        assert.strictEqual(error._tag, "CheckpointError")
        assert.strictEqual(error.operation, "commit")
        assert.include(error.message, blocked)
        assert.deepStrictEqual((yield* Effect.promise(() => Fs.readdir(dir))).sort(), [
          "blocked.json",
          "checkpoints.json"
        ])
      })
    )

    it.effect("a corrupt file is a CheckpointError naming the path", () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const path = NodePath.join(dir, "checkpoints.json")
        yield* Effect.promise(() => Fs.writeFile(path, `{"version":1,"checkpoints":{"a":"00`))
        const load = yield* Effect.flip(withStore(path, (s) => s.load("a")))
        assert.strictEqual(load._tag, "CheckpointError")
        assert.strictEqual(load.path, path)
        assert.strictEqual(load.operation, "load")
        assert.include(load.message, `cannot load checkpoint "a" in ${path}: the file is corrupt (not JSON`)
        // A commit must not paper over a corrupt file (it would drop every other key).
        const commit = yield* Effect.flip(withStore(path, (s) => s.commit("a", p(1))))
        assert.include(commit.message, `cannot commit checkpoint "a" in ${path}: the file is corrupt`)

        yield* Effect.promise(() => Fs.writeFile(path, `{"version":1,"checkpoints":{"a":"NOT-HEX"}}`))
        const shape = yield* Effect.flip(withStore(path, (s) => s.load("a")))
        assert.include(shape.message, "not a checkpoint file")
        assert.include(shape.message, `["checkpoints"]["a"]`)
      })
    )
  })
})
