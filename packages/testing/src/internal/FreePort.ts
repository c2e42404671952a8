/**
 * Free TCP ports taken from the OS.
 *
 * @internal
 */
import * as Net from "node:net"

/**
 * Asks the OS for a free port on `host` by listening on port 0, then releases it. Another process may take the
 * port before the caller binds it; callers that spawn servers retry on "Address already in use".
 */
export const freePort = (host = "127.0.0.1"): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = Net.createServer()
    server.unref()
    server.once("error", reject)
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address()
      if (address === null || typeof address === "string") {
        server.close()
        return reject(new Error("the OS gave no TCP port"))
      }
      server.close(() => resolve(address.port))
    })
  })
