/**
 * Checkpoints: the last position a pipeline has delivered, per key, so a restart resumes after it.
 *
 * `commit` stores what it is given, even a position before the stored one: the caller owns the ordering (a sink
 * commits only positions every stream acknowledged, in order), and an operator may rewind a pipeline on purpose to
 * replay. Use {@link Position.max} before committing where a backwards move must be impossible.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs/promises"
import * as NodePath from "node:path"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Ref from "effect/Ref"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Semaphore from "effect/Semaphore"
import * as Position from "./Position.ts"

/**
 * A checkpoint that could not be read or written. `open` is the check a store makes when it is built, that it will
 * be able to write (its `key` is then the store's, not a checkpoint's): found before a pipeline writes anything.
 *
 * @since 0.1.0
 * @category errors
 */
export class CheckpointError extends Schema.TaggedError<CheckpointError>()("CheckpointError", {
  operation: Schema.Literals(["open", "load", "commit"]),
  key: Schema.String,
  /** The checkpoint file, for file-backed stores. */
  path: Schema.optionalKey(Schema.String),
  reason: Schema.String,
  cause: Schema.optionalKey(Schema.Defect())
}) {
  override get message(): string {
    if (this.operation === "open") return `cannot write checkpoints to ${this.path ?? this.key}: ${this.reason}`
    const where = this.path === undefined ? "" : ` in ${this.path}`
    return `cannot ${this.operation} checkpoint ${JSON.stringify(this.key)}${where}: ${this.reason}`
  }
}

/**
 * Stores checkpoints by key.
 *
 * @example
 * ```ts
 * const store = yield* CheckpointStore.CheckpointStore
 * const from = yield* store.load("orders-pipeline") // Option<Position>
 * yield* store.commit("orders-pipeline", lastDelivered)
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class CheckpointStore extends Context.Service<
  CheckpointStore,
  {
    /** The stored position of a key, `Option.none()` when there is none. */
    load(key: string): Effect.Effect<Option.Option<Position.Position>, CheckpointError>
    /** Stores a key's position, replacing the previous one (forwards or backwards). Durable when it succeeds. */
    commit(key: string, position: Position.Position): Effect.Effect<void, CheckpointError>
  }
>()("@redflow/core/CheckpointStore") {}

/**
 * What the in-memory store holds, for tests and diagnostics.
 *
 * @since 0.1.0
 * @category services
 */
export class MemoryCheckpoints extends Context.Service<
  MemoryCheckpoints,
  {
    readonly contents: Effect.Effect<ReadonlyMap<string, Position.Position>>
  }
>()("@redflow/core/CheckpointStore/MemoryCheckpoints") {}

/**
 * An in-memory store over a `Ref`, with its contents exposed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (
  initial: Iterable<readonly [string, Position.Position]> = []
): Effect.Effect<{ readonly store: CheckpointStore["Service"]; readonly contents: MemoryCheckpoints["Service"] }> =>
  Effect.map(Ref.make<ReadonlyMap<string, Position.Position>>(new Map(initial)), (ref) => ({
    store: CheckpointStore.of({
      load: (key) => Effect.map(Ref.get(ref), (map) => Option.fromNullishOr(map.get(key))),
      commit: (key, position) => Ref.update(ref, (map) => new Map(map).set(key, position))
    }),
    contents: MemoryCheckpoints.of({ contents: Ref.get(ref) })
  }))

/**
 * An in-memory store, starting from `initial`; also provides {@link MemoryCheckpoints}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemoryFrom = (
  initial: Iterable<readonly [string, Position.Position]>
): Layer.Layer<CheckpointStore | MemoryCheckpoints> =>
  Layer.effectContext(
    Effect.map(makeMemory(initial), ({ contents, store }) =>
      Context.make(CheckpointStore, store).pipe(Context.add(MemoryCheckpoints, contents))
    )
  )

/**
 * An empty in-memory store; also provides {@link MemoryCheckpoints}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<CheckpointStore | MemoryCheckpoints> = layerMemoryFrom([])

/**
 * The checkpoint file's content.
 *
 * @since 0.1.0
 * @category models
 */
export const FileContent = Schema.Struct({
  version: Schema.Literal(1),
  checkpoints: Schema.Record(Schema.String, Position.Position)
})

