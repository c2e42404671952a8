import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as RedisTestServer from "@redflow/testing/RedisTestServer"
import { uniquePrefix } from "../support.ts"
import { landed, start } from "./harness.ts"

/** A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
const makeCertificates = (dir: string) => {
  const ssl = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })
  ssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
    "-days",
    "1",
    "-subj",
    "/CN=redflow-test-ca"
  )
  writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
  for (const name of ["server", "client"]) {
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`)
    ssl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "1",
      "-extfile",
      "san.ext"
    )
  }
  const read = (file: string) => readFileSync(join(dir, file), "utf8")
  return { ca: read("ca.crt"), cert: read("client.crt"), key: read("client.key") }
}

describe("TLS (rediss://)", () => {
  it.live("writes over TLS to a server that requires client certificates", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "redflow-tls-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const pem = makeCertificates(dir)
      const tlsPort = yield* Effect.promise(() => RedisTestServer.freePort())
      const server = yield* RedisTestServer.make({
        args: [
          "--tls-port",
          String(tlsPort),
          "--tls-cert-file",
          join(dir, "server.crt"),
          "--tls-key-file",
          join(dir, "server.key"),
          "--tls-ca-cert-file",
          join(dir, "ca.crt"),
          "--tls-auth-clients",
          "yes"
        ]
      })
      const prefix = uniquePrefix("tls")
      const run = yield* start({
        url: `rediss://127.0.0.1:${tlsPort}`,
        prefix,
        count: 2_000,
        sink: { guarantee: "exactly-once" },
        connection: { tls: pem }
      })
      yield* Fiber.join(run.fiber)
      // Read back over the plain port of the same server.
      const result = yield* landed(server.url, prefix, 2_000)
      expect(result.missing).toEqual([])
      expect(result.duplicates).toBe(0)

      // Without the CA the server's certificate cannot be verified: that never fixes itself, so fail fast.
      const started = Date.now()
      const untrusted = yield* start({ url: `rediss://127.0.0.1:${tlsPort}`, prefix: `${prefix}.untrusted`, count: 10 })
      const error = yield* Fiber.join(untrusted.fiber).pipe(Effect.flip)
      expect(error).toMatchObject({ _tag: "RedisAuthFailed", code: "TLS" })
      // Not retried: a retry loop would never end; the bound leaves room for a loaded machine.
      expect(Date.now() - started).toBeLessThan(5_000)
    })
  )
})
