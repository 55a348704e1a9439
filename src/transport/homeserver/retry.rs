//! Retry timing: exponential backoff with jitter, and the server's
//! `429` hints (`protocol-spec/homeserver.md`, "Failure handling").

use std::time::Duration;

use rand_core::Rng;

/// How persistently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Largest backoff between two attempts.
    pub max_delay: Duration,
    /// Longest wait a `429` may impose before the request gives up with
    /// [`HomeserverError::RateLimited`](super::HomeserverError::RateLimited).
    pub max_retry_after: Duration,
}

/// Default attempts per request.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default first backoff.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(250);
/// Default backoff ceiling.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
/// Default ceiling on one `429` wait.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl RetryPolicy {
    /// Backoff after the `failures`-th consecutive failure (1-based):
    /// `min(max_delay, base_delay * 2^(failures-1))`, of which the upper half
    /// is jittered uniformly ("equal jitter"), so gateways that lost the
    /// network together do not retry in lockstep.
    pub fn backoff<R: Rng + ?Sized>(&self, failures: u32, rng: &mut R) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let half = ms / 2;
        let jitter = if half == 0 {
            0
        } else {
            rng.next_u64() % (half + 1)
        };
        Duration::from_millis(ms - half + jitter)
    }
}

/// The wait a `429` asks for: the larger of the body's `retry_after_ms`
/// and the `Retry-After` header (delta-seconds form; an HTTP date is
/// ignored), or `None` if neither is present.
pub fn retry_after(body_ms: Option<u64>, header: Option<&str>) -> Option<Duration> {
    let header_ms = header
        .and_then(|h| h.trim().parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000));
    match (body_ms, header_ms) {
        (None, None) => None,
        (a, b) => Some(Duration::from_millis(a.unwrap_or(0).max(b.unwrap_or(0)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for failures in 1..40 {
            let d = p.backoff(failures, &mut rng);
            let ceiling = p
                .base_delay
                .saturating_mul(1 << (failures - 1).min(20))
                .min(p.max_delay);
            assert!(d <= ceiling, "{failures}: {d:?} > {ceiling:?}");
            assert!(d >= ceiling / 2, "{failures}: {d:?} < half of {ceiling:?}");
        }
        let many: std::collections::BTreeSet<_> =
            (0..50).map(|_| p.backoff(10, &mut rng)).collect();
        assert!(many.len() > 10, "jitter spreads retries");
    }

    #[test]
    fn retry_after_takes_the_larger_hint() {
        assert_eq!(retry_after(None, None), None);
        assert_eq!(
            retry_after(Some(1500), None),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(None, Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(Some(1500), Some(" 2 ")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(Some(4000), Some("2")),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            retry_after(None, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
    }
}
