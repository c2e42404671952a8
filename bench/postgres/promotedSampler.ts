/**
 * A preload (`node --import bench/postgres/promotedSampler.ts …`) for memory.ts `--promoted`: V8's sampling heap
 * profiler keeping only allocations that outlive a young-generation collection (promoted, or allocated old), which is
 * what fills the old generation with garbage. Sampling starts at SIGUSR2 (memory.ts sends it just before the big
 * transaction) and the profile is written to `$REDFLOW_PROMOTED_PROFILE` when the process exits.
 */
import * as Fs from "node:fs"
import * as Inspector from "node:inspector"

const out = process.env.REDFLOW_PROMOTED_PROFILE
if (out !== undefined && out !== "") {
  const session = new Inspector.Session()
  session.connect()
  session.post("HeapProfiler.enable")
  let sampling = false
  process.on("SIGUSR2", () => {
    if (sampling) return
    sampling = true
    session.post("HeapProfiler.startSampling", {
      samplingInterval: 16_384,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: false
    })
  })
  process.on("exit", () => {
    if (!sampling) return
    // The in-process session answers synchronously, so the profile is written before the process goes.
    session.post("HeapProfiler.stopSampling", (error, result) => {
      if (error === null) Fs.writeFileSync(out, JSON.stringify(result.profile))
    })
  })
}
