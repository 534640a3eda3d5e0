//! The Fleet actor: this instance as one member of every instance against the same database
//! (each `run`, and a `repair plan` or `apply` while it runs: its registry requests count in the
//! fleet's total too). No coordinator: the database is the meeting place (`db::fleet`).
//!
//! | Actor | Owns | Receives | Sends |
//! |---|---|---|---|
//! | `Fleet`, one per service | the membership, the heartbeat (on a connection of its own), the [`Fence`] it confirms, this member's share of the fleet's concurrency, the last view of the others | `SwitchesChanged` (from the Scheduler), `GetFleetStatus` (admin API), `Leave` (the end of the run) | `FleetReport`, `SetShare`, `AdoptSwitches`, `MembershipConfirmed`, `Shutdown::Lost` to the Scheduler |
//!
//! Every `fleet.heartbeat_interval_ms` it asks the Scheduler what it does, records it with the
//! heartbeat, reads the others, and moves this member's share towards its part of the total
//! ([`shares::share_of`]): down at once, up only as far as the other members not known gone leave
//! room (`members::raise`, one raise at a time under the fleet row's lock). So the shares never
//! add up to more than the total.
//!
//! Fencing: each heartbeat that goes through confirms the [`Fence`] for half the timeout from
//! when it was sent, on this process's monotonic clock. Every registry request waits behind the
//! fence and is cancelled when it closes, and the Scheduler dispatches nothing while it is closed:
//! so a member whose heartbeat hangs, or which was frozen, has nothing in flight by the time the
//! others may take its work (a whole timeout by the database's clock), and after a freeze it acts
//! on nothing until a heartbeat has confirmed it is still a member. The heartbeat's statements
//! are bounded by a statement timeout and the whole of it by half the timeout, so that a hang
//! fails instead of lasting. A member takes over the work of others, or marks them lost, only
//! after its own heartbeats have gone through for a whole timeout. A member that finds its work
//! was taken over stops at once, writing nothing more.

pub mod shares;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::db::fleet::members::{self, Beat, View};
use crate::db::fleet::{FleetStatus, Member, ANALYSIS};
use crate::db::{Database, DbError};
use crate::fence::Fence;
use crate::scheduler::{
    AdoptSwitches, FleetReport, MemberReport, MembershipConfirmed, SchedulerAddr, SetShare,
    Shutdown, SwitchesChanged,
};
use crate::work::Refused;
use shares::Live;

/// Who steers this member: whose switches (concurrency and flag) it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// `control.source = "config"`: the fleet's row, written by whichever member is told.
    Shared { version: i64 },
    /// `control.source = "gitlab"`: every member reads GitLab's own.
    Gitlab,
    /// A member that does not analyse (a repair) while none does: its own settings, until a
    /// member that analyses writes the fleet's (a version above this one).
    Own { version: i64 },
}

pub struct Fleet {
    /// A pool of the heartbeat's own (one connection): it never waits behind the Analyzers.
    heartbeat_db: Database,
    /// The service's pool, for what is not the heartbeat (the switches, leaving).
    db: Database,
    member: Arc<Member>,
    fence: Arc<Fence>,
    scheduler: SchedulerAddr,
    heartbeat: Duration,
    steering: Steering,
    share: usize,
    beating: bool,
    /// Since when the heartbeats have gone through without a break.
    beating_since: Option<Instant>,
    /// The fence closed and this member gave its share up; it said so once.
    fenced: bool,
    /// The fleet took this member for dead: it does nothing more.
    lost: bool,
    view: Option<(View, usize)>,
}

impl Fleet {
    pub fn new(
        heartbeat_db: Database,
        db: Database,
        member: Arc<Member>,
        fence: Arc<Fence>,
        scheduler: SchedulerAddr,
        heartbeat: Duration,
        steering: Steering,
    ) -> Self {
        Self {
            heartbeat_db,
            db,
            member,
            fence,
            scheduler,
            heartbeat,
            steering,
            share: 0,
            beating: false,
            beating_since: Some(Instant::now()),
            fenced: false,
            lost: false,
            view: None,
        }
    }

