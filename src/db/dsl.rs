//! What the queries need beyond diesel's own DSL: a few of PostgreSQL's functions, and times
//! relative to the database's clock (`now()`), never the host's.

use diesel::dsl::{now, AsExprOf, IntervalDsl};
use diesel::expression::functions::declare_sql_function;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, SingleValue, Text, Timestamptz};

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
    /// The smaller of two values.
    fn least<T: SingleValue>(a: T, b: T) -> T;
    /// The table (or other relation) of that name, NULL when there is none.
    fn to_regclass(name: Text) -> Nullable<Oid>;
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
