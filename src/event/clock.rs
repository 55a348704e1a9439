//! How timestamps and expiries are judged under clock skew
//! (`protocol-spec/event.md`, "Clocks and skew").
//!
//! The core reads no clock: the caller passes `now_ms`. Boards without a
//! real-time clock boot with stale clocks, so:
//!
//! * an event whose origin time is more than `MAX_FUTURE_SKEW_MS` ahead of
//!   the receiver's clock is *held back* (not stored, not relayed, not
//!   penalised: the receiver's clock may be the wrong one);
//! * an event is *expired* only once `now_ms > expires_ms + EXPIRY_GRACE_MS`;
//! * a node never lets its time run backwards ([`ClockFloor::tick`]): the
//!   daemon's time is the wall clock, or, when the wall clock jumps back by
//!   at most `MAX_CLOCK_ROLLBACK_MS`, the last time used carried forward by
//!   the monotonic clock (`protocol-spec/event.md`, "Clock floor").

use crate::event::envelope::Event;
use crate::limits::{EXPIRY_GRACE_MS, MAX_CLOCK_ROLLBACK_MS, MAX_FUTURE_SKEW_MS};

/// The verdict on an event's timestamps at the receiver's `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeliness {
    /// Within tolerance: accept.
    Current,
    /// Origin time beyond the future-skew tolerance: hold back.
    FromFuture,
    /// Past its signed expiry plus grace: drop everywhere.
    Expired,
}

/// Judges `event` at `now_ms`.
pub fn timeliness(event: &Event, now_ms: u64) -> Timeliness {
    if event.origin_ts_ms() > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
        Timeliness::FromFuture
    } else if now_ms > event.expires_ms().saturating_add(EXPIRY_GRACE_MS) {
        Timeliness::Expired
    } else {
        Timeliness::Current
    }
}

/// The last time a daemon used, so its time never runs backwards
/// ([`ClockFloor::tick`], `protocol-spec/event.md`, "Clock floor"). Peers'
/// origin times never move it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockFloor(u64);

impl ClockFloor {
    /// A floor at `ms` (a persisted one, `protocol-spec/store.md` §3).
    pub fn from_ms(ms: u64) -> Self {
        ClockFloor(ms)
    }

    /// The floor, in Unix milliseconds.
    pub fn ms(&self) -> u64 {
        self.0
    }

    /// The time to use now, given a wall-clock reading and the monotonic
    /// time elapsed since the previous tick; the floor becomes it
    /// (`protocol-spec/event.md`, "Clock floor"). The floor carried forward
    /// by the elapsed time is used while the wall clock is behind it by at
    /// most [`MAX_CLOCK_ROLLBACK_MS`] (a backward jump: time keeps running
    /// and never repeats); the wall clock is used when it is ahead (it was
    /// set forward) or further behind (the floor came from a wrong clock,
    /// and a node must not stay in the future for ever).
    pub fn tick(&mut self, wall_ms: u64, elapsed_ms: u64) -> u64 {
        let carried = self.0.saturating_add(elapsed_ms);
        let t = if wall_ms >= carried || carried - wall_ms > MAX_CLOCK_ROLLBACK_MS {
            wall_ms
        } else {
            carried
        };
        self.0 = t;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_never_runs_backwards_within_the_rollback_bound() {
        let day = 86_400_000;
        let mut f = ClockFloor::from_ms(0);
        assert_eq!(f.tick(10 * day, 0), 10 * day);
        // The wall clock jumps back a day: time keeps running.
        assert_eq!(f.tick(9 * day, 1000), 10 * day + 1000);
        assert_eq!(f.tick(9 * day + 5000, 2000), 10 * day + 3000);
        // It catches up: the wall clock again.
        assert_eq!(f.tick(10 * day + 9000, 1000), 10 * day + 9000);
        // A jump back beyond the bound is a correction: followed.
        let far = 10 * day + 9000 - MAX_CLOCK_ROLLBACK_MS - 1;
        assert_eq!(f.tick(far, 0), far);
        // A persisted floor far ahead of the wall clock is not used.
        let mut g = ClockFloor::from_ms(100 * day);
        assert_eq!(g.tick(day, 0), day);
        let mut h = ClockFloor::from_ms(day + 5);
        assert_eq!(h.tick(day, 0), day + 5);
    }
}
