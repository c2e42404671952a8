/** A full garbage collection between timed runs, so no run pays for the garbage of the one before it. */
import * as V8 from "node:v8"
import * as Vm from "node:vm"

V8.setFlagsFromString("--expose-gc")
const gc = Vm.runInNewContext("gc") as () => void

export const collect = (): void => gc()
