//! What the queries need beyond diesel's own DSL: a few of PostgreSQL's functions, and times
//! relative to the database's clock (`now()`), never the host's.

use diesel::dsl::{now, AsExprOf, IntervalDsl};
use diesel::expression::functions::declare_sql_function;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Oid, SingleValue, Text, Timestamptz};

#[declare_sql_function]
extern "SQL" {
    /// The first argument unless it is NULL, else the second.
    fn coalesce<T: SingleValue>(value: Nullable<T>, otherwise: T) -> T;
    /// The first argument unless it is NULL, else the second, either of them NULL.
    #[sql_name = "coalesce"]
    fn coalesce_nullable<T: SingleValue>(value: Nullable<T>, otherwise: Nullable<T>)
        -> Nullable<T>;
    /// The larger of two values.
    fn greatest<T: SingleValue>(a: T, b: T) -> T;
    /// The table (or other relation) of that name, NULL when there is none.
    fn to_regclass(name: Text) -> Nullable<Oid>;
    /// The text in lower case, as GitLab's index on `lower(routes.path)` matches paths.
    fn lower(text: Text) -> Text;
    /// The time truncated to `unit` (`second`, ...).
    fn date_trunc(unit: Text, at: Timestamptz) -> Timestamptz;
    /// Sets the sequence (its name converts to its `regclass`) to `value`.
    fn setval(sequence: Text, value: BigInt) -> BigInt;
    /// Whether this role has `privilege` on the table; NULL for a NULL table.
    fn has_table_privilege(table: Nullable<Oid>, privilege: Text) -> Nullable<Bool>;
    /// Whether the database is a standby (a replica or a Geo secondary).
    fn pg_is_in_recovery() -> Bool;
    /// Sets the session's (or, `is_local`, the transaction's) setting `name`.
    fn set_config(name: Text, value: Text, is_local: Bool) -> Text;
    /// A shared object's (a database's) comment.
    fn shobj_description(object: Oid, catalog: Text) -> Nullable<Text>;
    /// A row per element. Several in one select list run in step (PostgreSQL 10 on), as
    /// `UNNEST(a, b, ...)` in a FROM does: a batch of rows bound as an array a column.
    fn unnest<T: SingleValue>(array: Array<T>) -> T;
    /// The smaller of two values.
    fn least<T: SingleValue>(a: T, b: T) -> T;
}

/// The database's `now()`, as a `timestamptz`.
pub(crate) type Now = AsExprOf<now, Timestamptz>;

pub(crate) fn db_now() -> Now {
    now.into_sql::<Timestamptz>()
}

/// `now() - secs` seconds, by the database's clock.
pub(crate) fn ago(secs: f64) -> diesel::dsl::Sub<Now, PgInterval> {
    db_now() - secs.seconds()
}

/// `now() + secs` seconds, by the database's clock.
pub(crate) fn from_now(secs: f64) -> diesel::dsl::Add<Now, PgInterval> {
    db_now() + secs.seconds()
}
