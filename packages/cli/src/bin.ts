#!/usr/bin/env node
/**
 * The `redflow` executable: `pnpm redflow …` in the workspace; published, `dist/bin.js` is this module bundled with
 * everything it imports (`scripts/bundle.ts`), so a start reads a few dozen files instead of about 350.
 *
 * Node's compile cache is on before the command's modules load: their compiled code is kept on disk (under the
 * system's temp directory, or `NODE_COMPILE_CACHE`; `NODE_DISABLE_COMPILE_CACHE=1` turns it off), so every start
 * after the first skips compiling them. A cache that cannot be written is skipped by Node. `redflow produce --events
 * 1`, compiled package: 617 ms → 521 ms with the cache, 593 ms → 307 ms with the bundle (medians of 15 alternating
 * runs, bench/RESULTS.md "Command line start-up").
 */
import * as Module from "node:module"

Module.enableCompileCache?.()
const { main } = await import("./Cli.ts")
main(process.argv.slice(2))
