/**
 * Pub/sub fan-out for ephemeral subscribers (`publish: { channel }`): after the sink writes a batch to a stream, it
 * publishes a compact notice per batch and channel, `{"stream","first","last","count"}`, and {@link subscribe}
 * turns a channel (or a pattern) into a `Stream` of those notices.
 *
 * A notice, not the events: the stream stays the one copy of the data, a notice is a wake-up that says which entries
 * to read (`XRANGE stream first last`). Measured with `bench/retention.ts --publish` (500-event batches, one stream):
 * a `PUBLISH` per event costs the write path a round trip's worth of commands per event and Redis one send per event
 * and subscriber, so it grows with both; one notice per batch adds one command per batch whatever the subscribers'
 * number (bench/RESULTS.md has the figures). Subscribers that want the events read them from the stream, in pages,
 * when they choose.
 *
 * Pub/sub is at most once. A notice published while a subscriber is disconnected is lost; after a reconnect (the
 * client subscribes again by itself) the stream emits {@link Resubscribed}, so a subscriber that must not miss entries
 * reads the stream from the last id it saw. A subscriber that reads more slowly than notices arrive fills its
 * connection's output buffer on the server: Redis disconnects a pub/sub client past
 * `client-output-buffer-limit pubsub` (default `32mb 8mb 60`: 32 MB at once, or over 8 MB for 60 s) and the client
 * reconnects, missing what was dropped. Here, notices wait in a local buffer of `bufferSize` (default 4096); past it
 * the oldest are dropped, so a slow application never makes Redis drop the connection.
 *
 * The subscriber uses a connection of its own: `SUBSCRIBE` takes a connection over (it can send nothing else).
 *
 * @example
 * ```ts
 * RedisStreamChannel.subscribe({ channel: "orders.changed" }).pipe(
 *   Stream.runForEach((m) => (m._tag === "Notice" ? Effect.log(`${m.count} new in ${m.stream}`) : Effect.void))
 * )
 * ```
 *
 * @since 0.1.0
 */
import * as ConfigError from "@redflow/core/ConfigError"
import type { CdcEvent } from "@redflow/core/CdcEvent"
import * as Routing from "@redflow/core/Routing"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import { RedisConnection } from "./RedisConnection.ts"
import type { RedisError } from "./RedisError.ts"
import * as StreamAdmin from "./StreamAdmin.ts"

const COMPONENT = "RedisStreamChannel"

/**
 * A batch of entries written to a stream.
 *
 * @since 0.1.0
 * @category models
 */
export interface Notice {
  readonly _tag: "Notice"
  /** The channel it was published on (for a pattern subscription, the one that matched). */
  readonly channel: string
  readonly stream: string
  /** Id of the batch's first and last entry for this channel: `XRANGE stream first last` reads them. */
  readonly first: string
  readonly last: string
  readonly count: number
}

/**
 * The connection came back and subscribed again: notices published meanwhile are lost; read the stream from the
 * last id seen to catch up.
 *
 * @since 0.1.0
 * @category models
 */
export interface Resubscribed {
  readonly _tag: "Resubscribed"
}

/**
 * What {@link subscribe} emits: a {@link Notice} of a batch, or {@link Resubscribed} after a reconnect.
 *
 * @since 0.1.0
 * @category models
 */
export type ChannelMessage = Notice | Resubscribed

/**
 * `publish: { channel }`: the channel, a template like the stream's (`orders.changed`, `cdc.${table}`).
 *
 * @since 0.1.0
 * @category options
 */
export interface PublishOptions {
  readonly channel: Routing.Config
}

/**
 * What the sink calls after it wrote a batch.
 *
 * @since 0.1.0
 * @category publishing
 */
export interface Publisher {
  /**
   * Publishes one notice per channel for a batch written to `stream`: `events[i]` was written as entry `ids[i]`,
   * in order. Events whose channel cannot be rendered are left out (the stream has them). Answers the notices sent.
   */
  readonly afterWrite: (
    stream: string,
    events: ReadonlyArray<CdcEvent>,
    ids: ReadonlyArray<string>
  ) => Effect.Effect<number, RedisError, RedisConnection>
}

/**
 * The wire form of a notice.
 *
 * @since 0.1.0
 * @category publishing
 */
export const encode = (stream: string, first: string, last: string, count: number): string =>
  JSON.stringify({ stream, first, last, count })

/**
 * The notices of a batch written to `stream`, one per channel in order of first appearance: entry `i` was written as
 * `ids[i]` and is announced on `channels[i]` (`undefined`: not announced).
 *
 * @since 0.1.0
 * @category publishing
 */
export const noticesOf = (
  stream: string,
  channels: ReadonlyArray<string | undefined>,
  ids: ReadonlyArray<string>
): Array<Notice> => {
  const byChannel = new Map<string, { first: string; last: string; count: number }>()
  const n = Math.min(channels.length, ids.length)
  for (let i = 0; i < n; i++) {
    const channel = channels[i]
    if (channel === undefined) continue
    const seen = byChannel.get(channel)
    if (seen === undefined) byChannel.set(channel, { first: ids[i]!, last: ids[i]!, count: 1 })
    else {
      seen.last = ids[i]!
      seen.count++
    }
  }
  return [...byChannel].map(([channel, { first, last, count }]) => ({
    _tag: "Notice",
    channel,
    stream,
    first,
    last,
    count
  }))
}

