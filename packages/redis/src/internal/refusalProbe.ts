/**
 * Reads what a server says on a fresh connection before it is sent anything.
 *
 * A Redis server that will not take a client (at `maxclients`) writes one error line and closes. ioredis loses that
 * line: its handshake commands are already on the wire, so the close arrives as `ECONNRESET` or `EPIPE`, and the
 * reply, when it is read at all, answers a handshake command whose error ioredis ignores. A connection that sends
 * nothing gets the line and a clean close, so after such a reset one probe says why.
 */
import * as net from "node:net"
import * as tls from "node:tls"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

export interface Target {
  readonly host: string
  readonly port: number
  /** TLS options when the URL is `rediss://`: the refusal comes after the handshake. */
  readonly tls?: tls.ConnectionOptions | undefined
  readonly timeoutMs: number
}

// A refusal is one short line; anything longer is not one.
const MAX_LINE = 512

/** The server's first line when it is an error reply (without the `-`), else none: it said nothing, or something else. */
export const refusal = (target: Target): Effect.Effect<Option.Option<string>> =>
  Effect.callback<Option.Option<string>>((resume) => {
    const socket = target.tls
      ? tls.connect({ ...target.tls, host: target.host, port: target.port })
      : net.connect({ host: target.host, port: target.port })
    let received = ""
    const finish = (line: Option.Option<string>) => {
      socket.destroy()
      resume(Effect.succeed(line))
    }
    socket.setTimeout(target.timeoutMs, () => finish(Option.none()))
    socket.setEncoding("utf8")
    socket.on("data", (chunk: string) => {
      received += chunk
      const end = received.indexOf("\r\n")
      if (end >= 0) {
        const line = received.slice(0, end)
        // Printed to a terminal and logs: only printable ASCII is kept as is.
        finish(
          line.startsWith("-") && line.length > 1
            ? Option.some(line.slice(1).replace(/[^\x20-\x7e]/g, "?"))
            : Option.none()
        )
      } else if (received.length > MAX_LINE) finish(Option.none())
    })
    socket.on("error", () => finish(Option.none()))
    socket.on("close", () => finish(Option.none()))
    return Effect.sync(() => socket.destroy())
  })
