#!/usr/bin/env node
/**
 * The `redflow` executable: the package's bin (`dist/bin.js` once published), `pnpm redflow …` in the workspace.
 *
 * Node's compile cache is on before the command's modules load: their compiled code is kept on disk (under the
 * system's temp directory, or `NODE_COMPILE_CACHE`; `NODE_DISABLE_COMPILE_CACHE=1` turns it off), so every start
 * after the first skips compiling them. `redflow produce --events 1`, compiled package: 617 ms → 521 ms (median of
 * 15 alternating runs, bench/RESULTS.md "Command line start-up"). A cache that cannot be written is skipped by Node.
 */
import * as Module from "node:module"

Module.enableCompileCache?.()
const { main } = await import("./Cli.ts")
main(process.argv.slice(2))
