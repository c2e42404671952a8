/**
 * Where the exactly-once high-water mark of a stream lives: a hash in the stream's own hash slot, so one script can
 * touch both on a cluster.
 *
 * Redis hashes only the part between the first `{` and the next `}` when that part is non-empty (the hash tag).
 * - `S` has a valid hash tag: `S:redflow:hwm` has the same tag.
 * - `S` has none: `{S}:redflow:hwm` makes the whole of `S` the tag, which hashes like `S` itself, provided `S`
 *   contains no `}` (that would end the tag early). Such names are refused rather than mis-slotted.
 */
const SUFFIX = ":redflow:hwm"

const hasHashTag = (key: string): boolean => {
  const open = key.indexOf("{")
  if (open < 0) return false
  const close = key.indexOf("}", open + 1)
  return close > open + 1
}

/** The high-water hash key for `stream`, or `undefined` when no key in the same slot can be built from the name. */
export const highWaterKey = (stream: string): string | undefined => sameSlotKey(stream, SUFFIX)

/** A key ending in `suffix` in `stream`'s hash slot, by the rules above; `undefined` when the name allows none. */
export const sameSlotKey = (stream: string, suffix: string): string | undefined => {
  if (hasHashTag(stream)) return `${stream}${suffix}`
  if (stream.includes("}")) return undefined
  return `{${stream}}${suffix}`
}

/**
 * Where the sink stores the body of an event written by reference (`largeEvents: "reference"`): the stream's slot,
 * so the write script sets it with the entry, and the event's id, so a replayed event sets the same key again.
 */
export const bodyKey = (stream: string, eventId: string): string | undefined =>
  sameSlotKey(stream, `:redflow:body:${eventId}`)
