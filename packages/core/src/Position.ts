/**
 * Positions order the events of one source.
 *
 * The string form is lowercase hex of a fixed width per source, so two positions of the same source compare
 * the same way as bytes, as strings in JavaScript and as strings in a Redis Lua script. Hex only, because a
 * collation (Lua's `<` uses `strcoll`) may ignore punctuation but never reorders digits and letters of equal
 * width.
 *
 * @since 0.1.0
 */
import * as Order from "effect/Order"
import * as Schema from "effect/Schema"

/**
 * Width of a position made by {@link fromSequence}: 16 hex digits hold any 64-bit sequence number.
 *
 * @since 0.1.0
 * @category constants
 */
export const SEQUENCE_WIDTH = 16

/**
 * What a position looks like: 1 to 64 lowercase hex digits.
 *
 * @since 0.1.0
 * @category constants
 */
export const PATTERN = /^[0-9a-f]{1,64}$/

/**
 * Whether a string is a well-formed position.
 *
 * @since 0.1.0
 * @category guards
 */
export const isPosition = (s: string): s is Position => PATTERN.test(s)

/**
 * A byte-comparable position string.
 *
 * @example
 * ```ts
 * Position.fromSequence(42) // "000000000000002a"
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export const Position = Schema.String.check(
  Schema.isPattern(PATTERN, { message: "a position is 1 to 64 lowercase hex digits" })
).pipe(Schema.brand("@redflow/core/Position"))

/**
 * A byte-comparable position string, as decoded by the {@link Position} schema.
 *
 * @since 0.1.0
 * @category models
 */
export type Position = typeof Position.Type

/**
 * Builds a position from a non-negative integer sequence number (the synthetic source's form).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromSequence = (sequence: number | bigint): Position => {
  const n = BigInt(sequence)
  if (n < 0n) throw new RangeError(`a position sequence must be >= 0, got ${sequence}`)
  return n.toString(16).padStart(SEQUENCE_WIDTH, "0") as Position
}

/**
 * The sequence number of a position made by {@link fromSequence}.
 *
 * @since 0.1.0
 * @category utils
 */
export const toSequence = (position: Position): bigint => BigInt(`0x${position}`)

/**
 * Compares two positions: shorter first, then bytewise. Equal widths (the rule within a source) make this
 * plain string order; comparing the width first keeps the order total even across widths.
 *
 * @since 0.1.0
 * @category ordering
 */
export const compare = (a: Position, b: Position): -1 | 0 | 1 =>
  a.length !== b.length ? (a.length < b.length ? -1 : 1) : a < b ? -1 : a > b ? 1 : 0

/**
 * The `Order` of positions, for `Array.sort`, `Order.max` and the like; see {@link compare}.
 *
 * @since 0.1.0
 * @category ordering
 */
export const order: Order.Order<Position> = compare

/**
 * The larger of two positions.
 *
 * @since 0.1.0
 * @category ordering
 */
export const max = (a: Position, b: Position): Position => (compare(a, b) >= 0 ? a : b)

/**
 * Whether `a` lies strictly after `b`.
 *
 * @since 0.1.0
 * @category ordering
 */
export const isAfter = (a: Position, b: Position): boolean => compare(a, b) > 0
