#!/usr/bin/env node
/** The `redflow` executable: the package's bin (`dist/bin.js` once published), `pnpm redflow …` in the workspace. */
import { main } from "./Cli.ts"

main(process.argv.slice(2))
