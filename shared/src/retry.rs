//! When a failed record is tried again: a per-route policy (attempts, base, cap) and
//! exponential backoff with full jitter, applied by stretching the message's visibility.
//!
//! Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the delay is uniform
//! in `[0, min(cap, base·2^(attempt−1))]`, which spreads a burst of failures over the whole
//! window instead of bunching them at its edge. The randomness is injected ([`Jitter`]) so
//! tests can fix it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// SQS's longest visibility timeout (and our longest delay before a retry).
pub(crate) const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// SQS counts the 12 hours from the receive, and the worker has been running since then (a
/// Lambda for at most 15 minutes): a longer stretch would be refused.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(12 * 3600 - 15 * 60);

/// The shortest delay: SQS visibility is whole seconds, and 0 would redeliver at once.
pub(crate) const MIN_DELAY: Duration = Duration::from_secs(1);

/// How many times, and how far apart, an event is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Receives before the worker gives up and moves the event to the DLQ itself
    /// (1..=`max_receive_count`).
    pub attempts: u32,
    /// The first retry's ceiling; it doubles with each attempt.
    pub base: Duration,
    /// The ceiling never grows past this.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The most patient of two policies, field by field: one event is retried at all its
    /// targets together, so the route that needs the most retries sets the pace.
    pub(crate) fn most_patient(self, other: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts.max(other.attempts),
            base: self.base.max(other.base),
            cap: self.cap.max(other.cap),
        }
    }

    /// The ceiling of the delay after failed receive number `attempt` (1-based):
    /// `min(cap, base·2^(attempt−1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// Full jitter: `unit` (in `[0, 1]`) of the ceiling, in whole seconds rounded up, never
    /// below [`MIN_DELAY`] nor above [`MAX_DELAY`].
    pub fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let ceiling = self.ceiling(attempt).as_secs_f64();
        clamp_delay(Duration::from_secs((ceiling * unit).ceil() as u64))
    }

    /// The delay before the next try: the target's `Retry-After` when it sent one (capped
    /// at `retry_after_max`), else the backoff.
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        retry_after_max: Duration,
        unit: f64,
    ) -> Duration {
        match retry_after {
            Some(after) => clamp_delay(after.min(retry_after_max)),
            None => self.backoff(attempt, unit),
        }
    }
}

/// Whole seconds (rounded up), between [`MIN_DELAY`] and [`MAX_DELAY`].
pub(crate) fn clamp_delay(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs).clamp(MIN_DELAY, MAX_DELAY)
}

/// A source of uniform numbers in `[0, 1]` for the jitter.
pub trait Jitter: Send + Sync {
    fn unit(&self) -> f64;
}

/// SplitMix64 (Steele, Lea, Flood 2014) on an atomic counter: lock-free, seedable, and
/// plenty for spreading retries (not for anything secret).
#[derive(Debug)]
pub(crate) struct SplitMix(AtomicU64);

impl SplitMix {
    pub(crate) fn seeded(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// Seeded from the OS's randomness (through a v4 UUID), so two workers started together
    /// do not retry in step.
    pub(crate) fn from_entropy() -> Self {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&bytes[..8]);
        Self::seeded(u64::from_le_bytes(seed))
    }
}

