import { assert, describe, it } from "@effect/vitest"
import { Effect, Result, Schema } from "effect"
import * as CdcEvent from "../src/CdcEvent.ts"
import * as Envelope from "../src/Envelope.ts"
import * as Position from "../src/Position.ts"
import * as SyntheticSource from "../src/SyntheticSource.ts"

const source: CdcEvent.Source = {
  connector: "postgres",
  name: "main",
  db: "shop",
  table: "orders",
  ts_ms: 1_700_000_000_000
}

const events: ReadonlyArray<CdcEvent.CdcEvent> = [
  // One of each op from the synthetic source (inserts, updates and deletes, with nested rows).
  ...[1, 2, 3, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20].map((n) => SyntheticSource.eventAt(n)),
  SyntheticSource.eventAt(5, { schema: "public", transactionSize: 3 }),
  CdcEvent.make({
    op: "u",
    before: { id: 7, note: 'a "quoted" line\nwith ünïcödé ✓', tags: ["x", "y"], price: 1.5, flag: null },
    after: { id: 7, note: "", tags: [], price: 0, flag: true, nested: { deep: [1, { a: null }] } },
    source: { ...source, schema: "public", lsn: "0/16B3748", txId: 42, snapshot: false },
    ts_ms: 1_700_000_000_123,
    transaction: { id: "42:23456", total_order: 2, data_collection_order: 1 },
    position: Position.fromSequence(0xabcdef)
  }),
  CdcEvent.make({
    op: "t",
    before: null,
    after: null,
    source,
    ts_ms: 1_700_000_000_000,
    position: Position.fromSequence(3)
  }),
  CdcEvent.make({
    op: "r",
    before: null,
    after: { id: 1 },
    source: { ...source, snapshot: true },
    ts_ms: 0,
    position: Position.fromSequence(0)
  })
]

const ops = new Set(events.map((e) => e.op))

