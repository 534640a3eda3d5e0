//! The Scheduler as a member of the fleet: the share of the fleet's concurrency it may use
//! ([`SetShare`]), the fleet's switches written by another member ([`AdoptSwitches`]), what the
//! heartbeat reports ([`FleetReport`]), and the event it emits when this instance is told a new
//! concurrency or flag ([`SwitchesChanged`]), so that the fleet shares it. The Fleet actor sends
//! the first three; it receives the last through a `Recipient`, so this module knows nothing of
//! it.

use actix::prelude::*;

use super::{Phase, Scheduler, ServiceState};

/// This instance's share of the fleet's concurrency: at most this many projects in flight,
/// whatever the limit (the fleet's total).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetShare(pub usize);

impl Handler<SetShare> for Scheduler {
    type Result = ();

    fn handle(&mut self, SetShare(share): SetShare, ctx: &mut Context<Self>) {
        if self.share != Some(share) {
            tracing::debug!(from = ?self.share, to = share, "share of the fleet's concurrency changed");
            self.share = Some(share);
        }
        self.tick(ctx);
    }
}

/// A heartbeat confirmed this instance as a member of the fleet (its fence is open again): act
/// on what waited for it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct MembershipConfirmed;

impl Handler<MembershipConfirmed> for Scheduler {
    type Result = ();

    fn handle(&mut self, _msg: MembershipConfirmed, ctx: &mut Context<Self>) {
        self.tick(ctx);
    }
}

/// The fleet's switches, as another member wrote them (`concurrency`, `pause`, `resume` sent to
/// it): taken as they are, not emitted again.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct AdoptSwitches {
    pub limit: usize,
    pub enabled: bool,
}

impl Handler<AdoptSwitches> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AdoptSwitches, ctx: &mut Context<Self>) {
        if msg.limit != self.config.limit || msg.enabled != self.config.enabled {
            tracing::info!(
                max_concurrency = msg.limit,
                enabled = msg.enabled,
                "the fleet's switches changed"
            );
        }
        self.config.limit = msg.limit;
        self.config.enabled = msg.enabled;
        self.tick(ctx);
    }
}

/// This instance was told a new concurrency or feature flag (the admin API, or GitLab's switches):
/// the fleet's total and flag, for the Fleet actor to share.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SwitchesChanged {
    pub limit: usize,
    pub enabled: bool,
}

/// What the heartbeat reports of this instance.
#[derive(Debug, Clone)]
pub struct MemberReport {
    /// The fleet's total as this instance has it.
    pub limit: usize,
    pub enabled: bool,
    pub in_flight: usize,
    /// It has projects queued or in flight, or is still reading its part of a pass.
    pub wants_work: bool,
    pub state: ServiceState,
    pub analysed: u64,
}

#[derive(Message)]
#[rtype(result = "MemberReport")]
pub struct FleetReport;

impl Handler<FleetReport> for Scheduler {
    type Result = MessageResult<FleetReport>;

    fn handle(&mut self, _msg: FleetReport, _ctx: &mut Context<Self>) -> Self::Result {
        let in_flight = self.in_flight();
        MessageResult(MemberReport {
            limit: self.config.limit,
            enabled: self.config.enabled,
            in_flight,
            wants_work: self.phase == Phase::Running
                && (in_flight > 0 || !self.queue.is_empty() || !self.source.pass_read()),
            state: self.state(),
            analysed: self.accounting.status().analysed,
        })
    }
}

impl Scheduler {
    /// At most this many in flight: the limit, and this instance's share of it in a fleet.
    pub(super) fn effective_limit(&self) -> usize {
        self.share
            .map_or(self.config.limit, |share| share.min(self.config.limit))
    }

    /// Tells the fleet what this instance was told.
    pub(super) fn switches_changed(&self) {
        if let Some(listener) = &self.switches_listener {
            listener.do_send(SwitchesChanged {
                limit: self.config.limit,
                enabled: self.config.enabled,
            });
        }
    }
}
