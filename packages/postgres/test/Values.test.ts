import { assert, describe, it, layer } from "@effect/vitest"
import { PostgresTestServer } from "@redflow/testing"
import { Effect, Exit, Stream } from "effect"
import * as Pgoutput from "../src/internal/Pgoutput.ts"
import * as ReplicationClient from "../src/internal/ReplicationClient.ts"
import * as Session from "../src/internal/Session.ts"
import * as Values from "../src/internal/Values.ts"

const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

/** Column name and SQL type of the table that holds every type the mapping knows. */
const columns: ReadonlyArray<readonly [string, string]> = [
  ["i2", "int2"],
  ["i4", "int4"],
  ["i8", "int8"],
  ["o", "oid"],
  ["f4", "float4"],
  ["f8", "float8"],
  ["f8b", "float8"],
  ["num", "numeric"],
  ["num_scaled", "numeric(50,10)"],
  ["b", "bool"],
  ["t", "text"],
  ["vc", "varchar(10)"],
  ["bp", "char(5)"],
  ["nm", "name"],
  ["ci", "citext"],
  ["u", "uuid"],
  ["tstz", "timestamptz"],
  ["ts", "timestamp"],
  ["d", "date"],
  ["tm", "time"],
  ["tmtz", "timetz"],
  ["iv", "interval"],
  ["js", "json"],
  ["jsb", "jsonb"],
  ["by", "bytea"],
  ["mo", "mood"],
  ["dom", "posint"],
  ["a_i4", "int4[]"],
  ["a_text", "text[]"],
  ["a_i8", "int8[]"],
  ["a_num", "numeric[]"],
  ["a_bool", "bool[]"],
  ["a_uuid", "uuid[]"],
  ["a_jsonb", "jsonb[]"],
  ["a_tstz", "timestamptz[]"],
  ["a_mood", "mood[]"],
  ["a_2d", "int4[]"],
  ["a_3d", "int4[]"],
  ["a_bounds", "int4[]"],
  ["a_bytea", "bytea[]"],
  ["a_date", "date[]"],
  ["a_box", "box[]"],
  ["a_dom", "posint[]"],
  ["a_f8", "float8[]"],
  ["dom_arr", "tags"],
  ["addr", "inet"],
  ["rng", "int4range"],
  ["pr", "pair"]
]

/** A row: per column, the text inserted (as a query parameter) and the value the mapping must give. */
type RowSpec = Readonly<Record<string, readonly [input: string, expected: unknown]>>

