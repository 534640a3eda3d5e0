//! The backoff every registry request is tried again with after a transient error (connect,
//! timeout, 5xx, 429, a broken or malformed body): at most [`ATTEMPTS`] tries in all, the pause
//! before each drawn at random from zero up to a ceiling that doubles from [`BASE`] and stops at
//! [`CAP`] (full jitter, so that projects failing together do not come back together).

use std::time::Duration;

use rand::Rng;

use super::RegistryError;

/// Tries of one request in all, the first included.
pub const ATTEMPTS: u32 = 4;
/// The ceiling of the first pause.
pub const BASE: Duration = Duration::from_millis(100);
/// The ceiling no pause goes above.
pub const CAP: Duration = Duration::from_secs(5);

/// The ceiling of the pause after try `attempt` (0 for the first).
fn ceiling(attempt: u32) -> Duration {
    BASE.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .min(CAP)
}

/// The pause after try `attempt`: full jitter under its ceiling.
fn pause(attempt: u32) -> Duration {
    let ceiling = ceiling(attempt).as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling))
}

/// Whether try `attempt` (0 for the first), which failed with `error`, is tried again, and after
/// how long: only a transient error, and only while tries are left.
pub fn again(error: &RegistryError, attempt: u32) -> Option<Duration> {
    (error.is_transient() && attempt + 1 < ATTEMPTS).then(|| pause(attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_from_the_base_under_the_cap_with_full_jitter() {
        assert_eq!(ceiling(0), BASE);
        assert_eq!(ceiling(1), BASE * 2);
        assert_eq!(ceiling(5), Duration::from_millis(3200));
        assert_eq!(ceiling(6), CAP);
        assert_eq!(ceiling(40), CAP);
        let pauses: Vec<Duration> = (0..200).map(|_| pause(3)).collect();
        assert!(pauses.iter().all(|p| *p <= ceiling(3)));
        assert!(
            pauses.iter().any(|p| *p < ceiling(3) / 2),
            "drawn from zero up, not from half the ceiling"
        );
    }
}