/**
 * The checkpoint file's content; see {@link FileContent}.
 *
 * @since 0.1.0
 * @category models
 */
export type FileContent = typeof FileContent.Type

const decodeFileContent = Schema.decodeUnknownResult(FileContent)

const describe = (e: unknown): string => (Predicate.isError(e) ? e.message : String(e))

const isErrno = (e: unknown, code: string): boolean =>
  Predicate.isError(e) && (e as NodeJS.ErrnoException).code === code

/**
 * A store in one JSON file holding every key.
 *
 * Each commit writes the whole file to a temporary file in the same directory, fsyncs it, renames it over the
 * target and fsyncs the directory, so a crash leaves either the old or the new file, never a torn one. A missing
 * file means no checkpoints; a file that is not valid checkpoint JSON is a {@link CheckpointError} naming the path.
 * Commits to one file are serialized across every store of the process on that path, and start from the content
 * last written, so stores sharing a file in one process keep each other's keys; separate processes should not share
 * a file (the file is read once, at the first commit).
 *
 * Making the store proves that commits can be written: it creates the directory if needed, then creates, fsyncs
 * and removes a temporary file in it, and opens the directory for its fsync. A path that cannot be written (a
 * read-only directory, a read-only file system, a full disk) fails here with a {@link CheckpointError} (`operation:
 * "open"`) naming the path, the errno and the fix, before a pipeline has written anything it would then replay.
 *
 * This uses `node:fs/promises` directly rather than Effect's `FileSystem`: the layer then needs no platform layer,
 * and the directory fsync (opening a directory read-only and fsyncing its descriptor) is plain POSIX here.
 *
 * @example
 * ```ts
 * program.pipe(Effect.provide(CheckpointStore.layerFile("/var/lib/redflow/checkpoints.json")))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeFile = (path: string): Effect.Effect<CheckpointStore["Service"], CheckpointError> =>
  Effect.suspend(() => {
    const target = NodePath.resolve(path)
    const file = fileOf(target)

    const read = (operation: "load" | "commit", key: string): Effect.Effect<FileContent, CheckpointError> =>
      Effect.tryPromise({
        try: () => Fs.readFile(target, "utf8").catch((e) => (isErrno(e, "ENOENT") ? undefined : Promise.reject(e))),
        catch: (cause) =>
          new CheckpointError({ operation, key, path: target, reason: `read failed (${describe(cause)})`, cause })
      }).pipe(
        Effect.flatMap((text) => {
          if (text === undefined) return Effect.succeed<FileContent>({ version: 1, checkpoints: {} })
          let json: unknown
          try {
            json = JSON.parse(text)
          } catch (cause) {
            const reason = `the file is corrupt (not JSON: ${describe(cause)})`
            return Effect.fail(new CheckpointError({ operation, key, path: target, reason }))
          }
          const content = decodeFileContent(json, { errors: "all" })
          return Result.isSuccess(content)
            ? Effect.succeed(content.success)
            : Effect.fail(
                new CheckpointError({
                  operation,
                  key,
                  path: target,
                  reason: `the file is corrupt (not a checkpoint file: ${content.failure.message.replaceAll("\n", " ")})`
                })
              )
        })
      )

    const service = CheckpointStore.of({
      load: (key) =>
        Effect.map(read("load", key), (content) =>
          Object.hasOwn(content.checkpoints, key) ? Option.some(content.checkpoints[key]!) : Option.none()
        ),
      commit: (key, position) =>
        file.lock.withPermits(1)(
          Effect.gen(function* () {
            // The file's image is read once; every later commit of this process starts from it.
            const content = file.image ?? (yield* read("commit", key))
            const next: FileContent = { version: 1, checkpoints: { ...content.checkpoints, [key]: position } }
            yield* Effect.tryPromise({
              try: () => writeAtomically(file, `${JSON.stringify(next, null, 2)}\n`),
              catch: (cause) =>
                new CheckpointError({
                  operation: "commit",
                  key,
                  path: target,
                  reason: `write failed (${describe(cause)})`,
                  cause
                })
            })
            file.image = next
          })
        )
    })
    return Effect.as(probe(file), service)
  })

/** Why a path cannot be written, and what to do about it, by errno. */
const unwritable = (directory: string, cause: unknown): string => {
  const code = Predicate.isError(cause) ? (cause as NodeJS.ErrnoException).code : undefined
  const uid = typeof process.getuid === "function" ? ` (uid ${process.getuid()})` : ""
  const detail = `${code ?? "error"}: ${describe(cause)}`
  switch (code) {
    case "EACCES":
    case "EPERM":
      return `the directory ${directory} does not let this user${uid} create files (${detail}); make it writable for this user, or choose a checkpoint path in a writable directory`
    case "EROFS":
      return `${directory} is on a read-only file system (${detail}); choose a checkpoint path on a writable one`
    case "ENOSPC":
    case "EDQUOT":
      return `no space left for a file in ${directory} (${detail}); free some space or choose another checkpoint path`
    case "ENOTDIR":
    case "EEXIST":
      return `a part of ${directory} is not a directory (${detail}); choose a checkpoint path in a directory`
    default:
      return `a file cannot be created and synced in ${directory} (${detail})`
  }
}