const UUID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
const rows: ReadonlyArray<RowSpec> = [
  {
    i2: ["-32768", -32768],
    i4: ["2147483647", 2147483647],
    i8: ["9223372036854775807", "9223372036854775807"],
    o: ["4294967295", 4294967295],
    f4: ["0.1", 0.1],
    f8: ["1.0000000000000002", 1.0000000000000002],
    f8b: ["-1.5e-7", -1.5e-7],
    num: ["1234567890123456789012345678901234567890.5", "1234567890123456789012345678901234567890.5"],
    num_scaled: ["-0.0000000001", "-0.0000000001"],
    b: ["true", true],
    t: ['line 1\nline 2 "quoted" \\ back, {braces}', 'line 1\nline 2 "quoted" \\ back, {braces}'],
    vc: ["héllo", "héllo"],
    bp: ["ab", "ab   "],
    nm: ["some_name", "some_name"],
    ci: ["MiXeD Case", "MiXeD Case"],
    u: [UUID.toUpperCase(), UUID],
    // Stored in UTC: 12:00 at +02 is 10:00Z.
    tstz: ["2026-12-01 12:00:00.123456+02", "2026-12-01T10:00:00.123456Z"],
    ts: ["2026-12-01 10:00:00.5", "2026-12-01T10:00:00.500000"],
    d: ["2026-12-01", "2026-12-01"],
    tm: ["10:00:00.123456", "10:00:00.123456"],
    tmtz: ["10:00:00.5+02", "10:00:00.5+02"],
    iv: ["1 year 2 months 3 days 04:05:06.5", "P1Y2M3DT4H5M6.5S"],
    js: [
      '{"a": {"b": [1, 2.5, {"c": "é 中 😀"}]}, "d": "\\u00e9", "e": null}',
      { a: { b: [1, 2.5, { c: "é 中 😀" }] }, d: "é", e: null }
    ],
    jsb: [
      '{"k": [true, false, null], "n": {"deep": {"deeper": "ü"}}, "x": 1e3}',
      { k: [true, false, null], n: { deep: { deeper: "ü" } }, x: 1000 }
    ],
    by: [`\\x${allBytes.toString("hex")}`, allBytes.toString("base64")],
    mo: [`it's "complicated"`, `it's "complicated"`],
    dom: ["42", 42],
    a_i4: ["{1,2,3}", [1, 2, 3]],
    a_text: [
      String.raw`{"a,b","c\"d","e\\f","{g}","","NULL",NULL," spaced ",ü,"a b","x}"}`,
      ["a,b", 'c"d', "e\\f", "{g}", "", "NULL", null, " spaced ", "ü", "a b", "x}"]
    ],
    a_i8: ["{9223372036854775807,-9223372036854775808}", ["9223372036854775807", "-9223372036854775808"]],
    a_num: ["{1.5,NaN,-0.001,Infinity}", ["1.5", "NaN", "-0.001", "Infinity"]],
    a_bool: ["{t,f,NULL}", [true, false, null]],
    a_uuid: [`{${UUID},00000000-0000-0000-0000-000000000000}`, [UUID, "00000000-0000-0000-0000-000000000000"]],
    a_jsonb: [
      String.raw`{"{\"a\": [1, {\"b\": \"x,y\"}]}","null","\"s\"","[]",NULL}`,
      [{ a: [1, { b: "x,y" }] }, null, "s", [], null]
    ],
    a_tstz: [
      `{"2026-12-01 10:00:00.123456+00",infinity,-infinity}`,
      ["2026-12-01T10:00:00.123456Z", "infinity", "-infinity"]
    ],
    a_mood: [String.raw`{happy,"it's \"complicated\""}`, ["happy", `it's "complicated"`]],
    a_2d: [
      "{{1,2},{3,NULL}}",
      [
        [1, 2],
        [3, null]
      ]
    ],
    a_3d: ["{{{1,2}},{{3,4}}}", [[[1, 2]], [[3, 4]]]],
    a_bounds: ["[2:3]={1,2}", [1, 2]],
    a_bytea: [String.raw`{"\\x00ff","\\x"}`, ["AP8=", ""]],
    a_date: [`{2026-12-01,"0044-03-15 BC"}`, ["2026-12-01", "-000043-03-15"]],
    a_box: ["{(1,1),(0,0);(3,3),(2,2)}", ["(1,1),(0,0)", "(3,3),(2,2)"]],
    a_dom: ["{1,2}", [1, 2]],
    a_f8: ["{NaN,Infinity,-Infinity,0.5}", ["NaN", "Infinity", "-Infinity", 0.5]],
    dom_arr: ['{x,"y z"}', ["x", "y z"]],
    addr: ["192.168.0.1/24", "192.168.0.1/24"],
    // The server's canonical text: [1,4] is printed as [1,5).
    rng: ["[1,4]", "[1,5)"],
    pr: ['(1,"a b")', '(1,"a b")']
  },
  {
    i2: ["32767", 32767],
    i4: ["-2147483648", -2147483648],
    i8: ["-9223372036854775808", "-9223372036854775808"],
    o: ["0", 0],
    f4: ["-Infinity", "-Infinity"],
    f8: ["NaN", "NaN"],
    f8b: ["Infinity", "Infinity"],
    num: ["NaN", "NaN"],
    num_scaled: ["0", "0.0000000000"],
    b: ["false", false],
    t: ["", ""],
    vc: ["", ""],
    bp: ["", "     "],
    nm: ["", ""],
    ci: ["", ""],
    tstz: ["infinity", "infinity"],
    ts: ["-infinity", "-infinity"],
    d: ["0044-03-15 BC", "-000043-03-15"],
    tm: ["00:00:00", "00:00:00"],
    tmtz: ["23:59:59.999999-05:30", "23:59:59.999999-05:30"],
    iv: ["-1 days -00:00:01", "P-1DT-1S"],
    js: ["[]", []],
    jsb: ['"just a string"', "just a string"],
    by: ["\\x", ""],
    mo: ["happy", "happy"],
    dom: ["1", 1],
    a_i4: ["{NULL}", [null]],
    a_text: ["{}", []],
    a_2d: ["[0:1][1:1]={{1},{2}}", [[1], [2]]]
  },
  {
    tstz: ["0044-03-15 12:00:00+00 BC", "-000043-03-15T12:00:00.000000Z"],
    ts: ["10000-01-01 00:00:00", "+010000-01-01T00:00:00.000000"],
    d: ["infinity", "infinity"],
    a_tstz: [`{"0001-01-01 00:00:00+00 BC"}`, ["+000000-01-01T00:00:00.000000Z"]]
  },
  {}
]

