//! One room as one device sees it: the glue between the DAG, membership
//! resolution, sender chains and key shares that the node and the CLI use
//! (`protocol-spec/rooms.md`, `protocol-spec/encryption.md`).
//!
//! Pure and deterministic: time and randomness are parameters, and every
//! operation that creates events returns an [`Outgoing`] holding the events
//! and the room-key state to persist. **Persist the keys (and store the
//! events) before transmitting any of them**: that is what makes a crash
//! unable to reuse a chain position.
//!
//! Incoming events go through [`RoomSession::receive`], which inserts them
//! into the DAG (verifying signatures), accepts key shares only through the
//! key-share channel from members, decrypts messages and reports what the
//! user should see, including undecryptable messages with their reason.

use std::collections::BTreeMap;

use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::card::ContactCard;
use crate::crypto::identity::Identity;
use crate::crypto::key_share::{KeyShareError, PrekeyRing, PrekeyUpdate, Recipient, seal_shares};
use crate::crypto::keys::DeviceId;
use crate::crypto::roster::{RosterError, RosterSecret, SealedCard, SealedSecret};
use crate::crypto::sender_chain::{ChainError, OutboundChain};
use crate::event::{Event, EventError, EventId, EventKind, RoomId, UnsignedEvent};
use crate::limits::DEFAULT_EVENT_LIFETIME_MS;
use crate::room::attachment::seal_chunks;
use crate::room::content::Content;
use crate::room::dag::{DagError, Gap, Inserted, RoomDag};
use crate::room::keys::{
    AcceptedShare, KeyError, RoomKeys, accept_key_share, accept_prekey_update, decrypt_message,
    needs_new_epoch, recipients,
};
use crate::room::membership::{Membership, derive_room_id};
use crate::room::resolve::{AuthError, MembershipState};

mod rebuild;
mod receive;

pub use rebuild::{
    Dropped, MAX_REBUILD_DROPPED_LISTED, MAX_REBUILD_PASSES, MAX_REBUILD_RETRIES,
    NO_STANDING_REASON, Rebuild, STILL_WAITING_REASON,
};

/// The reason recorded for a message whose sender was not authorised at
/// its causal position (`protocol-spec/rooms.md` §5).
pub const UNAUTHORIZED_REASON: &str =
    "sender was not a member of the room at this point of its history";

