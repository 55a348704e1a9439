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
//! * a node SHOULD never use a clock earlier than the newest origin time it
//!   has verified ([`ClockFloor`]), so a board that booted in 1970 does not
//!   sign events that everyone else drops as long expired.

use crate::event::envelope::Event;
use crate::limits::{EXPIRY_GRACE_MS, MAX_FUTURE_SKEW_MS};

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

/// A monotone lower bound on the time, raised by every verified event's
/// origin time (capped by the future-skew tolerance so one forged far-future
/// timestamp cannot drag it forward more than that).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClockFloor(u64);

impl ClockFloor {
    /// Raises the floor with a verified origin time observed at `now_ms`.
    pub fn observe(&mut self, origin_ts_ms: u64, now_ms: u64) {
        let cap = now_ms.max(self.0).saturating_add(MAX_FUTURE_SKEW_MS);
        self.0 = self.0.max(origin_ts_ms.min(cap));
    }

    /// The time to use: the local clock, or the floor if the clock is behind.
    pub fn now(&self, local_ms: u64) -> u64 {
        local_ms.max(self.0)
    }
}