const names = columns.map(([name]) => name)

/** What the mapping must give for each row: every column, `null` where the row leaves it out. */
const expected = rows.map((row, index) => ({
  id: index + 1,
  ...Object.fromEntries(names.map((name) => [name, row[name] === undefined ? null : row[name]![1]]))
}))

/** Maps one row's values (in column order) with one decoder per column. */
const mapRow = (
  decoders: ReadonlyArray<(value: Values.ColumnValue) => unknown>,
  columnNames: ReadonlyArray<string>,
  values: ReadonlyArray<Pgoutput.Value>
) =>
  Values.attempt(() =>
    Object.fromEntries(
      decoders.map((decode, i) => {
        const value = values[i]!
        if (value === Pgoutput.UnchangedToast) throw new Error(`column ${columnNames[i]} is unchanged TOAST`)
        return [columnNames[i], decode(value)]
      })
    )
  )

layer(PostgresTestServer.layer())("Values on a real server", (it) => {
  it.effect("maps every type alike from a snapshot read and from the replication stream", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const session = yield* Session.make({ url: server.url })
      for (const statement of [
        "CREATE EXTENSION citext",
        `CREATE TYPE mood AS ENUM ('happy', 'sad', 'it''s "complicated"')`,
        "CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)",
        "CREATE DOMAIN tags AS text[]",
        "CREATE TYPE pair AS (a int, b text)",
        `CREATE TABLE everything (id int PRIMARY KEY, ${columns.map(([name, type]) => `${name} ${type}`).join(", ")})`,
        "CREATE PUBLICATION values_pub FOR TABLE everything"
      ]) {
        yield* session.query(statement)
      }
      const replication = yield* ReplicationClient.make({ url: server.url })
      const slot = yield* replication.createSlot("values_slot", { snapshot: "nothing" })

      // One transaction per row, each value sent as text for the server to parse into the column's type.
      for (const [index, row] of rows.entries()) {
        const given = names.filter((name) => row[name] !== undefined)
        yield* session.query(
          `INSERT INTO everything (id${given.map((name) => `, ${name}`).join("")}) VALUES ($1${given
            .map((_, i) => `, $${i + 2}`)
            .join("")})`,
          [String(index + 1), ...given.map((name) => row[name]![0])]
        )
      }

      // The table's description as the source reads it: column names and type OIDs from the catalog.
      const attributes = yield* session.query(
        `SELECT a.attname, a.atttypid::int8 AS typeoid, t.typname FROM pg_attribute a
         JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = 'everything'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`
      )
      const tableColumns = attributes.map((row) => ({
        name: String(row.attname),
        typeOid: Number(row.typeoid),
        typeName: String(row.typname)
      }))
      const catalog = yield* Values.loadTypes(
        session,
        tableColumns.map((column) => column.typeOid)
      )
      // Array element types and domain base types came along without being asked for.
      const posint = [...catalog.types.values()].find((type) => type.name === "posint")
      assert.strictEqual(posint?.kind, "d")
      assert.strictEqual(posint?.baseType, 23)
      const moodArray = [...catalog.types.values()].find((type) => type.name === "_mood")
      assert.strictEqual(catalog.types.get(moodArray!.element)?.kind, "e")
      const tags = [...catalog.types.values()].find((type) => type.name === "tags")
      assert.strictEqual(catalog.types.get(tags!.baseType)?.name, "_text")

      // (1) The snapshot path: a SELECT on a text-mode session.
      const decoders = tableColumns.map((column) =>
        Values.columnDecoder(catalog, column, { table: "public.everything", server: session.server })
      )
      const columnNames = tableColumns.map((column) => column.name)
      const selected = yield* session.query("SELECT * FROM everything ORDER BY id")
      const fromSnapshot = yield* Effect.forEach(selected, (row) =>
        mapRow(
          decoders,
          columnNames,
          columnNames.map((name) => row[name] ?? null)
        )
      )
      assert.deepStrictEqual(fromSnapshot, expected, "snapshot rows mapped")

      // (2) The stream path: pgoutput tuples, with decoders from the RELATION message's type OIDs.
      let commits = 0
      const events = yield* replication
        .stream({ slot: slot.slotName, startLsn: slot.consistentPoint, publications: ["values_pub"] })
        .pipe(
          Stream.takeUntil(
            (event) => event._tag === "Data" && event.message._tag === "Commit" && ++commits === rows.length
          ),
          Stream.runCollect
        )
      const messages = events.flatMap((event) => (event._tag === "Data" ? [event.message] : []))
      const relation = messages.find((message) => message._tag === "Relation")
      assert.isDefined(relation)
      assert.deepStrictEqual(
        relation!.columns.map((column) => [column.name, column.typeOid]),
        tableColumns.map((column) => [column.name, column.typeOid]),
        "pgoutput describes the columns with the catalog's type OIDs (a domain's own, not its base type's)"
      )
      const streamCatalog = yield* Values.loadTypes(
        session,
        relation!.columns.map((column) => column.typeOid),
        catalog
      )
      assert.strictEqual(streamCatalog, catalog, "nothing new to read")
      const streamDecoders = relation!.columns.map((column) => Values.columnDecoder(streamCatalog, column))
      const relationNames = relation!.columns.map((column) => column.name)
      const fromStream = yield* Effect.forEach(
        messages.flatMap((message) => (message._tag === "Insert" ? [message.new] : [])),
        (tuple) => mapRow(streamDecoders, relationNames, tuple)
      )
      assert.deepStrictEqual(fromStream, expected, "stream rows mapped")
      assert.deepStrictEqual(fromStream, fromSnapshot, "both paths give identical values")
      // Identical JSON too: every mapped value is JSON-safe (no NaN turned into null, no bigint thrown).
      assert.strictEqual(JSON.stringify(fromStream), JSON.stringify(expected))
    })
  )

  it.effect("fails with a typed error when a type OID is not in pg_type", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const session = yield* Session.make({ url: server.url })
      const error = yield* Effect.flip(Values.loadTypes(session, [23, 4000000000]))
      assert.strictEqual(error._tag, "PostgresProtocolError")
      assert.include(error.message, "4000000000")
      assert.include(error.message, session.server)
    })
  )

  it.effect("a value that does not fit its type on the server names the column, the type and the value", () =>
    Effect.gen(function* () {
      const server = yield* PostgresTestServer.PostgresTestServer
      const session = yield* Session.make({ url: server.url })
      yield* session.query("CREATE TYPE size AS ENUM ('s', 'm')")
      yield* session.query("CREATE DOMAIN small AS int4 CHECK (VALUE < 10)")
      const rows = yield* session.query(
        "SELECT 'small'::regtype::oid::int8 AS small, 'size[]'::regtype::oid::int8 AS sizes"
      )
      const small = Number(rows[0]!.small)
      const sizes = Number(rows[0]!.sizes)
      const catalog = yield* Values.loadTypes(session, [small, sizes])
      const decode = Values.columnDecoder(catalog, { name: "qty", typeOid: small }, { table: "public.orders" })
      const error = yield* Effect.flip(Values.attempt(() => decode("lots")))
      assert.strictEqual(error._tag, "PostgresValueError")
      assert.strictEqual(error.column, "qty")
      assert.strictEqual(error.typeName, "small (a domain over integer)")
      assert.strictEqual(error.excerpt, '"lots"')
      assert.include(error.message, 'column "qty" of public.orders')
      assert.deepStrictEqual(Values.decoderFor(catalog, sizes)("{s,m,NULL}"), ["s", "m", null])
    })
  )
})

