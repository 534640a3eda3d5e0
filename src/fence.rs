//! Whether this process may still act for the work it holds: a deadline on its own monotonic
//! clock, moved on by each confirmation that it still holds it (a fleet member's heartbeat).
//!
//! Others take a member's work over once its heartbeat is older than the member timeout by the
//! database's clock. The member cannot know when that happens, least of all after a pause of its
//! own (a VM migration, SIGSTOP, swapping): it resumes believing it holds what it held. So it
//! starts nothing at half the timeout after its last confirmed heartbeat *was sent*, measured on
//! `Instant` (CLOCK_MONOTONIC, which keeps counting while the process is stopped), and cancels
//! what still runs a grace later (a quarter of the timeout): by the time the others may act,
//! nothing of this member is in flight. Every registry request goes through [`Fence::guard`].

use std::future::Future;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// The fence of one service.
#[derive(Debug)]
pub struct Fence {
    /// `None`: never closes (no membership to lose).
    deadline: std::sync::Mutex<Option<Instant>>,
    /// How long past the deadline work already under way may go on: a request answered within it
    /// is not asked again.
    grace: Duration,
}

/// This process acted past its fence: it must not, and the work goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no heartbeat confirmed this member's hold on its work within half the member timeout; it acts again only once one does")]
pub struct Fenced;

impl Fence {
    /// A fence that never closes: a service that is no member of a fleet.
    pub fn unbounded() -> Self {
        Self {
            deadline: std::sync::Mutex::new(None),
            grace: Duration::ZERO,
        }
    }

    /// A fence open until `deadline`, with no grace.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline: std::sync::Mutex::new(Some(deadline)),
            grace: Duration::ZERO,
        }
    }

    /// The same fence, letting work under way go on for `grace` past the deadline.
    pub fn with_grace(self, grace: Duration) -> Self {
        Self { grace, ..self }
    }

    /// The hold was confirmed by a heartbeat sent at `sent`: open until `sent + hold`. Never moves
    /// the deadline back (an older heartbeat answering late).
    pub fn confirm(&self, sent: Instant, hold: Duration) {
        let mut deadline = lock(&self.deadline);
        if let Some(current) = deadline.as_mut() {
            *current = (*current).max(sent + hold);
        }
    }

    /// Closes it now: the hold is known lost.
    pub fn close(&self) {
        let mut deadline = lock(&self.deadline);
        *deadline = Some(Instant::now().min(deadline.unwrap_or_else(Instant::now)));
    }

    pub fn is_open(&self) -> bool {
        self.deadline()
            .is_none_or(|deadline| Instant::now() < deadline)
    }

    fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }

    /// Runs `work` while the fence is open: refused before it starts if the fence is closed, and
    /// dropped (cancelled) once the grace past the deadline is over, which is looked at before each
    /// time `work` is polled: after a freeze past it, `work` is not polled again (not one more byte
    /// sent) unless a confirmation came first. A confirmation meanwhile keeps it going.
    pub async fn guard<F: Future>(&self, work: F) -> Result<F::Output, Fenced> {
        if !self.is_open() {
            return Err(Fenced);
        }
        let mut work = std::pin::pin!(work);
        let mut wake = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        std::future::poll_fn(|cx| {
            let cancel_at = self.deadline().map(|deadline| deadline + self.grace);
            if cancel_at.is_some_and(|at| Instant::now() >= at) {
                return Poll::Ready(Err(Fenced));
            }
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
            if let Some(at) = cancel_at {
                // Woken then, to cancel what still waits.
                wake.as_mut().reset(at.into());
                if wake.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref(); // it passed just now: look again at once
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Two fences are the same fence, never two alike (what a `Sink` holding one compares).
impl PartialEq for Fence {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Fence {}

impl Default for Fence {
    fn default() -> Self {
        Self::unbounded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbounded_fence_never_closes_until_told() {
        let fence = Fence::unbounded();
        assert!(fence.is_open());
        fence.confirm(Instant::now(), Duration::ZERO);
        assert!(fence.is_open());
        fence.close();
        assert!(!fence.is_open());
    }

    #[test]
    fn a_confirmation_moves_the_deadline_on_and_never_back() {
        let now = Instant::now();
        let fence = Fence::until(now + Duration::from_secs(60));
        fence.confirm(now, Duration::from_secs(1));
        assert!(fence.is_open(), "an older confirmation does not shorten it");
        let fence = Fence::until(now);
        assert!(!fence.is_open());
        fence.confirm(now, Duration::from_secs(60));
        assert!(fence.is_open());
        fence.close();
        assert!(!fence.is_open());
    }

    #[tokio::test]
    async fn work_is_refused_behind_a_closed_fence_and_cancelled_when_it_closes() {
        let closed = Fence::until(Instant::now());
        assert_eq!(closed.guard(async { 1 }).await, Err(Fenced));

        let fence = Fence::until(Instant::now() + Duration::from_millis(50));
        let never = std::future::pending::<()>();
        assert_eq!(fence.guard(never).await, Err(Fenced));

        // Past the deadline, work under way goes on through the grace, and no longer.
        let deadline = Instant::now() + Duration::from_millis(20);
        let graced = Fence::until(deadline).with_grace(Duration::from_millis(200));
        let answered = tokio::time::sleep(Duration::from_millis(60));
        assert_eq!(graced.guard(answered).await, Ok(()));
        assert!(!graced.is_open(), "nothing new starts after the deadline");
        assert_eq!(graced.guard(async { 1 }).await, Err(Fenced));
        let graced = Fence::until(Instant::now()).with_grace(Duration::from_millis(50));
        let running = graced.guard(std::future::pending::<()>());
        assert_eq!(
            running.await,
            Err(Fenced),
            "refused: closed before it started"
        );

        let open = Fence::until(Instant::now() + Duration::from_secs(60));
        assert_eq!(open.guard(async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn a_confirmation_while_work_runs_keeps_it_going() {
        let fence = std::sync::Arc::new(Fence::until(Instant::now() + Duration::from_millis(40)));
        let confirming = fence.clone();
        let confirmer = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                confirming.confirm(Instant::now(), Duration::from_millis(40));
            }
        });
        let work = tokio::time::sleep(Duration::from_millis(100));
        assert_eq!(fence.guard(work).await, Ok(()));
        confirmer.await.expect("the confirmer");
    }
}