impl Jitter for SplitMix {
    fn unit(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits: every value exactly representable, uniform in [0, 1).
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Always the same point of the window (tests: 1.0 = the ceiling exactly).
#[derive(Debug, Clone, Copy)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn unit(&self) -> f64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn policy(attempts: u32, base: u64, cap: u64) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base: S(base),
            cap: S(cap),
        }
    }

    #[test]
    fn the_ceiling_doubles_per_attempt_up_to_the_cap() {
        let p = policy(8, 2, 60);
        let ceilings: Vec<u64> = (1..=7).map(|a| p.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, vec![2, 4, 8, 16, 32, 60, 60]);
        // Huge attempt numbers neither overflow nor pass the cap.
        assert_eq!(p.ceiling(1000), S(60));
        assert_eq!(p.ceiling(0), S(2), "attempt 0 is treated as the first");
        assert_eq!(policy(5, 3600, 43_200).ceiling(40), S(43_200));
    }

    #[test]
    fn backoff_stays_within_the_floor_and_the_ceiling() {
        let p = policy(10, 1, 300);
        let jitter = SplitMix::seeded(7);
        for attempt in 1..=12 {
            for _ in 0..200 {
                let d = p.backoff(attempt, jitter.unit());
                assert!(d >= MIN_DELAY, "never 0 s: {d:?}");
                assert!(d <= p.ceiling(attempt).max(MIN_DELAY), "{attempt}: {d:?}");
            }
        }
        // The ends of the window.
        assert_eq!(p.backoff(4, 0.0), MIN_DELAY, "the floor");
        assert_eq!(p.backoff(4, 1.0), S(8), "the ceiling");
        assert_eq!(p.backoff(20, 1.0), S(300), "the cap");
        // Nonsense from a jitter source cannot escape the window.
        assert_eq!(p.backoff(4, f64::NAN), S(8));
        assert_eq!(p.backoff(4, -3.0), MIN_DELAY);
        assert_eq!(p.backoff(4, 7.0), S(8));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_window() {
        let p = policy(10, 1, 3600);
        let jitter = SplitMix::seeded(42);
        let delays: Vec<u64> = (0..1000)
            .map(|_| p.backoff(11, jitter.unit()).as_secs())
            .collect();
        let distinct: std::collections::HashSet<u64> = delays.iter().copied().collect();
        assert!(distinct.len() > 500, "{} distinct delays", distinct.len());
        let low = delays.iter().filter(|&&d| d < 1024 / 4).count();
        let high = delays.iter().filter(|&&d| d > 1024 * 3 / 4).count();
        // Uniform: about a quarter in each outer quarter of [0, 1024].
        assert!((150..350).contains(&low), "{low} in the lowest quarter");
        assert!((150..350).contains(&high), "{high} in the highest quarter");
    }

    #[test]
    fn seeded_jitter_repeats_and_different_seeds_differ() {
        let a: Vec<f64> = (0..5).map(|_| 0.0).collect();
        let (x, y, z) = (
            SplitMix::seeded(1),
            SplitMix::seeded(1),
            SplitMix::seeded(2),
        );
        let xs: Vec<f64> = a.iter().map(|_| x.unit()).collect();
        let ys: Vec<f64> = a.iter().map(|_| y.unit()).collect();
        let zs: Vec<f64> = a.iter().map(|_| z.unit()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.iter().all(|u| (0.0..1.0).contains(u)));
    }

    #[test]
    fn retry_after_wins_over_the_backoff_within_its_caps() {
        let p = policy(5, 1, 60);
        let max = S(3600);
        assert_eq!(
            p.delay(1, Some(S(120)), max, 0.0),
            S(120),
            "longer than the cap"
        );
        assert_eq!(
            p.delay(5, Some(S(3)), max, 1.0),
            S(3),
            "shorter than the backoff"
        );
        assert_eq!(p.delay(1, Some(S(86_400)), max, 0.0), max);
        assert_eq!(
            p.delay(1, Some(S(86_400)), S(86_400), 0.0),
            MAX_DELAY,
            "never past what SQS accepts"
        );
        assert_eq!(p.delay(1, Some(Duration::ZERO), max, 0.0), MIN_DELAY);
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(1500)), max, 0.0),
            S(2)
        );
        assert_eq!(p.delay(3, None, max, 1.0), S(4), "no Retry-After: backoff");
    }

    #[test]
    fn the_most_patient_policy_takes_the_largest_of_each_field() {
        let a = policy(3, 10, 60);
        let b = policy(8, 2, 600);
        assert_eq!(a.most_patient(b), policy(8, 10, 600));
        assert_eq!(b.most_patient(a), policy(8, 10, 600));
    }
}