    fn beat(&mut self, ctx: &mut Context<Self>) {
        if self.lost {
            return;
        }
        if !self.fence.is_open() && !self.fenced {
            // The others take this member for dead at the timeout; its requests were cancelled.
            tracing::warn!(
                hold_ms = self.member.hold().as_millis() as u64,
                "no heartbeat confirmed this member within half the member timeout: it acts on nothing until one does"
            );
            self.fenced = true;
            self.share = 0;
            self.scheduler.do_send(SetShare(0));
        }
        if self.beating {
            return; // the one under way ends within half the timeout
        }
        self.beating = true;
        let (db, member, scheduler, share) = (
            self.heartbeat_db.clone(),
            self.member.clone(),
            self.scheduler.clone(),
            self.share,
        );
        let steering = self.steering;
        let work = async move {
            let report = scheduler.send(FleetReport).await.ok()?;
            let beat = Beat {
                share,
                in_flight: report.in_flight,
                wants_work: report.wants_work,
                state: report.state.to_string(),
                analysed: report.analysed,
            };
            let sent = Instant::now();
            let hold = member.hold();
            let bounded = |what: &'static str| {
                move |_| DbError::TimedOut {
                    what: what.to_string(),
                    after: hold,
                }
            };
            let beaten = tokio::time::timeout(hold, members::beat(&db, &member, &beat))
                .await
                .map_err(bounded("the heartbeat"))
                .and_then(|beaten| beaten);
            let beaten = match beaten {
                Ok(view) if !view.taken_over => {
                    let total = total(steering, &view, &report);
                    let target = target_share(&member.id, &view, &report, total);
                    // The heartbeat went through whatever the raise does: a member that holds
                    // the fleet's row (frozen mid-raise) delays others' raises, not their
                    // membership.
                    let granted = match target > share {
                        true => tokio::time::timeout(
                            hold,
                            members::raise(&db, &member, share, target, total),
                        )
                        .await
                        .map_err(bounded("raising this member's share"))
                        .and_then(|raised| raised)
                        .unwrap_or_else(|error| {
                            tracing::info!(%error, "this member's share stays as it is for now");
                            share
                        }),
                        false => target,
                    };
                    Ok((view, total, granted))
                }
                Ok(view) => Ok((view, 0, 0)),
                Err(error) => Err(error),
            };
            Some((report, sent, beaten))
        };
        ctx.spawn(work.into_actor(self).map(|outcome, act, _ctx| {
            act.beating = false;
            match outcome {
                None => {} // the Scheduler is gone: the run is ending
                Some((_, sent, Ok((view, total, share)))) => act.beaten(sent, view, total, share),
                Some((report, _, Err(error))) => act.beat_failed(&report, error),
            }
        }));
    }

    fn beaten(&mut self, sent: Instant, view: View, total: usize, share: usize) {
        if view.taken_over {
            self.fence.close();
            self.lost = true;
            self.scheduler.do_send(Shutdown::Lost);
            return;
        }
        self.fence.confirm(sent, self.member.hold());
        let now = Instant::now();
        let since = *self.beating_since.get_or_insert(now);
        if !self.member.may_take_over() && since.elapsed() >= self.member.timeout {
            self.member.set_trusted(true);
        }
        if self.fenced {
            tracing::info!("a heartbeat confirmed this member again: acting again");
            self.fenced = false;
        }
        for id in &view.marked_lost {
            tracing::warn!(member = %id, "a member silent for longer than the member timeout is taken for gone: its share is free, its work is taken over");
        }
        self.adopt_switches(&view);
        if share != self.share {
            tracing::info!(
                from = self.share,
                to = share,
                total,
                "share of the fleet's concurrency"
            );
            self.share = share;
            self.scheduler.do_send(SetShare(share));
        }
        self.scheduler.do_send(MembershipConfirmed);
        self.view = Some((view, total));
    }

    /// Takes the fleet's switches when another member wrote newer ones; a member keeping its own
    /// takes them once a member that analyses has written them.
    fn adopt_switches(&mut self, view: &View) {
        let Some(fleet) = &view.switches else {
            return;
        };
        let newer = match self.steering {
            Steering::Shared { version } => fleet.version > version,
            Steering::Own { version } => {
                fleet.version > version
                    && view
                        .members
                        .iter()
                        .any(|m| m.live && m.id != self.member.id && m.work == ANALYSIS)
            }
            Steering::Gitlab => false,
        };
        if newer {
            self.steering = Steering::Shared {
                version: fleet.version,
            };
            self.scheduler.do_send(AdoptSwitches {
                max_concurrency: usize::try_from(fleet.max_concurrency).unwrap_or(0),
                enabled: fleet.enabled,
            });
        }
    }

    fn beat_failed(&mut self, report: &MemberReport, error: DbError) {
        self.beating_since = None;
        self.member.set_trusted(false);
        tracing::warn!(%error, in_flight = report.in_flight, fenced = !self.fence.is_open(), "the heartbeat failed");
        if let Some(refused) = Refused::lasting(Arc::new(error)) {
            self.scheduler.do_send(refused);
        }
    }

    fn status(&self) -> Option<FleetStatus> {
        let (view, total) = self.view.as_ref()?;
        let live: Vec<_> = view.members.iter().filter(|m| m.live).collect();
        let sum = |f: fn(&members::MemberRow) -> i32| {
            live.iter()
                .map(|m| usize::try_from(f(m)).unwrap_or(0))
                .sum()
        };
        Some(FleetStatus {
            me: self.member.id.clone(),
            total: *total,
            live: live.len(),
            shares: sum(|m| m.share),
            in_flight: sum(|m| m.in_flight),
            members: view.members.clone(),
            repair: view.repair.clone(),
        })
    }
}

