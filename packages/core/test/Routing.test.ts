import { assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as CdcEvent from "../src/CdcEvent.ts"
import * as Position from "../src/Position.ts"
import * as Routing from "../src/Routing.ts"

const source: CdcEvent.Source = { connector: "mysql", name: "main", db: "shop", table: "orders", ts_ms: 1 }

const insert = CdcEvent.make({
  op: "c",
  before: null,
  after: { id: 42, customer_id: 7, status: "paid", note: null, region: "", big: 9007199254740993n, vip: true },
  source,
  ts_ms: 1,
  position: Position.fromSequence(5)
})
const remove = CdcEvent.make({
  op: "d",
  before: { id: 41, tags: ["a"] },
  after: null,
  source: { ...source, schema: "public", table: "payments" },
  ts_ms: 2,
  position: Position.fromSequence(6)
})

const render = (template: string, event: CdcEvent.CdcEvent) => Routing.compileSync(template).render(event)

const failure = (result: Result.Result<string, Routing.RoutingUnresolved>): Routing.RoutingUnresolved => {
  if (Result.isSuccess(result)) throw new Error(`expected a failure, got ${result.success}`)
  return result.failure
}

const configError = (f: () => unknown): Routing.RoutingConfigError => {
  try {
    f()
  } catch (e) {
    if (e instanceof Routing.RoutingConfigError) return e
    throw e
  }
  throw new Error("expected a RoutingConfigError")
}

describe("Routing", () => {
  describe("templates", () => {
    it("a constant template renders itself", () => {
      const t = Routing.compileSync("orders.events")
      assert.isTrue(t.isConstant)
      assert.deepStrictEqual(t.variables, [])
      assert.deepStrictEqual(t.render(insert), Result.succeed("orders.events"))
    })

    it("substitutes source fields and their aliases", () => {
      assert.deepStrictEqual(render("cdc.${source.db}.${source.table}", insert), Result.succeed("cdc.shop.orders"))
      assert.deepStrictEqual(render("${db}/${table}", insert), Result.succeed("shop/orders"))
      assert.deepStrictEqual(render("${source.connector}:${source.name}", insert), Result.succeed("mysql:main"))
      assert.deepStrictEqual(
        render("${schema}.${source.schema}.${table}", remove),
        Result.succeed("public.public.payments")
      )
      assert.deepStrictEqual(
        render("${op}|${id}|${position}", insert),
        Result.succeed(`c|${insert.id}|0000000000000005`)
      )
      const t = Routing.compileSync("a${op}b${table}c")
      assert.isFalse(t.isConstant)
      assert.deepStrictEqual(t.variables, ["op", "table"])
      assert.deepStrictEqual(t.render(insert), Result.succeed("acbordersc"))
    })

    it("substitutes row columns: after, before and key (after ?? before)", () => {
      assert.deepStrictEqual(render("${after.id}", insert), Result.succeed("42"))
      assert.deepStrictEqual(render("${key.id}", insert), Result.succeed("42"))
      assert.deepStrictEqual(render("${key.id}", remove), Result.succeed("41"))
      assert.deepStrictEqual(render("${before.id}", remove), Result.succeed("41"))
      assert.deepStrictEqual(
        render("${after.big}:${after.vip}:${after.status}", insert),
        Result.succeed("9007199254740993:true:paid")
      )
      assert.deepStrictEqual(
        render("${after.weird name!}", { ...insert, after: { "weird name!": "x" } }),
        Result.succeed("x")
      )
    })

    it("an unresolvable template is a failure value naming the variable and the reason", () => {
      const schema = failure(render("cdc.${source.schema}.${table}", insert))
      assert.strictEqual(schema._tag, "RoutingUnresolved")
      assert.strictEqual(schema.variable, "source.schema")
      assert.strictEqual(schema.eventId, insert.id)
      assert.include(schema.message, `"cdc.\${source.schema}.\${table}"`)
      assert.include(schema.message, "has no source.schema")

      assert.include(failure(render("${after.note}", insert)).reason, "column note is null in the after image")
      assert.include(
        failure(render("${after.missing}", insert)).reason,
        "column missing is absent from the after image"
      )
      assert.include(failure(render("${after.id}", remove)).reason, "has no after image (op d)")
      assert.include(failure(render("${before.id}", insert)).reason, "has no before image (op c)")
      assert.include(failure(render("${key.tags}", remove)).reason, "not a scalar (array)")
      assert.include(failure(render("x.${after.region}", insert)).reason, "column region is empty")
      const truncate = { ...insert, op: "t" as const, after: null }
      assert.include(failure(render("${key.id}", truncate)).reason, "has no row image (op t)")
    })

    it("a variable resolving to an empty string is a failure, so a name is never empty", () => {
      const miss = failure(render("${after.region}", insert))
      assert.strictEqual(miss.variable, "after.region")
      assert.include(miss.reason, "empty")
      assert.include(
        failure(render("${source.schema}", { ...remove, source: { ...remove.source, schema: "" } })).reason,
        "source.schema is empty"
      )
    })

    it("a malformed template or unknown variable is a RoutingConfigError naming it and the allowed variables", () => {
      const unknown = configError(() => Routing.compileSync("cdc.${source.table}.${tabel}"))
      assert.strictEqual(unknown._tag, "RoutingConfigError")
      assert.strictEqual(unknown.variable, "tabel")
      assert.include(unknown.message, `"cdc.\${source.table}.\${tabel}"`)
      assert.include(unknown.message, "unknown variable ${tabel}")
      assert.include(unknown.message, "Allowed variables: op, id, position, source.connector")
      assert.include(unknown.message, "after.<column>, before.<column>, key.<column>")

      assert.include(configError(() => Routing.compileSync("cdc.${table")).message, "unclosed ${ at offset 4")
      assert.include(configError(() => Routing.compileSync("cdc.${a${table}")).message, "unclosed ${ at offset 4")
      assert.include(configError(() => Routing.compileSync("cdc.${}")).message, "empty variable name")
      assert.include(configError(() => Routing.compileSync("${after.}")).message, "names no column")
      assert.include(configError(() => Routing.compileSync("${source.lsn}")).message, "unknown variable ${source.lsn}")
      assert.include(configError(() => Routing.compileSync("${ op }")).message, "unknown variable ${ op }")
      assert.include(configError(() => Routing.compileSync("")).message, "cannot be empty")
    })

    it.effect("compile is an Effect failing with RoutingConfigError", () =>
      Effect.gen(function* () {
        const t = yield* Routing.compile("${table}")
        assert.deepStrictEqual(t.render(insert), Result.succeed("orders"))
        const error = yield* Effect.flip(Routing.compile("${nope}"))
        assert.strictEqual(error._tag, "RoutingConfigError")
      })
    )

    it("a literal `$` or `}` without `${` stays literal", () => {
      assert.deepStrictEqual(render("a$b}c{d", insert), Result.succeed("a$b}c{d"))
    })
  })

  describe("routers", () => {
    const config: Routing.Config = {
      default: "cdc.${db}.${table}",
      tables: { orders: "orders.events", "public.payments": "pg.payments.${op}", "shop.refunds": "mysql.refunds" }
    }

    it("routes by table, schema.table (or db.table without a schema), then the default", () => {
      const router = Routing.makeSync(config)
      assert.deepStrictEqual(router.render(insert), Result.succeed("orders.events"))
      assert.deepStrictEqual(router.render(remove), Result.succeed("pg.payments.d"))
      const plainPayments = { ...insert, source: { ...source, table: "payments" } }
      assert.deepStrictEqual(router.render(plainPayments), Result.succeed("cdc.shop.payments"))
      const refunds = { ...insert, source: { ...source, table: "refunds" } }
      assert.deepStrictEqual(router.render(refunds), Result.succeed("mysql.refunds"))
      const customers = { ...insert, source: { ...source, table: "customers" } }
      assert.deepStrictEqual(router.render(customers), Result.succeed("cdc.shop.customers"))
      assert.strictEqual(router.templateFor(customers), router.default)
      assert.deepStrictEqual([...router.tables.keys()], ["orders", "public.payments", "shop.refunds"])
    })

    it("a qualified key wins over a plain one", () => {
      const router = Routing.makeSync({ default: "d", tables: { payments: "plain", "public.payments": "qualified" } })
      assert.deepStrictEqual(router.render(remove), Result.succeed("qualified"))
      assert.deepStrictEqual(
        router.render({ ...insert, source: { ...source, table: "payments" } }),
        Result.succeed("plain")
      )
    })

    it("a single template routes everything", () => {
      const router = Routing.makeSync("all.${op}")
      assert.deepStrictEqual(router.render(insert), Result.succeed("all.c"))
      assert.deepStrictEqual(router.render(remove), Result.succeed("all.d"))
    })

    it.effect("a bad per-table template or key is a RoutingConfigError naming the route", () =>
      Effect.gen(function* () {
        const bad = yield* Effect.flip(Routing.make({ default: "d", tables: { orders: "o.${whatever}" } }))
        assert.include(bad.message, `at tables["orders"]`)
        assert.include(bad.message, "unknown variable ${whatever}")
        const badDefault = yield* Effect.flip(Routing.make({ default: "${", tables: {} }))
        assert.include(badDefault.message, "at default")
        const badKey = yield* Effect.flip(Routing.make({ default: "d", tables: { ".orders": "x" } }))
        assert.include(badKey.message, `".orders" is not a table or schema.table`)
      })
    )
  })
})
