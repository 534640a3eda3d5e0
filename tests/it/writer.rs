//! The Writer: flushes on size, on its timer, at once on a failed project, on request; keeps its
//! buffer while the database is away and tells the Scheduler to hold back while it is full; a
//! failed project's cause and reason written with its row, and replaced or kept with it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{eventually, TestDb};
use actix::prelude::*;
use registry_repair::analysis::Tracking;
use registry_repair::db::failures::{Failure, FailureCause};
use registry_repair::db::tracking::{self, Replaces, TrackingRow, TrackingStatus};
use registry_repair::demo::seed::World;
use registry_repair::writer::{Flush, GetWriterStats, Record, Writer, WriterPressure};

const HOUR: Duration = Duration::from_secs(3600);

/// A database holding `n` projects with ids 2..=n+1 (the group takes id 1).
async fn db_with_projects(n: usize) -> (TestDb, Vec<i64>) {
    let db = TestDb::new().await;
    let ids = seed(&db, n).await;
    (db, ids)
}

async fn seed(db: &TestDb, n: usize) -> Vec<i64> {
    let mut w = World::new();
    let g = w.group(None, "G");
    let ids = (0..n)
        .map(|i| w.project(g, &format!("P{i}"), &[], &[]))
        .collect();
    w.insert(&db.database()).await.expect("seed");
    ids
}

fn row(project_id: i64, missing_count: i32, status: TrackingStatus) -> Record<TrackingRow> {
    Record(match status {
        TrackingStatus::Failed => TrackingRow::failed(
            project_id,
            Failure::new(FailureCause::Troubled, "the registry answered 500"),
        ),
        _ => TrackingRow::completed(project_id, missing_count),
    })
}

async fn count(db: &TestDb) -> usize {
    db.rows().await.len()
}

#[actix_rt::test]
async fn flushes_when_the_buffer_reaches_the_batch_size() {
    let (db, ids) = db_with_projects(5).await;
    let writer = Writer::new(Tracking::new(db.database()), 3, HOUR).start();
    writer.do_send(row(ids[0], 1, TrackingStatus::Completed));
    writer.do_send(row(ids[1], 2, TrackingStatus::Completed));
    // Messages are handled in order: once it answers, both rows are in and no write started.
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert_eq!(
        (stats.buffered, stats.flushes_size, stats.flushes_timer),
        (2, 0, 0),
        "below the batch size nothing is written"
    );
    assert_eq!(count(&db).await, 0);
    writer.do_send(row(ids[2], 3, TrackingStatus::Completed));
    assert!(eventually(Duration::from_secs(5), || async { count(&db).await == 3 }).await);
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert_eq!((stats.flushes_size, stats.flushes_timer), (1, 0));
    let rows = db.rows().await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.project_id, r.missing_count))
            .collect::<Vec<_>>(),
        vec![(ids[0], 1), (ids[1], 2), (ids[2], 3)]
    );
}

#[actix_rt::test]
async fn flushes_on_its_timer() {
    let (db, ids) = db_with_projects(2).await;
    let writer = Writer::new(
        Tracking::new(db.database()),
        100,
        Duration::from_millis(100),
    )
    .start();
    writer.do_send(row(ids[0], 0, TrackingStatus::Completed));
    writer.do_send(row(ids[1], 4, TrackingStatus::Completed));
    assert!(eventually(Duration::from_secs(5), || async { count(&db).await == 2 }).await);
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert!(stats.flushes_timer >= 1);
    assert_eq!(stats.flushes_size, 0);
}

#[actix_rt::test]
async fn a_failed_project_flushes_everything_at_once() {
    let (db, ids) = db_with_projects(3).await;
    let writer = Writer::new(Tracking::new(db.database()), 100, HOUR).start();
    writer.do_send(row(ids[0], 2, TrackingStatus::Completed));
    writer.do_send(row(ids[1], 0, TrackingStatus::Completed));
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert_eq!(
        (stats.buffered, stats.flushes_size, stats.flushes_failure),
        (2, 0, 0),
        "completed projects wait for the batch or the timer"
    );
    assert_eq!(count(&db).await, 0);
    writer.do_send(row(ids[2], 0, TrackingStatus::Failed));
    assert!(eventually(Duration::from_secs(5), || async { count(&db).await == 3 }).await);
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert_eq!(stats.flushes_failure, 1);
    let failed: Vec<i64> = db
        .rows()
        .await
        .into_iter()
        .filter(|r| r.status == TrackingStatus::Failed)
        .map(|r| r.project_id)
        .collect();
    assert_eq!(failed, vec![ids[2]]);
}

#[actix_rt::test]
async fn flush_on_request_writes_everything_and_answers_the_count() {
    let (db, ids) = db_with_projects(7).await;
    let writer = Writer::new(Tracking::new(db.database()), 3, HOUR).start();
    for id in &ids[..2] {
        writer.do_send(row(*id, 1, TrackingStatus::Completed));
    }
    let written = writer.send(Flush::PassEnd).await.expect("mailbox");
    assert_eq!(written.ok(), Some(2));
    assert_eq!(count(&db).await, 2);
}

