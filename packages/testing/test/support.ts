/**
 * ioredis clients for the tests, closed with their scope.
 */
import { Effect, Scope } from "effect"
import { Redis, type RedisOptions } from "ioredis"

/**
 * A client that fails fast instead of reconnecting, connected before it is returned. A failed connect rejects with
 * the server's error (NOAUTH, ECONNREFUSED), not ioredis' generic "Connection is closed.".
 */
export const connectedClient = (
  url: string,
  options: Omit<RedisOptions, "replyMapping"> = {}
): Effect.Effect<Redis, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new Redis(url, {
        lazyConnect: true,
        retryStrategy: () => null,
        maxRetriesPerRequest: 0,
        ...options
      })
      let lastError: unknown
      client.on("error", (error) => {
        lastError = error
      })
      await client.connect().catch((error: unknown) => {
        client.disconnect()
        throw lastError ?? error
      })
      return client
    }),
    (client) => Effect.sync(() => client.disconnect())
  )

/** The error message a promise rejects with, or `undefined` when it resolves. */
export const rejection = (promise: Promise<unknown>): Promise<string | undefined> =>
  promise.then(
    () => undefined,
    (error: unknown) => (error instanceof Error ? error.message : String(error))
  )
