/**
 * Reading this process's metric values back, for progress lines and summaries (the same numbers `/metrics` shows).
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"

/** The sum of a counter's or gauge's series whose attributes include `attributes`. */
export const sum = (id: string, attributes: Readonly<Record<string, string>>): Effect.Effect<number> =>
  Effect.map(Metric.snapshot, (snapshot) => {
    let total = 0
    for (const m of snapshot) {
      if (m.id !== id) continue
      const attrs = m.attributes ?? {}
      if (!Object.entries(attributes).every(([k, v]) => attrs[k] === v)) continue
      if (m.type === "Counter") total += Number(m.state.count)
      else if (m.type === "Gauge") total += Number(m.state.value)
    }
    return total
  })
