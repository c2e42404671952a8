/**
 * Headless Chromium for the examples' pages (live-notifications, dashboard): their browser tests and the figures the
 * examples print. Debian's `chromium` package, driven by playwright-core pointed at its binary: no browser download.
 * `CHROMIUM_PATH` names another binary.
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { Effect, Schema } from "effect"
import type * as Scope from "effect/Scope"
import { type Browser, chromium } from "playwright-core"

/** The Chromium binary: `CHROMIUM_PATH`, else Debian's `/usr/bin/chromium`. */
export const chromiumPath = (): string => process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"

/** No Chromium binary where one is looked for. */
export class ChromiumNotFound extends Schema.TaggedError<ChromiumNotFound>()("ChromiumNotFound", {
  path: Schema.String
}) {
  override get message(): string {
    return (
      `no Chromium at ${this.path}: install Debian's chromium package (apt-get install chromium), ` +
      "or set CHROMIUM_PATH to a Chromium binary"
    )
  }
}

/** Chromium failed at something the example asked of it (launching, loading a page, a screenshot). */
export class BrowserError extends Schema.TaggedError<BrowserError>()("BrowserError", {
  action: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Chromium (${chromiumPath()}) failed ${this.action}: ${this.reason}`
  }
}

/** A call into playwright as an Effect, its failure a `BrowserError` naming `action`. */
export const attempt = <A>(action: string, run: () => Promise<A>): Effect.Effect<A, BrowserError> =>
  Effect.tryPromise({
    try: run,
    catch: (e) => new BrowserError({ action, reason: e instanceof Error ? e.message.split("\n")[0]! : String(e) })
  })

/** A headless Chromium for the life of the scope. */
export const launch: Effect.Effect<Browser, ChromiumNotFound | BrowserError, Scope.Scope> = Effect.gen(function* () {
  const path = chromiumPath()
  if (!Fs.existsSync(path)) return yield* new ChromiumNotFound({ path })
  return yield* Effect.acquireRelease(
    attempt("to launch", () => chromium.launch({ executablePath: path })),
    (browser) => Effect.promise(() => browser.close().catch(() => undefined))
  )
})

/**
 * Where a screenshot goes: `docs/images/<name>.png` of the repository when `WRITE_SCREENSHOTS=1` (to refresh the
 * README's pictures), else a temporary directory, so a test run leaves the clone as it was.
 */
export const screenshotPath = (name: string): string => {
  const dir =
    process.env.WRITE_SCREENSHOTS === "1"
      ? Path.join(import.meta.dirname, "..", "..", "docs", "images")
      : Path.join(Os.tmpdir(), "redflow-screenshots")
  Fs.mkdirSync(dir, { recursive: true })
  return Path.join(dir, `${name}.png`)
}
