//! Urgent messages on the forwarding path (`protocol-spec/wire.md`,
//! "Urgent messages"; the mark itself is content, `encryption.md` §7).
//!
//! A sender marks a message urgent inside the encryption, so only a device
//! that can read the room sees the mark; relays that cannot read it see
//! nothing different. A reading device tells its node
//! ([`crate::proto::Command::Urgent`]), and the node's queues send the
//! event before everything else. So that a sender cannot starve others by
//! marking everything urgent, a device honours at most [`URGENT_BURST`]
//! urgent messages per sender and room whose origin times lie within
//! [`URGENT_WINDOW_MS`] of each other ([`UrgentWindow`]); beyond that an
//! urgent message travels (and shows) as an ordinary one. Honest senders
//! never exceed it: `send --urgent` refuses a fourth within the window.

use crate::crypto::DeviceId;
use crate::event::{EventId, RoomId};

/// Urgent messages honoured per sender and room within
/// [`URGENT_WINDOW_MS`].
pub const URGENT_BURST: usize = 3;
/// The window of [`URGENT_BURST`], in milliseconds of origin time
/// (10 minutes).
pub const URGENT_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Most events a node remembers as urgent (least recently marked
/// forgotten: a forgotten event travels as an ordinary one).
pub const MAX_URGENT_EVENTS: usize = 256;
/// Most (room, sender) pairs whose urgent window a node remembers (least
/// recently used forgotten). Only members' readable messages reach it.
pub const MAX_URGENT_SENDERS: usize = 1024;

/// One sender's honoured urgent messages in one room: the origin times of
/// the last [`URGENT_BURST`] (a fixed, tiny state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrgentWindow {
    honoured: [Option<u64>; URGENT_BURST],
    next: usize,
}

impl UrgentWindow {
    /// Whether an urgent message with origin time `ts_ms` is honoured (and
    /// if so, counts it): fewer than [`URGENT_BURST`] honoured ones lie
    /// within [`URGENT_WINDOW_MS`] of it, before or after (messages arrive
    /// in any order).
    pub fn admit(&mut self, ts_ms: u64) -> bool {
        if !self.allows(ts_ms) {
            return false;
        }
        self.honoured[self.next] = Some(ts_ms);
        self.next = (self.next + 1) % URGENT_BURST;
        true
    }

    /// [`UrgentWindow::admit`] without counting.
    pub fn allows(&self, ts_ms: u64) -> bool {
        let near = self
            .honoured
            .iter()
            .flatten()
            .filter(|t| t.abs_diff(ts_ms) < URGENT_WINDOW_MS)
            .count();
        near < URGENT_BURST
    }
}

/// A message the rooms layer read as urgent: where and when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrgentMark {
    /// The event.
    pub id: EventId,
    /// Its room.
    pub room: RoomId,
    /// Its sender.
    pub sender: DeviceId,
    /// Its origin time (ms).
    pub ts_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_gets_a_burst_per_window_in_any_order() {
        let mut w = UrgentWindow::default();
        let min = 60_000;
        assert!(w.admit(10 * min));
        assert!(w.admit(12 * min));
        // Out of order, still within ten minutes of both.
        assert!(w.admit(5 * min));
        assert!(!w.allows(14 * min));
        assert!(!w.admit(11 * min));
        // Ten minutes after the last honoured one, the oldest have aged out.
        assert!(w.admit(22 * min));
        assert!(w.admit(25 * min));
        assert!(w.admit(26 * min));
        assert!(!w.admit(27 * min));
    }
}
