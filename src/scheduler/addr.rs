//! The Scheduler's address whatever its work ([`SchedulerAddr`]): what the admin API, GitLab's
//! switches' poller, the signal handler, the progress bar and the Fleet send it. The Scheduler is
//! generic over its work; these are not, and need only the messages every Scheduler takes.

use actix::dev::RecipientRequest;
use actix::prelude::*;

use super::{
    AdoptSwitches, FleetReport, GetStatus, MembershipConfirmed, Scheduler, SetConcurrency,
    SetEnabled, SetShare, Shutdown,
};
use crate::work::Refused;
use crate::work::Work;

/// A Scheduler, of any work.
#[derive(Clone)]
pub struct SchedulerAddr {
    status: Recipient<GetStatus>,
    concurrency: Recipient<SetConcurrency>,
    enabled: Recipient<SetEnabled>,
    shutdown: Recipient<Shutdown>,
    report: Recipient<FleetReport>,
    share: Recipient<SetShare>,
    adopt: Recipient<AdoptSwitches>,
    confirmed: Recipient<MembershipConfirmed>,
    refused: Recipient<Refused>,
}

impl<W: Work> From<Addr<Scheduler<W>>> for SchedulerAddr {
    fn from(addr: Addr<Scheduler<W>>) -> Self {
        Self {
            status: addr.clone().recipient(),
            concurrency: addr.clone().recipient(),
            enabled: addr.clone().recipient(),
            shutdown: addr.clone().recipient(),
            report: addr.clone().recipient(),
            share: addr.clone().recipient(),
            adopt: addr.clone().recipient(),
            confirmed: addr.clone().recipient(),
            refused: addr.recipient(),
        }
    }
}

/// A message every Scheduler takes.
pub trait Takes<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn recipient(&self) -> &Recipient<M>;
}

impl SchedulerAddr {
    /// Sends `msg` and waits for the answer, as `Addr::send` does.
    pub fn send<M>(&self, msg: M) -> RecipientRequest<M>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Self: Takes<M>,
    {
        self.recipient().send(msg)
    }

    /// Sends `msg` without waiting, as `Addr::do_send` does.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Self: Takes<M>,
    {
        self.recipient().do_send(msg);
    }
}

macro_rules! takes {
    ($($message:ty => $field:ident),* $(,)?) => {
        $(impl Takes<$message> for SchedulerAddr {
            fn recipient(&self) -> &Recipient<$message> {
                &self.$field
            }
        })*
    };
}

takes! {
    GetStatus => status,
    SetConcurrency => concurrency,
    SetEnabled => enabled,
    Shutdown => shutdown,
    FleetReport => report,
    SetShare => share,
    AdoptSwitches => adopt,
    MembershipConfirmed => confirmed,
    Refused => refused,
}
