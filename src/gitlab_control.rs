//! Following GitLab's own switches (`control.source = "gitlab"`): every `control.poll_interval_ms`
//! the application setting and the feature flag are read, and what changed becomes the same
//! Scheduler message the admin API sends.

use std::time::Duration;

use actix::prelude::*;

use crate::db::switches::{self, GitlabSwitches};
use crate::db::Database;
use crate::scheduler::{SchedulerAddr, SetConcurrency, SetEnabled};

pub struct GitlabControl {
    db: Database,
    scheduler: SchedulerAddr,
    interval: Duration,
    /// What GitLab said last; the Scheduler was started with it.
    last: GitlabSwitches,
    reading: bool,
}

impl GitlabControl {
    pub fn new(
        db: Database,
        scheduler: SchedulerAddr,
        interval: Duration,
        initial: GitlabSwitches,
    ) -> Self {
        Self {
            db,
            scheduler,
            interval,
            last: initial,
            reading: false,
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.reading {
            return;
        }
        self.reading = true;
        let db = self.db.clone();
        let read = async move { switches::read(&db).await };
        ctx.spawn(read.into_actor(self).map(|result, act, _ctx| {
            act.reading = false;
            match result {
                Ok(now) => act.apply(now),
                Err(error) => {
                    tracing::warn!(%error, "reading GitLab's switches failed; keeping the current ones")
                }
            }
        }));
    }

    fn apply(&mut self, now: GitlabSwitches) {
        if now.max_concurrency != self.last.max_concurrency {
            if let Some(limit) = now.max_concurrency.and_then(|c| usize::try_from(c).ok()) {
                tracing::info!(
                    setting = switches::SETTING,
                    value = limit,
                    "GitLab's max concurrency changed"
                );
                self.scheduler.do_send(SetConcurrency(limit));
            }
        }
        if now.enabled != self.last.enabled {
            tracing::info!(
                feature_flag = switches::FEATURE_FLAG,
                enabled = now.enabled,
                "GitLab's feature flag switched"
            );
            self.scheduler.do_send(SetEnabled(now.enabled));
        }
        self.last = now;
    }
}

impl Actor for GitlabControl {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, ctx| act.poll(ctx));
    }
}
