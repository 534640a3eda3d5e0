//! The Scheduler as a member of the fleet: the share of the fleet's concurrency it may use
//! ([`SetShare`]), the fleet's switches written by another member ([`AdoptSwitches`]), what the
//! heartbeat reports ([`FleetReport`]), and the event it emits when this instance is told a new
//! concurrency or flag ([`SwitchesChanged`]), so that the fleet shares it. The Fleet actor sends
//! the first three; it receives the last through a `Recipient`, so this module knows nothing of
//! it.

use actix::prelude::*;

use super::{Phase, Scheduler, ServiceState};
use crate::work::{Source, Work};

/// This instance's share of the fleet's concurrency (`max_concurrency`, the fleet's total): at
/// most this many projects in flight.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SetShare(pub usize);

impl<W: Work> Handler<SetShare> for Scheduler<W> {
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

impl<W: Work> Handler<MembershipConfirmed> for Scheduler<W> {
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
    pub max_concurrency: usize,
    pub enabled: bool,
}

impl<W: Work> Handler<AdoptSwitches> for Scheduler<W> {
    type Result = ();

    fn handle(&mut self, msg: AdoptSwitches, ctx: &mut Context<Self>) {
        if msg.max_concurrency != self.config.max_concurrency || msg.enabled != self.config.enabled
        {
            tracing::info!(
                max_concurrency = msg.max_concurrency,
                enabled = msg.enabled,
                "the fleet's switches changed"
            );
        }
        self.config.max_concurrency = msg.max_concurrency;
        self.config.enabled = msg.enabled;
        self.tick(ctx);
    }
}

/// This instance was told a new concurrency or feature flag (the admin API, or GitLab's switches):
/// the fleet's total and flag, for the Fleet actor to share.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct SwitchesChanged {
    pub max_concurrency: usize,
    pub enabled: bool,
}

/// What the heartbeat reports of this instance.
#[derive(Debug, Clone)]
pub struct MemberReport {
    /// The fleet's total as this instance has it.
    pub max_concurrency: usize,
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

impl<W: Work> Handler<FleetReport> for Scheduler<W> {
    type Result = MessageResult<FleetReport>;

    fn handle(&mut self, _msg: FleetReport, _ctx: &mut Context<Self>) -> Self::Result {
        let in_flight = self.in_flight();
        MessageResult(MemberReport {
            max_concurrency: self.config.max_concurrency,
            enabled: self.config.enabled,
            in_flight,
            wants_work: self.phase == Phase::Running
                && (in_flight > 0 || !self.queue.is_empty() || !self.source.pass_read()),
            state: self.state(),
            analysed: self.accounting.status().analysed,
        })
    }
}

impl<W: Work> Scheduler<W> {
    /// This member's share: how many projects it may have in flight. In a fleet, what the fleet
    /// gave it, never above `max_concurrency` (lowered here before the fleet knows); alone, all
    /// of `max_concurrency`.
    pub(super) fn share(&self) -> usize {
        let max = self.config.max_concurrency;
        self.share.map_or(max, |share| share.min(max))
    }

    /// Tells the fleet what this instance was told.
    pub(super) fn switches_changed(&self) {
        if let Some(listener) = &self.switches_listener {
            listener.do_send(SwitchesChanged {
                max_concurrency: self.config.max_concurrency,
                enabled: self.config.enabled,
            });
        }
    }
}