/// The fleet's total: the shared switches in `config` mode, else GitLab's setting (or a member's
/// own, while none analyses) as this member's Scheduler has it.
fn total(steering: Steering, view: &View, report: &MemberReport) -> usize {
    match (steering, &view.switches) {
        (Steering::Shared { .. }, Some(fleet)) => {
            usize::try_from(fleet.max_concurrency).unwrap_or(0)
        }
        _ => report.max_concurrency,
    }
}

/// This member's part of `total` among the live members (itself as it is now, whatever its row
/// said a heartbeat ago).
fn target_share(me: &str, view: &View, report: &MemberReport, total: usize) -> usize {
    if !report.enabled {
        return 0;
    }
    let mut live: Vec<Live<'_>> = view
        .members
        .iter()
        .filter(|m| m.live || m.id == me)
        .map(|m| Live {
            id: &m.id,
            wants_work: match m.id == me {
                true => report.wants_work,
                false => m.wants_work,
            },
        })
        .collect();
    if !live.iter().any(|m| m.id == me) {
        live.push(Live {
            id: me,
            wants_work: report.wants_work,
        });
    }
    shares::share_of(me, &live, total)
}

impl Actor for Fleet {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            member = %self.member.id,
            work = %self.member.work,
            shard = %self.member.shard,
            heartbeat_ms = self.heartbeat.as_millis() as u64,
            timeout_ms = self.member.timeout.as_millis() as u64,
            "joined the fleet"
        );
        self.beat(ctx);
        ctx.run_interval(self.heartbeat, |act, ctx| act.beat(ctx));
    }
}

impl Handler<SwitchesChanged> for Fleet {
    type Result = ();

    fn handle(&mut self, msg: SwitchesChanged, ctx: &mut Context<Self>) {
        match self.steering {
            Steering::Gitlab => return, // every member reads GitLab's own
            // Its own switches: no member that analyses shares them.
            Steering::Own { .. } => return,
            Steering::Shared { .. } => {}
        }
        let (db, member) = (self.db.clone(), self.member.clone());
        let write = async move {
            members::set_switches(&db, &member, msg.max_concurrency, msg.enabled).await
        };
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| match written {
            Ok(fleet) => {
                tracing::info!(
                    max_concurrency = msg.max_concurrency,
                    enabled = msg.enabled,
                    version = fleet.version,
                    "the fleet's switches written"
                );
                if let Steering::Shared { version } = act.steering {
                    act.steering = Steering::Shared {
                        version: version.max(fleet.version),
                    };
                }
                act.beat(ctx);
            }
            Err(error) => {
                tracing::warn!(%error, "writing the fleet's switches failed: only this member uses them")
            }
        }));
    }
}

/// The fleet as this member last read it (`None` before its first heartbeat).
#[derive(Message)]
#[rtype(result = "Option<FleetStatus>")]
pub struct GetFleetStatus;

impl Handler<GetFleetStatus> for Fleet {
    type Result = MessageResult<GetFleetStatus>;

    fn handle(&mut self, _msg: GetFleetStatus, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.status())
    }
}

/// The run is over: hand back what this member still claims, leave the table, and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

impl Handler<Leave> for Fleet {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Leave, _ctx: &mut Context<Self>) -> Self::Result {
        let (db, member) = (self.db.clone(), self.member.clone());
        Box::pin(
            async move { members::leave(&db, &member).await }
                .into_actor(self)
                .map(|left, _act, ctx| {
                    match left {
                        Ok(()) => tracing::info!("left the fleet"),
                        Err(error) => tracing::warn!(%error, "leaving the fleet failed; the others take this member's work after its timeout"),
                    }
                    ctx.stop();
                }),
        )
    }
}
