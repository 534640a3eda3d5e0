//! The Writer: flushes on size, on its timer, at once on a failed project, on request; keeps its
//! buffer while the database is away and tells the Scheduler to hold back while it is full.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::{eventually, TestDb};
use registry_repair::db::tracking::{Status, TrackingRow};
use registry_repair::demo::seed::World;
use registry_repair::writer::{
    Flush, GetWriterStats, Record, SetPressureListener, Writer, WriterPressure,
};

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

fn row(project_id: i64, missing_count: i32, status: Status) -> Record {
    Record(TrackingRow {
        project_id,
        missing_count,
        status,
    })
}

async fn count(db: &TestDb) -> usize {
    db.rows().await.len()
}

#[actix_rt::test]
async fn flushes_when_the_buffer_reaches_the_batch_size() {
    let (db, ids) = db_with_projects(5).await;
    let writer = Writer::new(db.database(), 3, HOUR).start();
    writer.do_send(row(ids[0], 1, Status::Completed));
    writer.do_send(row(ids[1], 2, Status::Completed));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(&db).await,
        0,
        "below the batch size nothing is written"
    );
    writer.do_send(row(ids[2], 3, Status::Completed));
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
    let writer = Writer::new(db.database(), 100, Duration::from_millis(100)).start();
    writer.do_send(row(ids[0], 0, Status::Completed));
    writer.do_send(row(ids[1], 4, Status::Completed));
    assert!(eventually(Duration::from_secs(5), || async { count(&db).await == 2 }).await);
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert!(stats.flushes_timer >= 1);
    assert_eq!(stats.flushes_size, 0);
}

#[actix_rt::test]
async fn a_failed_project_flushes_everything_at_once() {
    let (db, ids) = db_with_projects(3).await;
    let writer = Writer::new(db.database(), 100, HOUR).start();
    writer.do_send(row(ids[0], 2, Status::Completed));
    writer.do_send(row(ids[1], 0, Status::Completed));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&db).await, 0);
    writer.do_send(row(ids[2], 0, Status::Failed));
    assert!(eventually(Duration::from_secs(5), || async { count(&db).await == 3 }).await);
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert_eq!(stats.flushes_failure, 1);
    let failed: Vec<i64> = db
        .rows()
        .await
        .into_iter()
        .filter(|r| r.status == Status::Failed)
        .map(|r| r.project_id)
        .collect();
    assert_eq!(failed, vec![ids[2]]);
}

#[actix_rt::test]
async fn flush_on_request_writes_everything_and_answers_the_count() {
    let (db, ids) = db_with_projects(7).await;
    let writer = Writer::new(db.database(), 3, HOUR).start();
    for id in &ids[..2] {
        writer.do_send(row(*id, 1, Status::Completed));
    }
    let written = writer.send(Flush::PASS_END).await.expect("mailbox");
    assert_eq!(written, Ok(2));
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
    let writer = Writer::new(db.database(), 4, Duration::from_millis(100)).start();
    let log = Arc::new(Mutex::new(Vec::new()));
    let listener = PressureLog(log.clone()).start();
    writer.do_send(SetPressureListener(listener.recipient()));
    for id in &ids {
        writer.do_send(row(*id, 1, Status::Completed));
    }
    let flushed = writer.send(Flush::PASS_END).await.expect("mailbox");
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
