//! Small holes closed: a Writer that panics anywhere (not only where the old fault was injected)
//! is restarted with every row.

mod common;

use std::time::Duration;

use common::process::busy_world;
use common::{assert_rows_match, eventually, TestApp};
use registry_repair::db::tracking::{Status, TrackingRow};
use registry_repair::faults::WriterStep;
use registry_repair::scheduler::RunEnd;
use registry_repair::writer::{GetWriterStats, Record};

// ---------------------------------------------------------------------------------------------
// The Writer
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_writer_panic_in_any_handler_restarts_it_and_every_row_lands() {
    for step in [WriterStep::Timer, WriterStep::Flush, WriterStep::WriteDone] {
        // Each project costs one List request: a row lost in the restart would be found missing
        // by the next pass and asked for again.
        let world = busy_world(40);
        let mut app = TestApp::prepare(&world).await;
        app.faults.panic_writer_once_at(step);
        app.start(true).await;
        let writer = app.service().writer.clone();
        assert_eq!(app.run_to_end().await, RunEnd::Done, "{step:?}");
        assert_rows_match(&world, &app.db).await;
        assert_eq!(
            app.registry.stats().list_requests,
            40,
            "{step:?}: nothing lost, so nothing asked twice"
        );
        let stats = writer
            .send(GetWriterStats)
            .await
            .expect("the writer answers");
        assert_eq!(stats.restarts, 1, "{step:?}: the panic happened: {stats:?}");
    }
}

#[actix_rt::test]
async fn the_rows_of_a_failed_write_survive_a_panic_as_it_ends() {
    let world = busy_world(12);
    let mut app = TestApp::prepare(&world).await;
    // Nothing is analysed: the rows come from the test.
    app.settings.worker.enabled = false;
    app.settings.database.connect_timeout_ms = 300;
    app.start(false).await;
    let writer = app.service().writer.clone();
    app.db.refuse_connections().await;
    app.faults.panic_writer_once_at(WriterStep::WriteDone);
    for project in &world.projects {
        writer.do_send(Record(TrackingRow {
            project_id: project.id,
            missing_count: 7,
            status: Status::Completed,
        }));
    }
    // The write fails (the database is away) and the Writer panics taking in that failure: the
    // rows were in neither the buffer nor the database, only in the write under way.
    let w = &writer;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            w.send(GetWriterStats).await.is_ok_and(|s| s.restarts == 1)
        })
        .await,
        "the Writer panics and is restarted"
    );
    let stats = writer.send(GetWriterStats).await.expect("stats");
    assert_eq!(stats.rows_written, 0, "{stats:?}");
    assert_eq!(stats.buffered, 12, "the rows are held again: {stats:?}");
    app.db.allow_connections().await;
    assert!(app.db.wait_for_rows(12, Duration::from_secs(30)).await);
    let rows = app.db.rows().await;
    assert!(rows.iter().all(|r| r.missing_count == 7), "{rows:?}");
    assert_eq!(app.stop().await, RunEnd::Stopped);
}
