//! How the Scheduler lives through a registry outage: it reports the breaker's trips and
//! recoveries (one line each) and probes `GET /gitlab/v1/` until the registry answers. The
//! decisions themselves are the [`Breaker`](super::breaker::Breaker)'s.

use actix::prelude::*;

use super::breaker::Transition;
use super::{Phase, RunEnd, Scheduler};
use crate::registry::client::ApiProbe;
use crate::registry::NoGitlabApi;
use crate::work::Work;

impl<W: Work> Scheduler<W> {
    /// A project was analysed: the registry serves.
    pub(super) fn registry_served(&mut self, ctx: &mut Context<Self>) {
        let transition = self.outage.breaker.success();
        self.on_breaker(transition, ctx);
    }

    /// A project ended in trouble that may be the registry's as a whole.
    pub(super) fn registry_troubled(&mut self, reason: &str, ctx: &mut Context<Self>) {
        let transition = self.outage.breaker.trouble(reason);
        self.on_breaker(transition, ctx);
    }

    /// Logs a trip or a recovery (one line each) and schedules the next probe.
    fn on_breaker(&mut self, transition: Transition, ctx: &mut Context<Self>) {
        match transition {
            Transition::None => {}
            Transition::Opened { probe_in } => {
                let reason = self.outage.breaker.last_error().unwrap_or_default();
                if self.outage.reported_open {
                    tracing::debug!(%reason, ?probe_in, "registry still unavailable");
                } else {
                    self.outage.reported_open = true;
                    tracing::warn!(%reason, in_flight = self.in_flight(), "registry unavailable: dispatching stopped; probing until it answers");
                }
                ctx.run_later(probe_in, |act, ctx| act.probe(ctx));
            }
            Transition::Closed { after } => {
                self.outage.reported_open = false;
                tracing::info!(
                    outage_s = after.as_secs_f64(),
                    "registry available again: dispatching resumed"
                );
            }
        }
    }

    /// `GET /gitlab/v1/`: 200 or 401 means the registry is there to try one project.
    pub(super) fn probe(&mut self, ctx: &mut Context<Self>) {
        if !self.outage.breaker.probe_due() || self.phase == Phase::Finished {
            return;
        }
        let registry = self.registry.clone();
        let probe = async move { registry.probe().await };
        ctx.spawn(probe.into_actor(self).map(|answer, act, ctx| {
            if act.phase == Phase::Finished {
                return;
            }
            let answer = match answer {
                ApiProbe::Available(_) => {
                    act.outage.confirmed = true;
                    Ok(())
                }
                ApiProbe::Absent { status, location } => {
                    let absent = NoGitlabApi {
                        registry_url: act.registry.display_url(),
                        status,
                        location,
                    };
                    if !act.outage.confirmed && act.in_flight() == 0 {
                        // Nothing was ever dispatched: stop before anything is recorded.
                        tracing::error!(message = %absent, "the registry has no GitLab API");
                        act.phase = Phase::Finished;
                        act.finish(RunEnd::RegistryWithoutApi(absent));
                        return;
                    }
                    // It served us before: a proxy or a deploy in between; keep probing.
                    Err(absent.to_string())
                }
                ApiProbe::Unavailable(error) => Err(format!("probe of /gitlab/v1/: {error}")),
            };
            let transition = act.outage.breaker.probed(answer);
            act.on_breaker(transition, ctx);
            act.tick(ctx);
        }));
    }
}