#[derive(Default)]
struct PressureLog(Arc<Mutex<Vec<bool>>>);

impl Actor for PressureLog {
    type Context = Context<Self>;
}

impl Handler<WriterPressure> for PressureLog {
    type Result = ();
    fn handle(&mut self, msg: WriterPressure, _ctx: &mut Context<Self>) {
        self.0.lock().expect("log").push(msg.full);
    }
}

#[actix_rt::test]
async fn while_the_database_is_away_the_buffer_is_kept_and_reported_full_then_written_when_it_returns(
) {
    // The database refuses connections before the Writer first connects. (Creating it only
    // later raced: a retry between its creation and its seeding rightly skipped the rows of
    // projects that did not exist, as it skips projects deleted during a run.)
    let (db, ids) = db_with_projects(70).await;
    db.refuse_connections().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let listener = PressureLog(log.clone()).start();
    let writer = Writer::new(Tracking::new(db.database()), 4, Duration::from_millis(100))
        .reporting_pressure_to(listener.recipient())
        .start();
    for id in &ids {
        writer.do_send(row(*id, 1, TrackingStatus::Completed));
    }
    let flushed = writer.send(Flush::PassEnd).await.expect("mailbox");
    assert!(flushed.is_err(), "no database: {flushed:?}");
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert_eq!(stats.buffered, 70, "nothing is dropped");
    assert!(stats.failed_writes >= 1);
    assert!(stats.full);
    assert_eq!(log.lock().expect("log").first(), Some(&true));

    db.allow_connections().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            db.database().conn().await.is_ok() && count(&db).await == 70
        })
        .await,
        "the kept rows are written once the database is back"
    );
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert_eq!(stats.buffered, 0);
    assert!(!stats.full);
    assert_eq!(log.lock().expect("log").last(), Some(&false));
}

#[actix_rt::test]
async fn rows_already_there_stay_except_stale_ongoing_ones_and_failed_ones_a_retry_replaces() {
    let (db, ids) = db_with_projects(7).await;
    // What GitLab's own worker (or an earlier run) left.
    db.execute(&format!(
        "INSERT INTO container_registry_data_repair_details (project_id, missing_count, status, created_at, updated_at) VALUES \
         ({a}, 7, 1, now(), now()), \
         ({b}, 0, 2, now(), now()), \
         ({c}, 0, 2, now(), now()), \
         ({d}, 0, 0, now() - interval '3 hours', now() - interval '3 hours'), \
         ({e}, 0, 0, now() - interval '10 minutes', now() - interval '10 minutes')",
        a = ids[0],
        b = ids[1],
        c = ids[2],
        d = ids[3],
        e = ids[4],
    ))
    .await;
    let rows = [
        TrackingRow::completed(ids[0], 1),
        TrackingRow::completed(ids[1], 2),
        TrackingRow::completed(ids[2], 3).replacing(Replaces::Failed),
        TrackingRow::completed(ids[3], 4),
        TrackingRow::completed(ids[4], 5),
        TrackingRow::completed(ids[5], 6),
        // A retry's result where the row is no longer failed: left alone too.
        TrackingRow::completed(ids[0], 9).replacing(Replaces::Failed),
    ];
    tracking::upsert(&db.database(), &rows[..6])
        .await
        .expect("upsert");
    tracking::upsert(&db.database(), &rows[6..])
        .await
        .expect("upsert");
    let got: Vec<(i64, TrackingStatus, i32)> = db
        .rows()
        .await
        .into_iter()
        .map(|r| (r.project_id, r.status, r.missing_count))
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[0], TrackingStatus::Completed, 7), // GitLab's answer stays
            (ids[1], TrackingStatus::Failed, 0),    // failed stays, but for a retry
            (ids[2], TrackingStatus::Completed, 3), // the retry replaces it
            (ids[3], TrackingStatus::Completed, 4), // a stale ongoing row is no answer
            (ids[4], TrackingStatus::Ongoing, 0),   // a young one may be GitLab's worker at work
            (ids[5], TrackingStatus::Completed, 6), // a new row
        ]
    );
}

fn failed(project_id: i64, cause: FailureCause, reason: &str) -> TrackingRow {
    TrackingRow::failed(project_id, Failure::new(cause, reason))
}

/// `(project_id, status, cause)` of every row, the cause as recorded for a failed one.
async fn statuses(db: &TestDb) -> Vec<(i64, TrackingStatus, Option<(FailureCause, String)>)> {
    db.rows()
        .await
        .into_iter()
        .map(|r| {
            (
                r.project_id,
                r.status,
                r.failure.map(|f| (f.cause, f.reason)),
            )
        })
        .collect()
}

