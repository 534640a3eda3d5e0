//! SIGTERM and SIGINT for the commands that run the pipeline (`run`, `repair plan`, `repair
//! apply`): the first asks the Scheduler to drain, the second to stop waiting for in-flight
//! projects. Listening starts before anything else, so that no signal finds its default
//! (killing) action.

use crate::scheduler::{SchedulerAddr, Shutdown};

/// SIGTERM and SIGINT, caught from the moment `listen` returns.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal's name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// From now on, the first signal drains `scheduler` and the second stops its waiting.
    pub fn forward_to(mut self, scheduler: SchedulerAddr) {
        actix_rt::spawn(async move {
            let name = self.next().await;
            tracing::info!(signal = name, "signal received; shutting down");
            scheduler.do_send(Shutdown::Graceful);
            let name = self.next().await;
            tracing::warn!(
                signal = name,
                "second signal: not waiting for in-flight projects; flushing and exiting"
            );
            scheduler.do_send(Shutdown::Now);
        });
    }
}