/** The PostgresValueError a decoder throws, or a test failure when it returns. */
const failure = (evaluate: () => unknown): Values.PostgresValueError => {
  try {
    const value = evaluate()
    assert.fail(`expected a PostgresValueError, got ${JSON.stringify(value)}`)
  } catch (error) {
    if (error instanceof Values.PostgresValueError) return error
    throw error
  }
}

const builtin = (oid: number) => Values.decoderFor(Values.emptyCatalog, oid)

describe("Values: malformed values", () => {
  const cases: ReadonlyArray<readonly [oid: number, text: string, typeName: string, reason: string]> = [
    [23, "abc", "integer", "is not an integer"],
    [23, "", "integer", "is not an integer"],
    [23, "1.5", "integer", "is not an integer"],
    [21, " 1", "smallint", "is not an integer"],
    [26, "-1", "oid", "is not an unsigned integer"],
    [20, "9.5", "bigint", "is not an integer"],
    [701, "1,5", "double precision", "is not a floating-point number"],
    [701, "nan", "double precision", "is not a floating-point number"],
    [1700, "1e5", "numeric", "is not a decimal number"],
    [16, "true", "boolean", "is not t or f"],
    [2950, "not-a-uuid", "uuid", "is not a UUID"],
    [3802, "{bad", "jsonb", "is not JSON"],
    [114, "", "json", "is not JSON"],
    [17, "\\xzz", "bytea", "not a hex digit"],
    [17, "\\x0", "bytea", "is not \\x followed by hex digits"],
    [17, "0a0b", "bytea", "is not \\x followed by hex digits"],
    [1184, "2026-12-01 10:00:00+02", "timestamp with time zone", "has the UTC offset +02, not +00"],
    [1184, "2026-12-01 10:00:00", "timestamp with time zone", "has the UTC offset (none)"],
    [1184, "2026-12-01T10:00:00Z", "timestamp with time zone", "is not an ISO timestamp"],
    [1114, "2026-12-01 10:00:00+00", "timestamp without time zone", "has a UTC offset"],
    [1082, "12/01/2026", "date", "is not an ISO date"],
    [1083, "10:00", "time without time zone", "is not a time"],
    [1266, "10:00:00", "time with time zone", "is not a time with a UTC offset"],
    [1186, "1 day", "interval", "is not an ISO 8601 duration"],
    [1007, "{1,2", "integer[]", "is not an array literal"],
    [1007, "1,2", "integer[]", "is not an array literal: no {"],
    [1009, '{"a}', "text[]", "without its closing quote"]
  ]
  for (const [oid, text, typeName, reason] of cases) {
    it(`${typeName}: ${JSON.stringify(text)}`, () => {
      const error = failure(() => builtin(oid)(text))
      assert.strictEqual(error._tag, "PostgresValueError")
      assert.strictEqual(error.typeName, typeName)
      assert.strictEqual(error.excerpt, JSON.stringify(text))
      assert.include(error.reason, reason)
      assert.include(error.message, `type ${typeName}: ${JSON.stringify(text)}`)
    })
  }

  it("an element that does not fit names the array type, the element and its type", () => {
    const error = failure(() => builtin(1007)("{1,abc,3}"))
    assert.strictEqual(error.typeName, "integer[]")
    assert.strictEqual(error.excerpt, '"{1,abc,3}"')
    assert.include(error.reason, '"abc" that is not an integer (type integer)')
  })

  it("a long value is cut in the excerpt, with its length", () => {
    const text = "x".repeat(1000)
    const error = failure(() => builtin(23)(text))
    assert.strictEqual(error.excerpt, `"${"x".repeat(40)}"… (1000 characters)`)
    assert.isBelow(error.message.length, 500)
  })

  it("binary data, a type the catalog lacks, and the column in the message", () => {
    const decode = Values.columnDecoder(
      Values.emptyCatalog,
      { name: "payload", typeOid: 17 },
      { server: "db:5432/app" }
    )
    const binary = failure(() => decode(new Uint8Array([1, 2, 3])))
    assert.strictEqual(binary.column, "payload")
    assert.strictEqual(binary.excerpt, "3 bytes")
    assert.include(binary.reason, "binary form")
    assert.include(binary.message, 'column "payload" (PostgreSQL at db:5432/app): type bytea')
    assert.strictEqual(decode(null), null)
    assert.strictEqual(decode("\\x0102"), "AQI=")

    const unknown = failure(() => Values.columnDecoder(Values.emptyCatalog, { name: "c", typeOid: 99999 })("x"))
    assert.strictEqual(unknown.typeName, "OID 99999")
    assert.strictEqual(unknown.column, "c")
    assert.include(unknown.reason, "loadTypes")
  })

  it.effect("attempt: a bad value is the typed failure, any other throw a defect", () =>
    Effect.gen(function* () {
      const decode = builtin(23)
      assert.strictEqual(yield* Values.attempt(() => decode("7")), 7)
      const error = yield* Effect.flip(Values.attempt(() => decode("seven")))
      assert.strictEqual(error._tag, "PostgresValueError")
      const exit = yield* Effect.exit(
        Values.attempt(() => {
          throw new TypeError("a bug")
        })
      )
      assert.isTrue(Exit.hasDies(exit), "a bug is a defect, not a value error")
    })
  )
})

