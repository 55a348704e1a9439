//! The daemon's time (`protocol-spec/event.md`, "Clock floor";
//! `protocol-spec/store.md` §3).
//!
//! Event timestamps, expiry, timeliness and the node's timers are in wall
//! clock milliseconds, but the wall clock of a board or phone can jump back
//! (a wrong NTP answer, a user, a dead RTC battery). The daemon therefore
//! reads time only through [`DaemonClock::now`]: a [`ClockFloor`] ticked
//! with each wall-clock reading and the monotonic time since the previous
//! one. A backward jump of up to `MAX_CLOCK_ROLLBACK_MS` leaves the
//! daemon's time running on from where it was, so its own events keep
//! rising timestamps, peers' events are not held back as "from the
//! future", pruned events are not accepted again, and the node's timers do
//! not stall. The floor is persisted in the store's metadata
//! ([`CLOCK_FLOOR_META_KEY`]) with each commit and loaded at start, so a
//! restart during the jump keeps it too.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::event::ClockFloor;

/// Store metadata key of the persisted floor (8 bytes, big-endian ms).
pub const CLOCK_FLOOR_META_KEY: &str = "clock-floor";

/// Wall-clock milliseconds as the OS reports them.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The daemon's clock: see the module docs.
#[derive(Debug)]
pub struct DaemonClock {
    /// The floor and the monotonic instant it was last ticked at.
    state: Mutex<(ClockFloor, Instant)>,
}

impl DaemonClock {
    /// A clock starting from a persisted floor (the bytes stored under
    /// [`CLOCK_FLOOR_META_KEY`], if any).
    pub fn new(persisted: Option<&[u8]>) -> Self {
        let floor = persisted
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_be_bytes);
        DaemonClock {
            state: Mutex::new((ClockFloor::from_ms(floor), Instant::now())),
        }
    }

    /// The time to use now, in Unix milliseconds (never earlier than the
    /// last one, within the rollback bound).
    pub fn now(&self) -> u64 {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (floor, at) = &mut *g;
        let elapsed = at.elapsed();
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        // Only whole milliseconds are consumed: no drift from rounding.
        *at += std::time::Duration::from_millis(elapsed_ms);
        let wall = wall_ms();
        let t = floor.tick(wall, elapsed_ms);
        if t > wall.saturating_add(crate::limits::MAX_FUTURE_SKEW_MS) && elapsed_ms > 0 {
            tracing::debug!(
                wall,
                used = t,
                "wall clock is behind: time runs on from the floor"
            );
        }
        t
    }

    /// The floor to persist (8 bytes, big-endian).
    pub fn persisted(&self) -> [u8; 8] {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.0.ms().to_be_bytes()
    }
}