#[actix_rt::test]
async fn a_failed_projects_cause_and_reason_are_written_with_its_row_and_go_or_stay_with_it() {
    let (db, ids) = db_with_projects(6).await;
    // GitLab's own worker's failed row: no reason recorded.
    db.execute(&format!(
        "INSERT INTO container_registry_data_repair_details \
             (project_id, missing_count, status, created_at, updated_at) \
         VALUES ({}, 0, 2, now(), now())",
        ids[2]
    ))
    .await;

    // Through the Writer: a failed project flushes at once, its reason with it.
    let writer = Writer::new(Tracking::new(db.database()), 100, HOUR).start();
    writer.do_send(Record(failed(
        ids[0],
        FailureCause::NoRoute,
        "the project has no route, so no registry path",
    )));
    writer.do_send(Record(TrackingRow::completed(ids[1], 2)));
    writer.do_send(Record(failed(
        ids[3],
        FailureCause::HostileAnswer,
        "listing g/p3: the registry listed \"g/p3/x <b>\\n\"",
    )));
    let written = writer.send(Flush::PassEnd).await.expect("mailbox");
    assert_eq!(written.ok(), Some(3));
    let no_route = (
        FailureCause::NoRoute,
        "the project has no route, so no registry path".to_string(),
    );
    let hostile = (
        FailureCause::HostileAnswer,
        "listing g/p3: the registry listed \"g/p3/x <b>\\n\"".to_string(),
    );
    let written_first = vec![
        (ids[0], TrackingStatus::Failed, Some(no_route.clone())),
        (ids[1], TrackingStatus::Completed, None),
        (ids[2], TrackingStatus::Failed, None),
        (ids[3], TrackingStatus::Failed, Some(hostile.clone())),
    ];
    assert_eq!(statuses(&db).await, written_first);

    // Rows left as they are keep their own: GitLab's failed row without a reason, and a failed
    // row of ours; a completed one gains none; a project deleted meanwhile gets nothing.
    tracking::upsert(
        &db.database(),
        &[
            failed(
                ids[0],
                FailureCause::Crashed,
                "analysing it panicked 3 times",
            ),
            failed(ids[1], FailureCause::Troubled, "answered 500"),
            failed(ids[2], FailureCause::Refused, "answered 403"),
            failed(999_999, FailureCause::NoRoute, "deleted meanwhile"),
        ],
    )
    .await
    .expect("upsert");
    assert_eq!(statuses(&db).await, written_first);

    // A retry (`--retry-failed`): one that completes takes the reason away with the failed row;
    // one that fails again replaces it; GitLab's row failing again gets one.
    tracking::upsert(
        &db.database(),
        &[
            TrackingRow::completed(ids[3], 1).replacing(Replaces::Failed),
            failed(
                ids[0],
                FailureCause::Crashed,
                "analysing it panicked 3 times",
            )
            .replacing(Replaces::Failed),
            failed(ids[2], FailureCause::TooManyPages, "more than 10000 pages")
                .replacing(Replaces::Failed),
            // A project itemised again that fails keeps its count, and gains no reason.
            failed(ids[1], FailureCause::Troubled, "answered 500").replacing(Replaces::Uncounted),
        ],
    )
    .await
    .expect("upsert");
    assert_eq!(
        statuses(&db).await,
        vec![
            (
                ids[0],
                TrackingStatus::Failed,
                Some((
                    FailureCause::Crashed,
                    "analysing it panicked 3 times".into()
                ))
            ),
            (ids[1], TrackingStatus::Completed, None),
            (
                ids[2],
                TrackingStatus::Failed,
                Some((FailureCause::TooManyPages, "more than 10000 pages".into()))
            ),
            (ids[3], TrackingStatus::Completed, None),
        ]
    );
    // Nothing left behind for a row that is no longer failed.
    let recorded: Vec<i64> = db.failure_rows().await.into_iter().map(|f| f.0).collect();
    assert_eq!(recorded, vec![ids[0], ids[2]]);
}

#[actix_rt::test]
async fn a_failed_row_and_its_reason_are_written_together_or_not_at_all() {
    let (db, ids) = db_with_projects(2).await;
    // The reason cannot be written: the whole write fails, the tracking row with it.
    db.execute(
        "ALTER TABLE registry_repair_failures ADD CONSTRAINT short CHECK (length(reason) < 5)",
    )
    .await;
    let result = tracking::upsert(
        &db.database(),
        &[
            TrackingRow::completed(ids[0], 1),
            failed(ids[1], FailureCause::Troubled, "answered 500"),
        ],
    )
    .await;
    let error = result.expect_err("the reason breaks the constraint");
    assert!(
        error
            .to_string()
            .contains("recording why 1 projects failed"),
        "{error}"
    );
    assert!(db.rows().await.is_empty(), "nothing written");
    db.execute("ALTER TABLE registry_repair_failures DROP CONSTRAINT short")
        .await;
    tracking::upsert(
        &db.database(),
        &[failed(ids[1], FailureCause::Troubled, "answered 500")],
    )
    .await
    .expect("upsert");
    assert_eq!(db.failure_rows().await.len(), 1);
}
