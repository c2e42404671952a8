import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "test/**/*.test.ts", "examples/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Fault tests spawn redis-server processes; two cores do not reward more parallelism.
    maxWorkers: 2,
    fileParallelism: true,
    // Sink warnings during fault tests are expected; show a test's output only when it fails.
    silent: "passed-only"
  }
})