describe("Envelope", () => {
  it("the fixture covers every op", () => {
    assert.deepStrictEqual([...ops].sort(), ["c", "d", "r", "t", "u"])
  })

  for (const format of Envelope.formats) {
    describe(format, () => {
      const envelope = Envelope.make(format)

      it("round-trips every event", () => {
        for (const event of events) {
          const text = envelope.encode(event)
          assert.strictEqual(typeof text, "string")
          assert.deepStrictEqual(envelope.decodeSync(text), event)
          assert.deepStrictEqual(Result.getOrThrow(envelope.decodeResult(text)), event)
        }
      })

      it.effect("decode is an Effect that round-trips", () =>
        Effect.gen(function* () {
          for (const event of events) assert.deepStrictEqual(yield* envelope.decode(envelope.encode(event)), event)
        })
      )

      it.effect("invalid JSON fails with EnvelopeDecodeError naming the format", () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(envelope.decode("{not json"))
          assert.strictEqual(error._tag, "EnvelopeDecodeError")
          assert.strictEqual(error.format, format)
          assert.include(error.message, `cannot decode a ${format} envelope: invalid JSON`)
        })
      )

      it("an event missing a field fails and names the field", () => {
        const json = JSON.parse(envelope.encode(events[0]!))
        const event = format === "native" ? json : format === "debezium" ? json.payload : json.data
        delete event.source.table
        event.op = "x"
        const result = envelope.decodeResult(JSON.stringify(json))
        assert.isTrue(Result.isFailure(result))
        const message = Result.isFailure(result) ? result.failure.message : ""
        assert.include(message, `["source"]["table"]`)
        assert.include(message, `["op"]`)
        assert.throws(() => envelope.decodeSync(JSON.stringify(json)), /Missing key/)
      })

      it("an event JSON cannot represent is an EnvelopeEncodeError", () => {
        const bad = { ...events[0]!, after: { id: 10n } }
        assert.throws(() => envelope.encode(bad), Envelope.EnvelopeEncodeError)
        const result = envelope.encodeResult(bad)
        assert.isTrue(Result.isFailure(result))
        if (Result.isFailure(result)) {
          assert.strictEqual(result.failure._tag, "EnvelopeEncodeError")
          assert.include(result.failure.message, bad.id)
        }
        assert.deepStrictEqual(envelope.encodeResult(events[1]!), Result.succeed(envelope.encode(events[1]!)))
      })
    })
  }

  describe("native", () => {
    // The native decode checks common events by hand before asking the schema: it must give exactly the schema's
    // answer (the same event, keys in the same order, or a failure), for valid events and for every kind of damage.
    it("decodes exactly as the CdcEvent schema does, valid or not", () => {
      const schemaDecode = Schema.decodeUnknownResult(CdcEvent.CdcEvent)
      const wrong: ReadonlyArray<unknown> = [null, 0, 1.5, "", "x", "0a", true, [], [1], {}, { a: 1 }]
      const variants: Array<unknown> = []
      const mutate = (event: CdcEvent.CdcEvent, path: ReadonlyArray<string>) => {
        const at = (copy: any) => path.slice(0, -1).reduce((o: any, k) => o[k], copy)
        const key = path[path.length - 1]!
        const removed = JSON.parse(JSON.stringify(event))
        delete at(removed)[key]
        variants.push(removed)
        for (const value of wrong) {
          const copy = JSON.parse(JSON.stringify(event))
          at(copy)[key] = value
          variants.push(copy)
        }
      }
      for (const event of events) {
        variants.push(JSON.parse(JSON.stringify(event)))
        for (const key of Object.keys(event)) mutate(event, [key])
        for (const key of Object.keys(event.source)) mutate(event, ["source", key])
        for (const key of ["schema", "snapshot", "lsn", "txId", "file", "pos", "gtid", "sequence", "extra"]) {
          mutate({ ...event, source: { ...event.source, [key]: 1 } } as CdcEvent.CdcEvent, ["source", key])
        }
        if (event.transaction !== undefined) {
          for (const key of Object.keys(event.transaction)) mutate(event, ["transaction", key])
        }
        mutate({ ...event, transaction: { id: "t", total_order: 1, data_collection_order: 2, extra: 1 } } as any, [
          "transaction",
          "extra"
        ])
        mutate({ ...event, extra: 1 } as any, ["extra"])
        variants.push({ ...JSON.parse(JSON.stringify(event)), position: "ABC" })
        variants.push({ ...JSON.parse(JSON.stringify(event)), position: "a".repeat(65) })
        variants.push({ ...JSON.parse(JSON.stringify(event)), op: "toString" })
      }
      variants.push(null, [], "x", 1)
      let succeeded = 0
      for (const variant of variants) {
        const text = JSON.stringify(variant)
        const expected = schemaDecode(JSON.parse(text))
        const actual = Envelope.native.decodeResult(text)
        assert.strictEqual(Result.isSuccess(actual), Result.isSuccess(expected), text)
        if (Result.isSuccess(actual) && Result.isSuccess(expected)) {
          succeeded++
          assert.deepStrictEqual(actual.success, expected.success)
          assert.strictEqual(JSON.stringify(actual.success), JSON.stringify(expected.success), text)
        }
      }
      assert.isAbove(succeeded, events.length)
    })

    it("is the event as JSON and the default", () => {
      const event = events[16]!
      assert.strictEqual(Envelope.make().format, "native")
      assert.strictEqual(Envelope.native.encode(event), JSON.stringify(event))
      assert.strictEqual(Envelope.native.contentType, "application/json")
    })
  })

  describe("debezium", () => {
    it("has Debezium's shape with id and position inside the payload", () => {
      const event = events[16]!
      const json = JSON.parse(Envelope.debezium.encode(event))
      assert.deepStrictEqual(Object.keys(json), ["schema", "payload"])
      assert.isNull(json.schema)
      assert.deepStrictEqual(Object.keys(json.payload), [
        "before",
        "after",
        "source",
        "op",
        "ts_ms",
        "transaction",
        "id",
        "position"
      ])
      assert.deepStrictEqual(json.payload.transaction, event.transaction)
      assert.strictEqual(json.payload.id, event.id)
      assert.strictEqual(json.payload.position, event.position)
      const withoutTx = JSON.parse(Envelope.debezium.encode(events[0]!))
      assert.isFalse("transaction" in withoutTx.payload)
    })

    it("accepts transaction: null and a bare payload, as Debezium writes them", () => {
      const event = events[0]!
      const json = JSON.parse(Envelope.debezium.encode(event))
      json.payload.transaction = null
      assert.deepStrictEqual(Envelope.debezium.decodeSync(JSON.stringify(json)), event)
      assert.deepStrictEqual(Envelope.debezium.decodeSync(JSON.stringify(json.payload)), event)
    })

    it("rejects an envelope without a payload object", () => {
      assert.throws(() => Envelope.debezium.decodeSync(`{"schema":null,"payload":3}`), /expected an object at payload/)
      assert.throws(() => Envelope.debezium.decodeSync(`[1]`), /expected a JSON object/)
    })
  })

  describe("cloudevents", () => {
    it("carries the CloudEvents 1.0 attributes and the native event as data", () => {
      const event = events[16]!
      const json = JSON.parse(Envelope.cloudevents.encode(event))
      assert.deepStrictEqual(json, {
        specversion: "1.0",
        id: event.id,
        source: "/redflow/postgres/main",
        type: "io.redflow.cdc.update",
        subject: "shop.public.orders",
        time: "2023-11-14T22:13:20.123Z",
        datacontenttype: "application/json",
        data: JSON.parse(JSON.stringify(event))
      })
      assert.strictEqual(Envelope.cloudevents.contentType, "application/cloudevents+json")
    })

    it("names each op and the subject without a schema", () => {
      const types = events.map((e) => JSON.parse(Envelope.cloudevents.encode(e)).type as string)
      for (const t of ["create", "update", "delete", "read", "truncate"]) assert.include(types, `io.redflow.cdc.${t}`)
      const plain = JSON.parse(Envelope.cloudevents.encode(events[0]!))
      assert.strictEqual(plain.subject, "shop.orders")
      assert.strictEqual(plain.source, "/redflow/synthetic/synthetic")
      assert.strictEqual(plain.time, new Date(events[0]!.ts_ms).toISOString())
    })

    it("rejects a wrong specversion and an id that differs from the event's", () => {
      const json = JSON.parse(Envelope.cloudevents.encode(events[0]!))
      assert.throws(
        () => Envelope.cloudevents.decodeSync(JSON.stringify({ ...json, specversion: "0.3" })),
        /not a CloudEvents 1.0 structured event[\s\S]*specversion/
      )
      assert.throws(
        () => Envelope.cloudevents.decodeSync(JSON.stringify({ ...json, id: "other" })),
        /the id attribute other differs from data.id/
      )
    })
  })
})