/**
 * Publishes notices, pipelined (one round trip).
 *
 * @since 0.1.0
 * @category publishing
 */
export const publishAll = (notices: ReadonlyArray<Notice>): Effect.Effect<void, RedisError, RedisConnection> =>
  Effect.all(
    notices.map((n) =>
      StreamAdmin.command("PUBLISH", n.stream, [n.channel, encode(n.stream, n.first, n.last, n.count)], () => undefined)
    ),
    { concurrency: "unbounded", discard: true }
  )

/**
 * Builds the publisher of `publish: { channel }`; a template that does not compile is a ConfigError naming
 * `publish.channel`.
 *
 * @since 0.1.0
 * @category publishing
 */
export const makePublisher = (options: PublishOptions): Effect.Effect<Publisher, ConfigError.ConfigError> =>
  Effect.gen(function* () {
    const router = yield* Routing.make(options.channel).pipe(
      Effect.mapError((e) => ConfigError.make(COMPONENT, ["publish", "channel"], e.message))
    )
    const afterWrite: Publisher["afterWrite"] = (stream, events, ids) => {
      const channels = events.map((event) => {
        const channel = router.render(event)
        return Result.isSuccess(channel) ? channel.success : undefined
      })
      const notices = noticesOf(stream, channels, ids)
      const unrouted = channels.filter((c) => c === undefined).length
      return publishAll(notices).pipe(
        Effect.tap(() =>
          unrouted === 0
            ? Effect.void
            : Effect.logDebug(`publish: ${unrouted} events of a batch to ${stream} have no channel; not announced`)
        ),
        Effect.as(notices.length)
      )
    }
    return { afterWrite }
  })

/**
 * A notice from the wire; `undefined` for a message that is not one (someone else publishing on the channel).
 *
 * @since 0.1.0
 * @category subscribing
 */
export const decode = (channel: string, message: string): Notice | undefined => {
  try {
    const v = JSON.parse(message) as Record<string, unknown>
    if (
      typeof v.stream === "string" &&
      typeof v.first === "string" &&
      typeof v.last === "string" &&
      typeof v.count === "number"
    ) {
      return { _tag: "Notice", channel, stream: v.stream, first: v.first, last: v.last, count: v.count }
    }
  } catch {
    // not JSON: not a notice
  }
  return undefined
}

/**
 * Options of {@link subscribe}: how many notices are kept while the application is busy.
 *
 * @since 0.1.0
 * @category options
 */
export interface SubscribeOptions {
  /** Notices kept while the application is busy; past it the oldest are dropped. Default 4096. */
  readonly bufferSize?: number
}

/**
 * The notices published on a channel (`{ channel }`, `SUBSCRIBE`) or on every channel matching a glob pattern
 * (`{ pattern }`, `PSUBSCRIBE`, e.g. `cdc.*`), on a connection of its own, closed with the stream. After a reconnect
 * it emits {@link Resubscribed}. Messages that are not notices are skipped.
 *
 * @since 0.1.0
 * @category subscribing
 */
export const subscribe = (
  target: { readonly channel: string } | { readonly pattern: string },
  options: SubscribeOptions = {}
): Stream.Stream<ChannelMessage, RedisError, RedisConnection> =>
  Stream.callback<ChannelMessage, RedisError, RedisConnection>(
    (queue) =>
      Effect.gen(function* () {
        const redis = yield* RedisConnection
        const connection = yield* redis.dedicated({ blocking: true })
        const client = connection.client
        let subscribed = false
        let skipped = 0
        const offer = (channel: string, message: string) => {
          const notice = decode(channel, message)
          if (notice === undefined) skipped++
          else Queue.offerUnsafe(queue, notice)
        }
        const onMessage = (channel: string, message: string) => offer(channel, message)
        const onPattern = (_pattern: string, channel: string, message: string) => offer(channel, message)
        // ioredis subscribes again by itself on reconnect (autoResubscribe); "ready" follows it.
        const onReady = () => {
          if (subscribed) Queue.offerUnsafe(queue, { _tag: "Resubscribed" })
        }
        client.on("message", onMessage)
        client.on("pmessage", onPattern)
        client.on("ready", onReady)
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            client.off("message", onMessage)
            client.off("pmessage", onPattern)
            client.off("ready", onReady)
          }).pipe(
            Effect.andThen(
              skipped === 0
                ? Effect.void
                : Effect.logDebug(`skipped ${skipped} messages that were not notices on ${JSON.stringify(target)}`)
            )
          )
        )
        if ("pattern" in target) {
          yield* connection.run((c) => c.psubscribe(target.pattern), { command: "PSUBSCRIBE", key: target.pattern })
        } else {
          yield* connection.run((c) => c.subscribe(target.channel), { command: "SUBSCRIBE", key: target.channel })
        }
        subscribed = true
      }),
    { bufferSize: options.bufferSize ?? 4096, strategy: "sliding" }
  )