/// Why a local room operation failed.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The DAG refused an event.
    #[error("{0}")]
    Dag(#[from] DagError),
    /// Signing failed (a limit was exceeded).
    #[error("{0}")]
    Event(#[from] EventError),
    /// Encryption failed (content too long).
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// Sealing key shares failed.
    #[error("{0}")]
    KeyShare(#[from] KeyShareError),
    /// Persisted key state is malformed.
    #[error("{0}")]
    Keys(#[from] KeyError),
    /// This device is not a member of the room.
    #[error("this device is not a member of the room")]
    NotMember,
    /// `send_file` without an attachment announcement.
    #[error("not an attachment")]
    NotAttachment,
    /// The file does not match its announcement.
    #[error(transparent)]
    Attachment(#[from] crate::room::attachment::AttachmentError),
    /// The local change would be invalid (checked before signing).
    #[error("change not allowed: {0}")]
    NotAllowed(AuthError),
    /// Sealing a card or the roster secret failed.
    #[error("{0}")]
    Roster(#[from] RosterError),
}

/// Events created locally plus the key state to persist before sending.
#[derive(Debug)]
#[must_use = "persist keys() and store the events before transmitting them"]
pub struct Outgoing {
    keys: Zeroizing<Vec<u8>>,
    events: Vec<Event>,
}

impl Outgoing {
    /// The room-key state after these events (`RoomKeys::to_bytes`).
    pub fn keys(&self) -> &[u8] {
        &self.keys
    }

    /// The events, to store and then transmit (after the keys are durable).
    pub fn release(self) -> Vec<Event> {
        self.events
    }
}

/// What receiving an event means for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The event waits for missing predecessors.
    Pending {
        /// The event.
        event_id: EventId,
        /// Predecessors to fetch.
        missing: Vec<EventId>,
    },
    /// A decrypted message.
    Message {
        /// Event.
        event_id: EventId,
        /// Sender.
        sender: DeviceId,
        /// Origin timestamp.
        ts: u64,
        /// Decrypted content.
        content: Content,
    },
    /// A message this device cannot read; never silently dropped.
    Undecryptable {
        /// Event.
        event_id: EventId,
        /// Sender.
        sender: DeviceId,
        /// Origin timestamp.
        ts: u64,
        /// Why.
        reason: String,
    },
    /// A membership event and its current verdict.
    Membership {
        /// Event.
        event_id: EventId,
        /// `None` if valid, else why not.
        rejected: Option<String>,
    },
    /// A sender's chain was installed: retry its undecryptable messages.
    KeysInstalled {
        /// Whose chain.
        sender: DeviceId,
    },
    /// An event that waited for predecessors entered the room's history
    /// (it was stored while waiting; its class may now change).
    Released {
        /// Event.
        event_id: EventId,
    },
    /// A key share or prekey update was refused.
    KeyRejected {
        /// Event.
        event_id: EventId,
        /// Why.
        reason: String,
    },
}

/// What [`RoomSession::rederive_keys`] found.
#[derive(Debug, Default)]
pub struct Rederived {
    /// Messages of other members decrypted, in display order.
    pub readable: Vec<(EventId, Content)>,
    /// Messages of other members that could not be, with why.
    pub unreadable: Vec<(EventId, String)>,
    /// Key shares for this device that were refused.
    pub shares_refused: usize,
}

/// One room from one device's point of view. See the module docs.
#[derive(Debug)]
pub struct RoomSession {
    me: DeviceId,
    /// Stored events the rebuild left out (refused by admission or over a
    /// limit): someone else's events never abort a rebuild.
    dropped: usize,
    /// The first [`MAX_REBUILD_DROPPED_LISTED`] of them, with reasons.
    dropped_listed: Vec<Dropped>,
    dag: RoomDag,
    keys: RoomKeys,
    prekey_updates: BTreeMap<DeviceId, PrekeyUpdate>,
    members_seen: MembershipState,
    needs_epoch: bool,
    /// Members added by others since this device last shared its chain.
    share_pending: std::collections::BTreeSet<DeviceId>,
    next_seq: u64,
    /// Own events the events emitted now do not cite (an urgent send:
    /// [`RoomSession::send_citing_around`]); empty otherwise.
    cite_around: std::collections::BTreeSet<EventId>,
    /// This device's receipts folded so far ([`RoomSession::take_own_receipts`]).
    own_receipts: crate::room::OwnReceipts,
}

impl RoomSession {
    /// An empty session for `room` (an invitee, or a courier holding events
    /// of a room it is not in). Feed it events with [`RoomSession::receive`].
    pub fn new(room: RoomId, me: DeviceId) -> Self {
        Self {
            me,
            dropped: 0,
            dropped_listed: Vec::new(),
            dag: RoomDag::new(room),
            keys: RoomKeys::new(room),
            prekey_updates: BTreeMap::new(),
            members_seen: MembershipState::default(),
            needs_epoch: false,
            share_pending: std::collections::BTreeSet::new(),
            next_seq: 1,
            cite_around: std::collections::BTreeSet::new(),
            own_receipts: crate::room::OwnReceipts::default(),
        }
    }

    /// Creates a room. `nonce` MUST be random; the room ID commits to it.
    /// The room's roster secret is drawn here and the creator's card is
    /// sealed under it (`crate::crypto::roster`).
    pub fn create<R: CryptoRng + ?Sized>(
        identity: &Identity,
        card: &ContactCard,
        nonce: [u8; 16],
        now_ms: u64,
        rng: &mut R,
    ) -> Result<(Self, Outgoing), SessionError> {
        let creator = identity.device_id();
        let room = derive_room_id(&creator, &nonce);
        let mut s = Self::new(room, creator);
        let secret = RosterSecret::generate(rng);
        let card = SealedCard::seal(&secret, &room, card, rng)?;
        s.dag.preset_roster_secrets(vec![secret.clone()]);
        s.keys.roster = vec![secret];
        let ev = s.emit(
            identity,
            EventKind::Membership,
            Membership::CreateSealed {
                creator,
                nonce,
                card,
            }
            .to_bytes(),
            now_ms,
        )?;
        s.members_seen = s.dag.members();
        let out = s.outgoing(vec![ev]);
        Ok((s, out))
    }

    /// Makes this device's next event take a sequence number above `seq`
    /// (the store's high-water mark for this device in the room): a
    /// rebuild that leaves out an own event (waiting for a predecessor, or
    /// staged and not received yet) must not reuse its number, or the copy
    /// with the lower ID displaces the other at every member as a fork
    /// (`protocol-spec/rooms.md` §7.1).
    pub fn continue_after(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
    }

    /// Stored events the last rebuild left out.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The first [`MAX_REBUILD_DROPPED_LISTED`] events the rebuild left
    /// out, with reasons.
    pub fn dropped_events(&self) -> &[Dropped] {
        &self.dropped_listed
    }

    fn note_dropped(&mut self, event_id: EventId, reason: String) {
        self.dropped += 1;
        if self.dropped_listed.len() < MAX_REBUILD_DROPPED_LISTED {
            self.dropped_listed.push(Dropped { event_id, reason });
        }
    }

    /// The room.
    pub fn room(&self) -> RoomId {
        self.dag.room()
    }

    /// The DAG (read access: display order, gaps, heads...).
    pub fn dag(&mut self) -> &mut RoomDag {
        &mut self.dag
    }

    /// This device's receipts folded so far (the app layer reads their
    /// plaintexts); give them back with [`RoomSession::keep_own_receipts`].
    pub fn take_own_receipts(&mut self) -> crate::room::OwnReceipts {
        std::mem::take(&mut self.own_receipts)
    }

    /// Keeps what [`RoomSession::take_own_receipts`] lent, brought up to date.
    pub fn keep_own_receipts(&mut self, own: crate::room::OwnReceipts) {
        self.own_receipts = own;
    }

    /// Current membership.
    pub fn members(&mut self) -> MembershipState {
        self.dag.members()
    }

    /// Sequence gaps to show.
    pub fn gaps(&self) -> Vec<Gap> {
        self.dag.gaps()
    }

    /// The room-key state to persist (`RoomKeys::to_bytes`).
    pub fn keys_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.keys.to_bytes()
    }

    fn outgoing(&self, events: Vec<Event>) -> Outgoing {
        Outgoing {
            keys: self.keys.to_bytes(),
            events,
        }
    }

    fn emit(
        &mut self,
        identity: &Identity,
        kind: EventKind,
        payload: Vec<u8>,
        now_ms: u64,
    ) -> Result<Event, SessionError> {
        let prev = self.dag.heads_without(&self.cite_around);
        self.emit_citing(identity, kind, payload, now_ms, prev)
    }

    /// [`RoomSession::emit`] citing `prev` (a chunk cites its announcement).
    fn emit_citing(
        &mut self,
        identity: &Identity,
        kind: EventKind,
        payload: Vec<u8>,
        now_ms: u64,
        prev: Vec<EventId>,
    ) -> Result<Event, SessionError> {
        let seq = self.next_seq.max(self.dag.max_seq(&self.me) + 1);
        let ev = UnsignedEvent {
            room: self.room(),
            sender: self.me,
            seq,
            prev,
            origin_ts_ms: now_ms,
            expires_ms: now_ms.saturating_add(DEFAULT_EVENT_LIFETIME_MS),
            kind,
            payload,
        }
        .sign(identity)?;
        self.dag.insert(&ev)?;
        self.next_seq = seq + 1;
        Ok(ev)
    }

    fn share_to<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        to: &[Recipient],
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Vec<Event>, SessionError> {
        let Some(chain) = &self.keys.outbound else {
            return Ok(Vec::new());
        };
        let mut share = chain.share();
        // An admin's shares carry its newest roster secret: how the other
        // members learn a rotation (`crate::crypto::roster`).
        if self.dag.members().is_admin(&self.me) {
            share.roster = self
                .dag
                .roster_secrets()
                .last()
                .map(|r| Zeroizing::new(*r.as_bytes()));
        }
        let mut out = Vec::new();
        for p in seal_shares(&self.room(), &self.me, &share, to, rng)? {
            out.push(self.emit(identity, EventKind::KeyShare, p.to_bytes(), now_ms)?);
        }
        Ok(out)
    }

    /// Starts and shares a new chain. After a removal (`removal`), an admin
    /// first draws a new roster secret, which its shares carry: the removed
    /// member cannot read the cards of members invited from now on.
    fn new_chain<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        now_ms: u64,
        rng: &mut R,
        removal: bool,
    ) -> Result<Vec<Event>, SessionError> {
        if removal && !self.dag.roster_secrets().is_empty() && self.dag.members().is_admin(&self.me)
        {
            self.add_roster_secret(RosterSecret::generate(rng));
        }
        self.keys.outbound = Some(OutboundChain::new(self.room(), now_ms, rng));
        self.needs_epoch = false;
        self.share_pending.clear();
        let state = self.dag.members();
        let to = recipients(&state, &self.me, &self.prekey_updates);
        self.share_to(identity, &to, now_ms, rng)
    }

    /// Makes a membership change (invite, remove, leave, promote, demote)
    /// with its follow-ups: an invitee gets this device's current chain
    /// position; after a remove or leave this device starts a new chain for
    /// the remaining members. In a room with a roster secret, an invite
    /// given with a clear card is sent sealed: the card under the roster
    /// secret, the secret to the invitee's prekey.
    pub fn change<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        change: Membership,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Outgoing, SessionError> {
        if !self.dag.members().is_member(&self.me) {
            return Err(SessionError::NotMember);
        }
        // After a removal not yet rotated for, an invite first starts a new
        // chain (and roster secret) the removed member never gets.
        let mut events = Vec::new();
        if self.needs_epoch && change.invitee().is_some() {
            events.extend(self.new_chain(identity, now_ms, rng, true)?);
        }
        let change = self.seal_invite(change, rng)?;
        let before = self.dag.members();
        let ev = self.emit(identity, EventKind::Membership, change.to_bytes(), now_ms)?;
        if let Some(Err(e)) = self.dag.resolve().verdicts.get(&ev.id()).cloned() {
            // Never happens for a well-formed local change; refuse to send.
            return Err(SessionError::NotAllowed(e));
        }
        events.push(ev);
        let after = self.dag.members();
        if let Some(invitee) = change.invitee() {
            let to = recipients(&after, &self.me, &self.prekey_updates);
            let to: Vec<Recipient> = to.into_iter().filter(|r| r.device == invitee).collect();
            events.extend(self.share_to(identity, &to, now_ms, rng)?);
        }
        if needs_new_epoch(&before, &after) && after.is_member(&self.me) {
            events.extend(self.new_chain(identity, now_ms, rng, true)?);
        }
        self.members_seen = after;
        Ok(self.outgoing(events))
    }

    /// An invite with a clear card, sealed when the room has a roster
    /// secret (rooms created before the sealed roster keep clear cards).
    fn seal_invite<R: CryptoRng + ?Sized>(
        &self,
        change: Membership,
        rng: &mut R,
    ) -> Result<Membership, SessionError> {
        let secrets = self.dag.roster_secrets();
        let (Membership::Invite { card }, Some(current)) = (&change, secrets.last()) else {
            return Ok(change);
        };
        let room = self.room();
        let to = Recipient {
            device: card.device_id,
            prekey_id: card.prekey_id,
            prekey: card.prekey,
        };
        Ok(Membership::InviteSealed {
            invitee: card.device_id,
            card: SealedCard::seal(current, &room, card, rng)?,
            secret: SealedSecret::seal(secrets, &room, &self.me, &to, rng)?,
        })
    }

    /// Reads the roster secrets from `ev` when it is this device's sealed
    /// invite and none is held yet (`crate::room::roster`). Returns whether
    /// they were accepted.
    fn take_roster_secret(&mut self, ev: &Event, prekeys: &PrekeyRing) -> bool {
        if !self.dag.roster_secrets().is_empty() || ev.kind() != EventKind::Membership {
            return false;
        }
        let Ok(Membership::InviteSealed {
            invitee, secret, ..
        }) = Membership::from_bytes(ev.payload())
        else {
            return false;
        };
        if invitee != self.me {
            return false;
        }
        let Ok(opened) = secret.open(&self.room(), &ev.sender(), &self.me, prekeys) else {
            return false;
        };
        if !self.dag.offer_roster_secrets(opened) {
            return false;
        }
        self.keys.roster = self.dag.roster_secrets().to_vec();
        true
    }

    /// Adds a roster secret (drawn here, or from an admin's share) to the
    /// DAG's list, and the room keys' copy of it (persisted).
    fn add_roster_secret(&mut self, secret: RosterSecret) {
        if self.dag.add_roster_secret(secret) {
            self.keys.roster = self.dag.roster_secrets().to_vec();
        }
    }

    /// Installs an accepted key share: the chain, and the roster secret an
    /// admin's share carries (a rotation).
    fn install_share(&mut self, accepted: AcceptedShare) {
        self.keys.install(accepted.chain);
        if let Some(r) = accepted.roster {
            self.add_roster_secret(r);
        }
    }

    /// Encrypts and signs a message (starting and sharing a new chain first
    /// when needed: none yet, a removal was seen, a clone was detected, or
    /// rotation is due).
    pub fn send<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        content: &Content,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Outgoing, SessionError> {
        self.send_citing_around(identity, content, Default::default(), now_ms, rng)
    }

    /// [`RoomSession::send`], but the new events cite the DAG's heads
    /// without `around` ([`RoomDag::heads_without`]): an urgent message
    /// does not cite this device's own backlog that no peer holds yet, so
    /// it can be read before that backlog arrives (`protocol-spec/wire.md`,
    /// "Urgent messages").
    pub fn send_citing_around<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        content: &Content,
        around: std::collections::BTreeSet<EventId>,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Outgoing, SessionError> {
        self.cite_around = around;
        let r = self.send_inner(identity, content, now_ms, rng);
        self.cite_around.clear();
        r
    }

    /// Sends a file (`protocol-spec/attachments.md`): `content`, an
    /// attachment announcement (urgent or not) for `file`, as a message,
    /// then the file's chunks, each citing only the announcement.
    pub fn send_file<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        content: &Content,
        file: &[u8],
        around: std::collections::BTreeSet<EventId>,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Outgoing, SessionError> {
        let inner = match content {
            Content::Urgent(c) => c.as_ref(),
            c => c,
        };
        let Content::Attachment { file: a, .. } = inner else {
            return Err(SessionError::NotAttachment);
        };
        let out = self.send_citing_around(identity, content, around, now_ms, rng)?;
        let Outgoing { keys, mut events } = out;
        let announce = events
            .last()
            .map(Event::id)
            .ok_or(SessionError::NotAttachment)?;
        for c in seal_chunks(a, &announce, file)? {
            events.push(self.emit_citing(
                identity,
                EventKind::Chunk,
                c.to_bytes(),
                now_ms,
                vec![announce],
            )?);
        }
        Ok(Outgoing { keys, events })
    }

    fn send_inner<R: CryptoRng + ?Sized>(
        &mut self,
        identity: &Identity,
        content: &Content,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Outgoing, SessionError> {
        if !self.dag.members().is_member(&self.me) {
            return Err(SessionError::NotMember);
        }
        let mut events = Vec::new();
        let rotate = self
            .keys
            .outbound
            .as_ref()
            .is_none_or(|c| c.should_rotate(now_ms));
        if rotate || self.needs_epoch {
            let removal = self.needs_epoch;
            events.extend(self.new_chain(identity, now_ms, rng, removal)?);
        } else if !self.share_pending.is_empty() {
            // Members invited by others get this chain from its current
            // position before the next message.
            let state = self.dag.members();
            let to: Vec<Recipient> = recipients(&state, &self.me, &self.prekey_updates)
                .into_iter()
                .filter(|r| self.share_pending.contains(&r.device))
                .collect();
            self.share_pending.clear();
            events.extend(self.share_to(identity, &to, now_ms, rng)?);
        }
        let chain = self.keys.outbound.clone().ok_or(SessionError::NotMember)?;
        let pending = chain.encrypt(&self.me, &content.to_bytes(), rng)?;
        let (next, payload) = pending.release();
        self.keys.outbound = Some(next);
        let kind = match content {
            Content::Receipt(_) => EventKind::Receipt,
            _ => EventKind::Message,
        };
        events.push(self.emit(identity, kind, payload.to_bytes(), now_ms)?);
        Ok(self.outgoing(events))
    }

    /// Remembers a member's prekey update if it is newer than the one known.
    fn note_prekey_update(&mut self, sender: DeviceId, u: PrekeyUpdate) {
        let newer = self
            .prekey_updates
            .get(&sender)
            .is_none_or(|old| old.prekey_id < u.prekey_id);
        if newer {
            self.prekey_updates.insert(sender, u);
        }
    }

    /// Publishes this device's rotated prekey to the room's members (a
    /// `PrekeyUpdate` event), so their next key shares are sealed to it.
    pub fn publish_prekey(
        &mut self,
        identity: &Identity,
        update: &PrekeyUpdate,
        now_ms: u64,
    ) -> Result<Outgoing, SessionError> {
        if !self.dag.members().is_member(&self.me) {
            return Err(SessionError::NotMember);
        }
        let ev = self.emit(identity, EventKind::PrekeyUpdate, update.to_bytes(), now_ms)?;
        Ok(self.outgoing(vec![ev]))
    }
}
