import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "test/**/*.test.ts", "examples/**/*.test.ts"],
    // Bounds for a hung test, not speed claims (those are in bench/): tests that spawn processes share two cores
    // with each other and with other work, and a CLI process takes seconds to start on a loaded machine.
    testTimeout: 300_000,
    hookTimeout: 120_000,
    // Fault tests spawn redis-server processes; two cores do not reward more parallelism.
    maxWorkers: 2,
    fileParallelism: true,
    // Sink warnings during fault tests are expected; show a test's output only when it fails.
    silent: "passed-only"
  }
})
