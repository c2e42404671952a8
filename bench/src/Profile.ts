/** CPU profiles of a timed section, taken in-process with the inspector and written as a `.cpuprofile`. */
import * as Fs from "node:fs/promises"
import * as Path from "node:path"
import { Session } from "node:inspector/promises"
import type { Profile } from "./ProfileSummary.ts"

/** Runs `f` under the V8 sampling profiler (a sample every `intervalUs` µs) and writes the profile to `path`. */
export const around = async <A>(
  path: string,
  f: () => Promise<A>,
  intervalUs = 250
): Promise<{ readonly value: A; readonly profile: Profile }> => {
  const session = new Session()
  session.connect()
  try {
    await session.post("Profiler.enable")
    await session.post("Profiler.setSamplingInterval", { interval: intervalUs })
    await session.post("Profiler.start")
    let value: A
    let profile: Profile | undefined
    try {
      value = await f()
    } finally {
      profile = (await session.post("Profiler.stop")).profile as unknown as Profile
      await Fs.mkdir(Path.dirname(path), { recursive: true })
      await Fs.writeFile(path, JSON.stringify(profile))
    }
    return { value, profile }
  } finally {
    session.disconnect()
  }
}
