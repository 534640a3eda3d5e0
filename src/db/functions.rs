//! PostgreSQL functions the query builder calls, declared with the types the service uses them
//! with (diesel declares only a few of its own). Each renders as the plain call, `lower(x)`.

use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Nullable, Oid, SingleValue, Text, Timestamptz,
};

#[diesel::declare_sql_function]
extern "SQL" {
    /// `now()`: the transaction's start, as `timestamptz` (diesel's own `now` is typed
    /// `timestamp`, so `now + interval` would not fit a `timestamptz` column).
    fn now() -> Timestamptz;

    /// `lower(text)`, as GitLab's index on `lower(routes.path)` matches paths.
    fn lower(text: Text) -> Text;

    /// `coalesce(a, b)` of two timestamps, the second never NULL.
    #[sql_name = "coalesce"]
    fn coalesce_timestamptz(first: Nullable<Timestamptz>, then: Timestamptz) -> Timestamptz;

    /// `coalesce(a, b)` of two integers, the second never NULL.
    #[sql_name = "coalesce"]
    fn coalesce_integer(first: Nullable<Integer>, then: Integer) -> Integer;

    /// `date_trunc(unit, at)`.
    fn date_trunc(unit: Text, at: Timestamptz) -> Timestamptz;

    /// `greatest(a, b, c)` of three ids (NULLs ignored, as PostgreSQL's `greatest` does).
    fn greatest(a: Nullable<BigInt>, b: Nullable<BigInt>, c: BigInt) -> BigInt;

    /// `setval(sequence, value)`: the sequence's name converts to its `regclass`.
    fn setval(sequence: Text, value: BigInt) -> BigInt;

    /// `to_regclass(name)`: the relation's oid, NULL when there is none.
    fn to_regclass(name: Text) -> Nullable<Oid>;

    /// `has_table_privilege(table, privilege)` of this role; NULL for a NULL table.
    fn has_table_privilege(table: Nullable<Oid>, privilege: Text) -> Nullable<Bool>;

    /// `pg_is_in_recovery()`: a standby (a replica or a Geo secondary).
    fn pg_is_in_recovery() -> Bool;

    /// `set_config(name, value, is_local)`.
    fn set_config(name: Text, value: Text, is_local: Bool) -> Text;

    /// `shobj_description(oid, catalog)`: a shared object's comment.
    fn shobj_description(object: Oid, catalog: Text) -> Nullable<Text>;

    /// `unnest(array)`: a row per element. Several in one select list run in step (PostgreSQL
    /// 10 on), as `UNNEST(a, b, ...)` in a FROM does: a batch of rows bound as an array a column.
    fn unnest<ST: SingleValue>(array: Array<ST>) -> ST;
}

// `now() + interval`: a lease's expiry.
diesel::operator_allowed!(now_utils::now, Add, add);
