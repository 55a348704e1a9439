//! Token buckets: the intake budgets that bound what a peer can make this
//! node do (`protocol-spec/wire.md`, "Budgets and penalties").
//!
//! Time is a parameter (`now_ms`), so buckets behave identically in the
//! daemon and the simulator.

/// A token bucket holding up to `capacity` tokens, refilled at `rate_per_s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    capacity: u64,
    rate_per_s: u64,
    /// Tokens, scaled by 1000 so refill at millisecond granularity is exact.
    milli_tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket at time `now_ms`.
    pub fn new(capacity: u64, rate_per_s: u64, now_ms: u64) -> Self {
        Self {
            capacity,
            rate_per_s,
            milli_tokens: capacity.saturating_mul(1000),
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(self.rate_per_s))
            .min(self.capacity.saturating_mul(1000));
    }

    /// Takes `n` tokens if available; returns whether it did.
    pub fn try_take(&mut self, n: u64, now_ms: u64) -> bool {
        self.refill(now_ms);
        let need = n.saturating_mul(1000);
        if self.milli_tokens >= need {
            self.milli_tokens -= need;
            true
        } else {
            false
        }
    }

    /// Tokens available now.
    pub fn available(&mut self, now_ms: u64) -> u64 {
        self.refill(now_ms);
        self.milli_tokens / 1000
    }

    /// Milliseconds until `n` tokens will be available (0 if they are now,
    /// `u64::MAX` if never).
    pub fn wait_ms(&mut self, n: u64, now_ms: u64) -> u64 {
        self.refill(now_ms);
        let need = n.saturating_mul(1000);
        if self.milli_tokens >= need {
            0
        } else if self.rate_per_s == 0 || n > self.capacity {
            u64::MAX
        } else {
            (need - self.milli_tokens).div_ceil(self.rate_per_s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_drains_and_refills() {
        let mut b = TokenBucket::new(10, 5, 0);
        assert!(b.try_take(10, 0));
        assert!(!b.try_take(1, 0));
        assert_eq!(b.wait_ms(1, 0), 200);
        assert!(b.try_take(1, 200));
        assert_eq!(b.available(10_000), 10);
    }

    #[test]
    fn time_going_backwards_never_adds_tokens() {
        let mut b = TokenBucket::new(10, 5, 1000);
        assert!(b.try_take(10, 1000));
        assert_eq!(b.available(0), 0);
    }
}
