//! Urgent events in the node's queues (`protocol-spec/wire.md`, "Urgent
//! messages"; the rule is [`crate::proto::urgent`]).
//!
//! The rooms layer reads the mark and tells the node
//! ([`Command::Urgent`](crate::proto::Command::Urgent)); the node checks
//! the sender's [`UrgentWindow`], remembers the event (at most
//! [`MAX_URGENT_EVENTS`]) and moves it to the head of every link's outbox
//! and backlog where it waits. Whenever it is queued again (a push after
//! the commit, a `Want`, a catch-up) it takes the urgent place at once.

use rand_core::Rng;

use super::Node;
use super::link::SendClass;
use crate::event::EventId;
use crate::proto::urgent::UrgentMark;
use crate::store::{EventStore, Priority};

/// The outbox place of an urgent event: before the node's own undelivered
/// events and before control events.
pub(super) const URGENT_PLACE: (Priority, SendClass) =
    (Priority::OwnUndelivered, SendClass::Urgent);

impl<S: EventStore, R: Rng> Node<S, R> {
    /// Whether `id` was read as urgent (and honoured) here.
    pub(super) fn is_urgent(&self, id: &EventId) -> bool {
        self.urgent.contains(id)
    }

    /// Takes the rooms layer's urgent marks: each honoured one jumps the
    /// queues where it waits.
    pub(super) fn mark_urgent(&mut self, marks: Vec<UrgentMark>) {
        for m in marks {
            if self.urgent.contains(&m.id) {
                continue;
            }
            let window = self
                .urgent_windows
                .get_or_insert_mut((m.room, m.sender), Default::default);
            if !window.admit(m.ts_ms) {
                self.stats.urgent_refused += 1;
                continue;
            }
            self.urgent.put(m.id, ());
            self.stats.urgent_marked += 1;
            for l in self.links.values_mut() {
                if let Some(key) = l
                    .outbox
                    .iter()
                    .find(|(_, (_, id))| *id == m.id)
                    .map(|(k, _)| *k)
                    && let Some(entry) = l.outbox.remove(&key)
                {
                    l.outbox
                        .insert((URGENT_PLACE.0, URGENT_PLACE.1, key.2, key.3), entry);
                }
                if let Some(i) = l.backlog.iter().position(|(_, item)| item.id == m.id)
                    && let Some((_, item)) = l.backlog.remove(i)
                {
                    l.backlog.push_front((SendClass::Urgent, item));
                }
            }
        }
    }
}
