/**
 * What the source knows of a published table, read from the catalog at start.
 *
 * @internal
 */

export interface ColumnInfo {
  readonly name: string
  readonly typeOid: number
  /** `pg_type.typname`, e.g. `int4`, `_text`, `mood` (an enum). */
  readonly typeName: string
  /**
   * A generated column (`GENERATED ALWAYS AS … STORED`). PostgreSQL 15's pgoutput leaves these out of RELATION and
   * row messages, while a snapshot's `SELECT` returns them.
   */
  readonly generated: boolean
}

export interface TableInfo {
  readonly schema: string
  readonly table: string
  /** `pg_class.oid`: pgoutput's relation id. */
  readonly oid: number
  /** `schema.table`, quoted for SQL. */
  readonly quoted: string
  /** Columns in attribute order (dropped ones left out). */
  readonly columns: ReadonlyArray<ColumnInfo>
  /** Primary-key columns in key order (empty without a primary key). */
  readonly primaryKey: ReadonlyArray<string>
  /** `pg_class.relreplident`: `d` default (the primary key), `f` full, `i` an index, `n` nothing. */
  readonly replicaIdentity: "d" | "f" | "i" | "n"
  /**
   * The columns an UPDATE's or DELETE's old key carries: the primary key for `d`, the identity index's columns (in
   * index order) for `i`, every column for `f`.
   */
  readonly identityColumns: ReadonlyArray<string>
}
