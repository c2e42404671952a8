/**
 * Event bodies the sink stored by reference (`largeEvents: "reference"`), as readers find them: the entry carries a
 * `ref` field naming the body's key (in the stream's hash slot) instead of `event`. Shared by the consumer's store and
 * the plain subscription, which both read the bodies of a read back with one `MGET`.
 */
import type * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import type { RedisConnection } from "../RedisConnection.ts"
import type { RedisError } from "../RedisError.ts"
import * as StreamAdmin from "../StreamAdmin.ts"

/** The field of an entry whose event's body is stored under a key of its own. */
export const REF_FIELD = "ref"

/** Written by reference: the body must be read back before the entry can be decoded. */
export const isReference = (fields: Readonly<Record<string, string>>): boolean =>
  fields.event === undefined && fields[REF_FIELD] !== undefined

/**
 * `MGET` of the keys holding bodies of events written by reference, in order: `undefined` for one that is gone (its
 * TTL passed, or it was deleted). A reply of another shape is an error, never a body skipped.
 */
export const readBodies = (
  keys: ReadonlyArray<string>
): Effect.Effect<Array<string | undefined>, RedisError, RedisConnection> =>
  StreamAdmin.command("MGET", keys[0]!, keys, (reply) => {
    if (!Array.isArray(reply) || reply.length !== keys.length) {
      throw new Error(`MGET of ${keys.length} event bodies answered ${JSON.stringify(reply)?.slice(0, 200)}`)
    }
    return reply.map((body, i) => {
      if (body === null) return undefined
      if (Predicate.isString(body)) return body
      throw new Error(`MGET: the event body under ${keys[i]} is ${typeof body}, not a string`)
    })
  })