/**
 * Proves that a commit can be written: the directory exists (created if needed), a file can be created, written,
 * fsynced and removed in it, and the directory can be opened for its own fsync (the handle is kept for commits).
 */
const probe = (file: CheckpointFile): Effect.Effect<void, CheckpointError> => {
  const directory = NodePath.dirname(file.target)
  return Effect.tryPromise({
    try: async () => {
      await Fs.mkdir(directory, { recursive: true })
      const temp = NodePath.join(
        directory,
        `.${NodePath.basename(file.target)}.${process.pid}.${randomBytes(6).toString("hex")}.probe`
      )
      const handle = await Fs.open(temp, "wx", 0o644)
      try {
        await handle.writeFile("redflow checkpoint probe\n")
        await handle.sync()
      } finally {
        await handle.close()
        await Fs.rm(temp, { force: true })
      }
      if (file.directory === undefined) {
        file.directory = process.platform === "win32" ? "none" : await Fs.open(directory, "r")
      }
    },
    catch: (cause) =>
      new CheckpointError({
        operation: "open",
        key: "",
        path: file.target,
        reason: unwritable(directory, cause),
        cause
      })
  })
}

/**
 * What this process knows of one checkpoint file, shared by every store on the same path: the lock that serializes
 * their commits, the file's last written content, and the directory handle kept open for its fsync. Each commit then
 * costs the fewest I/O calls the protocol allows (write + fsync the temp file, rename, fsync the directory), which
 * matters on a busy event loop, where every call waits its turn.
 */
interface CheckpointFile {
  readonly target: string
  readonly lock: Semaphore.Semaphore
  image: FileContent | undefined
  directory: Fs.FileHandle | "none" | undefined
}

const files = new Map<string, CheckpointFile>()

const fileOf = (target: string): CheckpointFile => {
  let file = files.get(target)
  if (file === undefined) {
    file = { target, lock: Semaphore.makeUnsafe(1), image: undefined, directory: undefined }
    files.set(target, file)
  }
  return file
}

const writeAtomically = async (file: CheckpointFile, text: string): Promise<void> => {
  const directory = NodePath.dirname(file.target)
  if (file.directory === undefined) {
    await Fs.mkdir(directory, { recursive: true })
    // Windows cannot open a directory and needs no directory fsync. The handle lives as long as the process.
    file.directory = process.platform === "win32" ? "none" : await Fs.open(directory, "r")
  }
  const temp = NodePath.join(
    directory,
    `.${NodePath.basename(file.target)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`
  )
  try {
    // flush: fsync before close, so the content is durable before the rename makes it the checkpoint.
    await Fs.writeFile(temp, text, { encoding: "utf8", flag: "wx", mode: 0o644, flush: true })
    await Fs.rename(temp, file.target)
  } catch (e) {
    await Fs.rm(temp, { force: true })
    throw e
  }
  // The rename is durable only once the directory entry is.
  if (file.directory !== "none") await file.directory.sync()
}

/**
 * A store in one JSON file; see {@link makeFile}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFile = (path: string): Layer.Layer<CheckpointStore, CheckpointError> =>
  Layer.effect(CheckpointStore, makeFile(path))
