//! The watermark: per shard, an id through which every project has a tracking row. Passes start
//! there rather than at id 0, so a restart with millions of projects analysed dispatches at once.
//! It only ever moves up, and only when the database shows every project below it has a row;
//! GitLab hands out project ids in increasing order, so no new project appears below it.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;

use super::tracking::ANSWERED_SQL;
use super::{Database, DbError};
use crate::config::Shard;

/// Ids probed per step when moving the watermark up.
const STEP: i64 = 100_000;
/// Steps per call: bounds the database time one call may take.
const STEPS_PER_CALL: usize = 20;

#[derive(diesel::QueryableByName)]
struct Value {
    #[diesel(sql_type = Nullable<BigInt>)]
    value: Option<i64>,
}

/// The stored watermark of `shard` (0 when there is none).
pub async fn load(db: &Database, shard: Shard) -> Result<i64, DbError> {
    let mut conn = db.conn().await?;
    let row: Option<Value> = diesel::sql_query(
        "SELECT analysed_through AS value FROM registry_repair_watermarks WHERE shard = $1",
    )
    .bind::<Text, _>(shard.to_string())
    .get_result(&mut conn)
    .await
    .map(Some)
    .or_else(|e| match e {
        diesel::result::Error::NotFound => Ok(None),
        e => Err(e),
    })
    .map_err(DbError::query("reading the watermark"))?;
    Ok(row.and_then(|r| r.value).unwrap_or(0))
}

/// Moves the watermark of `shard` up from `from` as far as every project has a row (at most
/// `STEPS_PER_CALL` steps), stores it, and returns it.
pub async fn advance(db: &Database, shard: Shard, from: i64) -> Result<i64, DbError> {
    let mut conn = db.conn().await?;
    let max: Value = diesel::sql_query("SELECT max(id) AS value FROM projects")
        .get_result(&mut conn)
        .await
        .map_err(DbError::query("reading the highest project id"))?;
    let max = max.value.unwrap_or(0);
    let mut through = from;
    for _ in 0..STEPS_PER_CALL {
        if through >= max {
            break;
        }
        let upper = (through + STEP).min(max);
        let hole: Value = diesel::sql_query(format!(
            "SELECT min(p.id) AS value FROM projects p \
             WHERE p.id > $1 AND p.id <= $2 AND {} \
             AND NOT EXISTS (SELECT 1 FROM container_registry_data_repair_details \
                             WHERE project_id = p.id AND project_id > $1 AND project_id <= $2 \
                               AND {})",
            in_shard_sql(shard),
            ANSWERED_SQL
        ))
        .bind::<BigInt, _>(through)
        .bind::<BigInt, _>(upper)
        .get_result(&mut conn)
        .await
        .map_err(DbError::query(format!(
            "looking for unanalysed projects between ids {through} and {upper}"
        )))?;
        match hole.value {
            Some(first_unanalysed) => {
                through = first_unanalysed - 1;
                break;
            }
            None => through = upper,
        }
    }
    if through > from {
        diesel::sql_query(
            "INSERT INTO registry_repair_watermarks (shard, analysed_through, updated_at) \
             VALUES ($1, $2, now()) \
             ON CONFLICT (shard) DO UPDATE \
             SET analysed_through = GREATEST(registry_repair_watermarks.analysed_through, EXCLUDED.analysed_through), \
                 updated_at = now()",
        )
        .bind::<Text, _>(shard.to_string())
        .bind::<BigInt, _>(through)
        .execute(&mut conn)
        .await
        .map_err(DbError::query("storing the watermark"))?;
    }
    Ok(through.max(from))
}

/// Forgets the watermark of `shard` (`run --from-start`).
pub async fn reset(db: &Database, shard: Shard) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    diesel::sql_query("DELETE FROM registry_repair_watermarks WHERE shard = $1")
        .bind::<Text, _>(shard.to_string())
        .execute(&mut conn)
        .await
        .map_err(DbError::query("resetting the watermark"))?;
    Ok(())
}

fn in_shard_sql(shard: Shard) -> String {
    if shard.count <= 1 {
        "TRUE".into()
    } else {
        format!("p.id % {} = {}", shard.count, shard.index)
    }
}
