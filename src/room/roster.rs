//! A room's roster as one device reads it (`protocol-spec/rooms.md`,
//! "Sealed roster"; the construction is in `crate::crypto::roster`).
//!
//! Admission and resolution use the device IDs in clear in `create` and
//! `invite` events; the cards (names, prekeys, flags) travel sealed under
//! the room's roster secret. A device that holds the secret opens each
//! card once, when its event enters the DAG (or, for a new member, when its
//! own invite gives it the secret); a carrier without it sees members
//! without cards. A card that does not open is left unread: the event
//! counts all the same, so every device reaches the same membership.

use std::collections::BTreeMap;

use crate::crypto::card::ContactCard;
use crate::crypto::roster::RosterSecret;
use crate::event::{EventId, RoomId};
use crate::room::membership::{Membership, derive_room_id};

/// The roster secret (when held) and the cards it opened, by event.
/// Bounded by the room's membership events (`MAX_MEMBERSHIP_EVENTS`).
#[derive(Debug, Clone, Default)]
pub struct Roster {
    secret: Option<RosterSecret>,
    opened: BTreeMap<EventId, ContactCard>,
}

impl Roster {
    /// The secret, when held.
    pub fn secret(&self) -> Option<&RosterSecret> {
        self.secret.as_ref()
    }

    /// Sets a secret this device already accepted (its own persisted room
    /// keys, or its own new room), before the events are fed.
    pub fn preset(&mut self, secret: RosterSecret) {
        self.secret = Some(secret);
    }

    /// Opens the card of membership event `id`, when it is sealed and the
    /// secret is held.
    pub fn note(&mut self, room: &RoomId, id: EventId, m: &Membership) {
        let (Some(secret), Some(sealed), Some(device)) = (&self.secret, m.sealed_card(), m.named())
        else {
            return;
        };
        if let Ok(card) = sealed.open(secret, room, &device) {
            self.opened.insert(id, card);
        }
    }

    /// The readable card of membership event `id`: in clear, or opened.
    pub fn card<'a>(&'a self, id: &EventId, m: &'a Membership) -> Option<&'a ContactCard> {
        m.clear_card().or_else(|| self.opened.get(id))
    }

    /// Offers a secret from an invite. It is accepted only if it opens the
    /// card of the room's well-formed sealed `create` among `events` (so
    /// nobody but the creator's secret is ever taken); then every sealed
    /// card of `events` is opened. Returns whether it was accepted. A
    /// secret already held is kept.
    pub fn offer<'a>(
        &mut self,
        room: &RoomId,
        secret: RosterSecret,
        events: impl Iterator<Item = (EventId, crate::crypto::keys::DeviceId, &'a Membership)> + Clone,
    ) -> bool {
        if self.secret.is_some() {
            return false;
        }
        let genesis_opens = events.clone().any(|(_, sender, m)| {
            matches!(m, Membership::CreateSealed { creator, nonce, card }
                if *creator == sender
                    && derive_room_id(creator, nonce) == *room
                    && card.open(&secret, room, creator).is_ok())
        });
        if !genesis_opens {
            return false;
        }
        self.secret = Some(secret);
        for (id, _, m) in events {
            self.note(room, id, m);
        }
        true
    }
}
