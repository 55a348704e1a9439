//! A room's roster as one device reads it (`protocol-spec/rooms.md`,
//! "Sealed roster"; the construction is in `crate::crypto::roster`).
//!
//! Admission and resolution use the device IDs in clear in `create` and
//! `invite` events; the cards (names, prekeys, flags) travel sealed under
//! the room's roster secrets. A device that holds them opens each card
//! once, when its event enters the DAG (or, for a new member, when its own
//! invite gives it the secrets; for a member, when an admin's key share
//! gives it a rotated one); a carrier without them sees members without
//! cards. A card that does not open is left unread: the event counts all
//! the same, so every device reaches the same membership.

use std::collections::BTreeMap;

use crate::crypto::card::ContactCard;
use crate::crypto::keys::DeviceId;
use crate::crypto::roster::{MAX_ROSTER_SECRETS, RosterSecret};
use crate::event::{EventId, RoomId};
use crate::room::membership::{Membership, derive_room_id};

/// The roster secrets (when held) and the cards they opened, by event.
/// The first secret is the room's own (it opens the create card); later
/// ones are rotations (`protocol-spec/encryption.md` §6.2). At most
/// [`MAX_ROSTER_SECRETS`]; the opened cards are bounded by the room's
/// membership events (`MAX_MEMBERSHIP_EVENTS`).
#[derive(Debug, Clone, Default)]
pub struct Roster {
    secrets: Vec<RosterSecret>,
    opened: BTreeMap<EventId, ContactCard>,
}

impl Roster {
    /// The secrets held, oldest first (empty: a carrier, or an invitee
    /// before its invite).
    pub fn secrets(&self) -> &[RosterSecret] {
        &self.secrets
    }

    /// Sets secrets this device already accepted (its own persisted room
    /// keys, or its own new room), before the events are fed.
    pub fn preset(&mut self, secrets: Vec<RosterSecret>) {
        self.secrets = secrets;
        self.secrets.truncate(MAX_ROSTER_SECRETS);
    }

    /// Opens the card of membership event `id`, when it is sealed under a
    /// secret held (the newest is tried first).
    pub fn note(&mut self, room: &RoomId, id: EventId, m: &Membership) {
        let (Some(sealed), Some(device)) = (m.sealed_card(), m.named()) else {
            return;
        };
        if self.opened.contains_key(&id) {
            return;
        }
        if let Some(card) = self
            .secrets
            .iter()
            .rev()
            .find_map(|s| sealed.open(s, room, &device).ok())
        {
            self.opened.insert(id, card);
        }
    }

    /// The readable card of membership event `id`: in clear, or opened.
    pub fn card<'a>(&'a self, id: &EventId, m: &'a Membership) -> Option<&'a ContactCard> {
        m.clear_card().or_else(|| self.opened.get(id))
    }

    /// Adds secrets learnt later (a rotation in an admin's key share, or
    /// the list in this device's invite) and opens the cards they seal.
    /// Beyond [`MAX_ROSTER_SECRETS`] the oldest rotation is dropped, never
    /// the room's own secret. Returns whether any secret was new.
    pub fn add<'a>(
        &mut self,
        room: &RoomId,
        secrets: &[RosterSecret],
        events: impl Iterator<Item = (EventId, &'a Membership)>,
    ) -> bool {
        if self.secrets.is_empty() {
            return false;
        }
        let mut new = false;
        for s in secrets {
            if !self.secrets.contains(s) {
                if self.secrets.len() >= MAX_ROSTER_SECRETS {
                    self.secrets.remove(1);
                }
                self.secrets.push(s.clone());
                new = true;
            }
        }
        if new {
            for (id, m) in events {
                self.note(room, id, m);
            }
        }
        new
    }

    /// Offers the secrets from this device's invite, the room's own first.
    /// They are taken only if the first opens the card of the room's
    /// well-formed sealed `create` among `events` (so a secret of an
    /// inviter's making is never taken as the room's); then every sealed
    /// card of `events` is opened. Returns whether they were taken. Secrets
    /// already held are kept (see [`Roster::add`] for later ones).
    pub fn offer<'a>(
        &mut self,
        room: &RoomId,
        secrets: Vec<RosterSecret>,
        events: impl Iterator<Item = (EventId, DeviceId, &'a Membership)> + Clone,
    ) -> bool {
        let Some(first) = secrets.first() else {
            return false;
        };
        if !self.secrets.is_empty() {
            return false;
        }
        let genesis_opens = events.clone().any(|(_, sender, m)| {
            matches!(m, Membership::CreateSealed { creator, nonce, card }
                if *creator == sender
                    && derive_room_id(creator, nonce) == *room
                    && card.open(first, room, creator).is_ok())
        });
        if !genesis_opens {
            return false;
        }
        self.secrets = vec![first.clone()];
        self.add(
            room,
            &secrets[1..],
            events.clone().map(|(id, _, m)| (id, m)),
        );
        for (id, _, m) in events {
            self.note(room, id, m);
        }
        true
    }
}
