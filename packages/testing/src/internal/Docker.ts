/**
 * The Docker fallback: is an engine answering, and a lazily loaded testcontainers.
 *
 * @internal
 */
import * as Http from "node:http"
import * as Os from "node:os"
import * as Path from "node:path"

type Endpoint = { readonly socketPath: string } | { readonly host: string; readonly port: number }

const endpoints = (): ReadonlyArray<Endpoint> => {
  const dockerHost = process.env["DOCKER_HOST"]
  if (dockerHost !== undefined && dockerHost !== "") {
    if (dockerHost.startsWith("unix://")) return [{ socketPath: dockerHost.slice("unix://".length) }]
    const url = new URL(dockerHost.replace(/^tcp:/, "http:"))
    return [{ host: url.hostname, port: Number(url.port || 2375) }]
  }
  const candidates = ["/var/run/docker.sock", Path.join(Os.homedir(), ".docker", "run", "docker.sock")]
  const runtimeDir = process.env["XDG_RUNTIME_DIR"]
  if (runtimeDir !== undefined) candidates.push(Path.join(runtimeDir, "docker.sock"))
  return candidates.map((socketPath) => ({ socketPath }))
}

const ping = (endpoint: Endpoint, timeoutMs: number): Promise<boolean> =>
  new Promise((resolve) => {
    const request = Http.get({ ...endpoint, path: "/_ping", timeout: timeoutMs }, (response) => {
      response.resume()
      resolve(response.statusCode === 200)
    })
    request.on("timeout", () => request.destroy())
    request.on("error", () => resolve(false))
  })

/** Whether a Docker engine answers `GET /_ping` on `DOCKER_HOST` or a usual socket. */
export const engineAnswers = async (timeoutMs = 1_000): Promise<boolean> => {
  for (const endpoint of endpoints()) {
    if (await ping(endpoint, timeoutMs)) return true
  }
  return false
}

/** The part of testcontainers this package uses; typed here so the package type-checks without it installed. */
export interface StartedContainer {
  getHost(): string
  getMappedPort(port: number): number
  getId(): string
  stop(): Promise<unknown>
}

interface ContainerBuilder {
  withExposedPorts(...ports: Array<number>): ContainerBuilder
  withCommand(command: Array<string>): ContainerBuilder
  start(): Promise<StartedContainer>
}

interface Testcontainers {
  readonly GenericContainer: new (image: string) => ContainerBuilder
}

// A specifier in a variable keeps the optional dependency out of the type checker and out of static analysis:
// testcontainers is loaded only when no REDIS_URL and no redis-server are available.
const TESTCONTAINERS = "testcontainers"

/** Starts `image` running `redis-server …args` and exposes port 6379. */
export const startRedisContainer = async (image: string, args: ReadonlyArray<string>): Promise<StartedContainer> => {
  const testcontainers = (await import(TESTCONTAINERS)) as Testcontainers
  return new testcontainers.GenericContainer(image)
    .withExposedPorts(6379)
    .withCommand(["redis-server", ...args])
    .start()
}
