/**
 * Small, fast, deterministic integer hashing for the synthetic source: every "random" choice is a pure function of
 * the seed and a few integers, so any event can be rebuilt from its sequence number alone.
 */

/** The murmur3 32-bit finalizer: a bijection on 32-bit integers with good avalanche. */
const fmix = (h: number): number => {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

const TWO_POW_32 = 4294967296

/**
 * An unsigned 32-bit hash of (seed, salt, x, y). `x` may be any safe integer (sequence numbers exceed 32 bits on a
 * long enough run), so both of its halves are mixed in.
 */
export const hash = (seed: number, salt: number, x: number, y = 0): number => {
  let h = fmix((seed ^ Math.imul(salt, 0x9e3779b1)) >>> 0)
  h = fmix((h ^ (x >>> 0)) >>> 0)
  h = fmix((h ^ Math.floor(x / TWO_POW_32) ^ Math.imul(y, 0x27d4eb2f)) >>> 0)
  return h
}

/** A hash reduced to [0, n). */
export const pick = (n: number, seed: number, salt: number, x: number, y = 0): number => hash(seed, salt, x, y) % n

/** A 32-bit hash of a string (FNV-1a), for turning names into salts. */
export const hashString = (s: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}
