//! The Fleet actor: this instance as one member of every instance of `run` against the same
//! database. No coordinator: the database is the meeting place (`db::fleet`).
//!
//! | Actor | Owns | Receives | Sends |
//! |---|---|---|---|
//! | `Fleet`, one per `run` | the membership, the heartbeat, this member's share of the fleet's concurrency, the last view of the others | `SwitchesChanged` (from the Scheduler), `GetFleetStatus` (admin API), `Leave` (the end of the run) | `FleetReport`, `SetShare`, `AdoptSwitches`, `Shutdown::Lost` to the Scheduler |
//!
//! Every `fleet.heartbeat_interval_ms` it asks the Scheduler what it does, records it with the
//! heartbeat, reads the others, and moves this member's share towards its part of the total
//! ([`shares::share_of`]): down at once, up only as far as the other live members leave room
//! (`members::raise`, one raise at a time under the fleet row's lock). So the live members'
//! shares never add up to more than the total.
//!
//! Two safeguards keep a member that cannot reach the database from doing harm: after half the
//! timeout without a heartbeat it gives its share up (so a member taken for dead has nothing in
//! flight by the time others take its work), and it takes over the work of members that look
//! dead only after its own heartbeats have gone through for a whole timeout. A member that finds
//! its work was taken over stops at once.

pub mod shares;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::db::fleet::members::{self, Beat, View};
use crate::db::fleet::{FleetStatus, Member};
use crate::db::{Database, DbError};
use crate::scheduler::{
    AdoptSwitches, FleetReport, MemberReport, Scheduler, SetShare, Shutdown, SwitchesChanged,
};
use shares::Live;

/// How the fleet's switches are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switches {
    /// `control.source = "config"`: the fleet's row, written by whichever member is told.
    Shared { version: i64 },
    /// `control.source = "gitlab"`: every member reads GitLab's own.
    Gitlab,
}

pub struct Fleet {
    db: Database,
    member: Arc<Member>,
    scheduler: Addr<Scheduler>,
    heartbeat: Duration,
    switches: Switches,
    share: usize,
    beating: bool,
    last_beat: Instant,
    /// Since when the heartbeats have gone through without a break.
    beating_since: Option<Instant>,
    fenced: bool,
    view: Option<(View, usize)>,
}

impl Fleet {
    pub fn new(
        db: Database,
        member: Arc<Member>,
        scheduler: Addr<Scheduler>,
        heartbeat: Duration,
        switches: Switches,
    ) -> Self {
        Self {
            db,
            member,
            scheduler,
            heartbeat,
            switches,
            share: 0,
            beating: false,
            last_beat: Instant::now(),
            beating_since: Some(Instant::now()),
            fenced: false,
            view: None,
        }
    }

    fn beat(&mut self, ctx: &mut Context<Self>) {
        if self.beating {
            return;
        }
        self.beating = true;
        let (db, member, scheduler, share) = (
            self.db.clone(),
            self.member.clone(),
            self.scheduler.clone(),
            self.share,
        );
        let switches = self.switches;
        let work = async move {
            let report = scheduler.send(FleetReport).await.ok()?;
            let beat = Beat {
                share,
                in_flight: report.in_flight,
                wants_work: report.wants_work,
                state: report.state.to_string(),
                analysed: report.analysed,
            };
            let beaten = match members::beat(&db, &member, &beat).await {
                Ok(view) => {
                    let total = total(switches, &view, &report);
                    let target = target_share(&member.id, &view, &report, total);
                    let granted = match target > share {
                        true => members::raise(&db, &member, share, target, total).await,
                        false => Ok(target),
                    };
                    granted.map(|granted| (view, total, granted))
                }
                Err(error) => Err(error),
            };
            Some((report, beaten))
        };
        ctx.spawn(work.into_actor(self).map(|outcome, act, _ctx| {
            act.beating = false;
            match outcome {
                None => {} // the Scheduler is gone: the run is ending
                Some((_, Ok((view, total, share)))) => act.beaten(view, total, share),
                Some((report, Err(error))) => act.beat_failed(&report, &error),
            }
        }));
    }

    fn beaten(&mut self, view: View, total: usize, share: usize) {
        self.last_beat = Instant::now();
        let since = *self.beating_since.get_or_insert(self.last_beat);
        if !self.member.may_take_over() && since.elapsed() >= self.member.timeout {
            self.member.set_trusted(true);
        }
        if self.fenced {
            tracing::info!("the heartbeat goes through again");
            self.fenced = false;
        }
        if view.taken_over {
            self.scheduler.do_send(Shutdown::Lost);
        }
        if let (Switches::Shared { version }, Some(fleet)) = (self.switches, &view.switches) {
            if fleet.version > version {
                self.switches = Switches::Shared {
                    version: fleet.version,
                };
                self.scheduler.do_send(AdoptSwitches {
                    limit: usize::try_from(fleet.max_concurrency).unwrap_or(0),
                    enabled: fleet.enabled,
                });
            }
        }
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
        self.view = Some((view, total));
    }

    fn beat_failed(&mut self, report: &MemberReport, error: &DbError) {
        self.beating_since = None;
        self.member.set_trusted(false);
        let silent = self.last_beat.elapsed();
        tracing::warn!(%error, silent_ms = silent.as_millis() as u64, "the heartbeat failed");
        if !self.fenced && silent >= self.member.timeout / 2 {
            // Others will take this member for dead at the timeout: by then nothing of it may
            // be in flight.
            tracing::warn!(
                in_flight = report.in_flight,
                "no heartbeat for half the member timeout: giving up this member's share"
            );
            self.fenced = true;
            self.share = 0;
            self.scheduler.do_send(SetShare(0));
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
        })
    }
}

/// The fleet's total: the shared switches in `config` mode, else GitLab's setting as this
/// member's Scheduler has it.
fn total(switches: Switches, view: &View, report: &MemberReport) -> usize {
    match (switches, &view.switches) {
        (Switches::Shared { .. }, Some(fleet)) => {
            usize::try_from(fleet.max_concurrency).unwrap_or(0)
        }
        _ => report.limit,
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
        if self.switches == Switches::Gitlab {
            return; // every member reads GitLab's own
        }
        let (db, member) = (self.db.clone(), self.member.clone());
        let write =
            async move { members::set_switches(&db, &member, msg.limit, msg.enabled).await };
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| match written {
            Ok(fleet) => {
                tracing::info!(
                    max_concurrency = msg.limit,
                    enabled = msg.enabled,
                    version = fleet.version,
                    "the fleet's switches written"
                );
                if let Switches::Shared { version } = act.switches {
                    act.switches = Switches::Shared {
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