describe("Values: array literals", () => {
  const parse = (text: string) => Values.parseArray(text)

  it("elements, quoting, escapes, NULL and whitespace", () => {
    assert.deepStrictEqual(parse("{}"), [])
    assert.deepStrictEqual(parse(" { } "), [])
    assert.deepStrictEqual(parse("{a,b}"), ["a", "b"])
    assert.deepStrictEqual(parse(String.raw`{"a,b","c\"d","e\\f","{g}","",NULL,"NULL",null,nUlL,NULLx}`), [
      "a,b",
      'c"d',
      "e\\f",
      "{g}",
      "",
      null,
      "NULL",
      null,
      null,
      "NULLx"
    ])
    assert.deepStrictEqual(parse('{ a , b c ,\t"d" , " e " }'), ["a", "b c", "d", " e "])
    // Backslashes outside quotes escape too; an escaped character is kept even when it is a space or makes NULL.
    assert.deepStrictEqual(parse(String.raw`{a\,b,\NULL,c\ ,\"}`), ["a,b", "NULL", "c ", '"'])
    assert.deepStrictEqual(parse('{"\\\\x00"}'), ["\\x00"])
    assert.deepStrictEqual(parse("{ü,😀}"), ["ü", "😀"])
  })

  it("several dimensions and explicit bounds", () => {
    assert.deepStrictEqual(Values.parseArray("{{1,2},{3,4}}", Number), [
      [1, 2],
      [3, 4]
    ])
    assert.deepStrictEqual(parse("{{{a},{b}},{{c},{d}}}"), [
      [["a"], ["b"]],
      [["c"], ["d"]]
    ])
    assert.deepStrictEqual(parse("{{NULL,NULL}}"), [[null, null]])
    assert.deepStrictEqual(parse("[2:3]={1,2}"), ["1", "2"])
    assert.deepStrictEqual(parse("[-2:-1]={x,y}"), ["x", "y"])
    assert.deepStrictEqual(parse("[3]={a,b,c}"), ["a", "b", "c"])
    assert.deepStrictEqual(parse("[0:1][1:1]={{a},{b}}"), [["a"], ["b"]])
    assert.deepStrictEqual(parse(" [1:2] = {a,b}"), ["a", "b"])
  })

  it("the element type's delimiter, and the element decoder only for non-NULL elements", () => {
    assert.deepStrictEqual(Values.parseArray("{(1,1),(0,0);(3,3),(2,2)}", String, ";"), ["(1,1),(0,0)", "(3,3),(2,2)"])
    const seen: Array<string> = []
    const result = Values.parseArray(
      '{1,NULL,"3"}',
      (text) => {
        seen.push(text)
        return Number(text) * 10
      },
      ","
    )
    assert.deepStrictEqual(result, [10, null, 30])
    assert.deepStrictEqual(seen, ["1", "3"])
  })

  const malformed: ReadonlyArray<readonly [string, string]> = [
    ["", "no {"],
    ["x", "no {"],
    ["{", "an element without a closing }"],
    ["{a", "an element without a closing }"],
    ["{a,b", "an element without a closing }"],
    ["{a,,b}", "an empty element"],
    ["{,}", "an empty element"],
    ["{a}}", "text after the closing }"],
    ["{a} x", "text after the closing }"],
    ["{a}{b}", "text after the closing }"],
    ["{{a},b}", "an element where a sub-array was expected"],
    ["{a,{b}}", "a sub-array where an element was expected"],
    ["{{a},{{b}}}", "a sub-array where an element was expected"],
    ["{{a},{b,c}}", "sub-arrays of different lengths"],
    ["{{a,b},{c}}", "sub-arrays of different lengths"],
    ["{{}}", "an empty sub-array"],
    ['{"a}', "a quoted element without its closing quote"],
    ['{"a"b}', "b where , or } was expected"],
    ['{a"b}', 'an unexpected " in an unquoted element'],
    ["{a{b}", "an unexpected { in an unquoted element"],
    ["{a\\", "a backslash at the end"],
    ["[1:2]={a}", "dimensions [2] that do not match the elements"],
    ["[1:1][1:1]={a}", "dimensions [1][1] that do not match the elements"],
    ["[1:2]{a,b}", "dimensions not followed by ="],
    ["[1:x]={a}", "a dimension that is not [lower:upper]"],
    ["[1:2={a}", "a dimension without ]"],
    ["[1:2", "a dimension without ]"],
    ["[3:1]={}", "upper bound is below its lower bound"],
    ["{{{{{{{1}}}}}}}", "more than 6 dimensions"]
  ]
  for (const [text, reason] of malformed) {
    it(`rejects ${JSON.stringify(text)}`, () => {
      const error = failure(() => Values.parseArray(text, String, ",", "text[]"))
      assert.strictEqual(error.typeName, "text[]")
      assert.include(error.reason, "is not an array literal")
      assert.include(error.reason, reason)
    })
  }
})
