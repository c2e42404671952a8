#!/usr/bin/env node
/** The `redflow` executable: `pnpm redflow …` from the repository root. */
import { main } from "./Cli.ts"

main(process.argv.slice(2))
