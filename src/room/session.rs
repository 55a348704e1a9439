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

/// Most passes of a rebuild over stored events (the first, then offers
/// again of what a pending quota refused).
pub const MAX_REBUILD_PASSES: usize = 4;
/// Most events remembered for another pass (ID and sender), offered again
/// or waiting for their sender's standing: beyond it, an event refused by
/// a quota is dropped from the rebuilt view (still stored).
pub const MAX_REBUILD_RETRIES: usize = 65_536;
/// Most dropped events a rebuild lists with their reasons (the rest are
/// only counted): what `room repair` reports (`protocol-spec/daemon.md`,
/// "Control API").
pub const MAX_REBUILD_DROPPED_LISTED: usize = 256;

/// Why a rebuild leaves out an event a pending quota refused on every
/// pass.
pub const NO_STANDING_REASON: &str = "its sender has no standing in the room";
/// Why a rebuild leaves out an event still refused after the last pass.
pub const STILL_WAITING_REASON: &str = "still refused by a pending quota after the last pass";

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

/// A session being rebuilt from stored events ([`RoomSession::rebuild`]).
#[derive(Debug)]
pub struct Rebuild {
    session: RoomSession,
    /// Members' prekey updates, applied at the end (they need the
    /// membership of the whole history).
    updates: Vec<Event>,
    /// Events a pending quota refused, to offer again once their sender
    /// has standing (its invite may be among the events offered again);
    /// left out at the end if not. An outsider never gains standing, so
    /// its events are never read again: its flood costs one pass.
    retry: Vec<(EventId, DeviceId)>,
}

/// An event a rebuild left out, with why ([`RoomSession::dropped_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The event.
    pub event_id: EventId,
    /// Why (one line).
    pub reason: String,
}

impl Rebuild {
    /// Adds one stored event (verified when it was stored; not re-verified
    /// here). Returns whether the DAG holds it (admitted, or waiting for
    /// predecessors); refused events are counted in
    /// [`RoomSession::dropped`].
    pub fn add(&mut self, e: &Event) -> bool {
        let s = &mut self.session;
        match s.dag.insert_from_store(e) {
            Ok(_) => {
                if e.kind() == EventKind::PrekeyUpdate && e.sender() != s.me {
                    self.updates.push(e.clone());
                }
                true
            }
            Err(DagError::StrangerPendingFull | DagError::PendingFull)
                if self.retry.len() < MAX_REBUILD_RETRIES =>
            {
                // Stored order is (time, ID), not causal: a sender whose
                // clock runs behind can come before the event that gives it
                // standing. Offered again after this pass.
                self.retry.push((e.id(), e.sender()));
                false
            }
            Err(err) => {
                s.note_dropped(e.id(), err.to_string());
                false
            }
        }
    }

    /// Events a pending quota refused so far whose sender has standing
    /// now: the caller offers them again (in stored order) after the pass,
    /// at most [`MAX_REBUILD_PASSES`] passes in all. The others wait
    /// (their sender may gain standing in the next pass: the invite that
    /// gives it may itself be among the events offered again); an
    /// outsider's never gain it, so its flood costs one pass.
    pub fn take_retry(&mut self) -> Vec<EventId> {
        let standing = self.session.dag.standing();
        let (again, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retry)
            .into_iter()
            .partition(|(_, sender)| standing.contains(sender));
        self.retry = later;
        again.into_iter().map(|(id, _)| id).collect()
    }

    /// Runs the whole rebuild: `scan` passes every stored event (in stored
    /// order) to the function it is given; events a pending quota refused
    /// are then read again with `fetch` and offered again, in stored
    /// order, at most [`MAX_REBUILD_PASSES`] passes in all. Returns the
    /// session and the events its DAG holds (admitted or waiting for
    /// predecessors) when `keep`, in the order they were admitted (refused
    /// events are never kept). The one rebuild loop of [`RoomSession::restore`], the
    /// application's room loading and `room repair`.
    pub fn replay<E>(
        mut self,
        scan: impl FnOnce(&mut dyn FnMut(Event)) -> Result<(), E>,
        mut fetch: impl FnMut(&EventId) -> Result<Option<Event>, E>,
        keep: bool,
    ) -> Result<(RoomSession, Vec<Event>), E> {
        let mut kept = Vec::new();
        scan(&mut |ev: Event| {
            if self.add(&ev) && keep {
                kept.push(ev);
            }
        })?;
        for _ in 1..MAX_REBUILD_PASSES {
            let retry = self.take_retry();
            if retry.is_empty() {
                break;
            }
            for id in retry {
                if let Some(ev) = fetch(&id)?
                    && self.add(&ev)
                    && keep
                {
                    kept.push(ev);
                }
            }
        }
        Ok((self.finish(), kept))
    }

    /// The rebuilt session. Events still waiting for a retry count as
    /// dropped.
    pub fn finish(self) -> RoomSession {
        let mut s = self.session;
        for (id, sender) in self.retry {
            let reason = if s.dag.standing().contains(&sender) {
                STILL_WAITING_REASON
            } else {
                NO_STANDING_REASON
            };
            s.note_dropped(id, reason.to_owned());
        }
        // Members' rotated prekeys: senders must seal to the newest.
        for e in &self.updates {
            if let Ok(u) = accept_prekey_update(&mut s.dag, e) {
                s.note_prekey_update(e.sender(), u);
            }
        }
        s.members_seen = s.dag.members();
        s.next_seq = s.dag.max_seq(&s.me) + 1;
        s
    }
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

    /// Rebuilds a session from persisted keys and the events in this node's
    /// store (verified when they were stored; not re-verified here). Events
    /// the DAG refuses (admission, limits) are left out and counted
    /// ([`RoomSession::dropped`]): the offending sender's events are
    /// dropped, never the room (`protocol-spec/rooms.md`, "Admission").
    pub fn restore<'a>(
        room: RoomId,
        me: DeviceId,
        keys: &[u8],
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Self, SessionError> {
        let order: Vec<&Event> = events.into_iter().collect();
        let events: BTreeMap<EventId, &Event> = order.iter().map(|e| (e.id(), *e)).collect();
        let (s, _) = Self::rebuild(room, me, keys)?.replay(
            |add| {
                order.iter().for_each(|e| add((*e).clone()));
                Ok::<(), SessionError>(())
            },
            |id| Ok(events.get(id).map(|e| (*e).clone())),
            false,
        )?;
        Ok(s)
    }

    /// Starts a streaming rebuild (see [`RoomSession::restore`]): feed
    /// stored events with [`Rebuild::add`], in any order, then
    /// [`Rebuild::finish`]. Only what the DAG admits is kept in memory.
    pub fn rebuild(room: RoomId, me: DeviceId, keys: &[u8]) -> Result<Rebuild, SessionError> {
        let mut session = Self::new(room, me);
        session.keys = RoomKeys::from_bytes(keys)?;
        session
            .dag
            .preset_roster_secrets(session.keys.roster.clone());
        Ok(Rebuild {
            session,
            updates: Vec::new(),
            retry: Vec::new(),
        })
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

    /// Decrypts one message event again (for example after
    /// [`Received::KeysInstalled`]).
    /// The sender's authorisation at the event's causal position is
    /// checked first (`rooms.md` §5): a removed member's later message is
    /// never decrypted, whatever keys this device holds.
    pub fn decrypt(&mut self, event: &Event) -> Result<Content, String> {
        if !self.dag.sender_authorized_at(&event.id(), &event.sender()) {
            return Err(UNAUTHORIZED_REASON.to_owned());
        }
        let pt = decrypt_message(&mut self.keys, event).map_err(|e| e.to_string())?;
        let content = Content::from_bytes(&pt).map_err(|e| e.to_string())?;
        // A receipt's content only in a `Receipt` event, and only there.
        if matches!(content, Content::Receipt(_)) != (event.kind() == EventKind::Receipt) {
            return Err("the content does not match the event's kind".to_owned());
        }
        Ok(content)
    }

    /// Derives the room-key state again from the events the DAG holds
    /// (`room repair`, `protocol-spec/app.md` §7): starts from empty keys,
    /// accepts the key shares sealed to this device (in display order, so
    /// a chain is installed before the messages that use it), decrypts
    /// every message of another member, and forgets the chains of senders
    /// who are no longer members. This device's own sending chain cannot be
    /// derived from events: the next send starts a new one. `events` are
    /// the events the DAG holds ([`Rebuild::replay`]).
    pub fn rederive_keys(&mut self, prekeys: &PrekeyRing, events: &[Event]) -> Rederived {
        let roster = std::mem::take(&mut self.keys.roster);
        self.keys = RoomKeys::new(self.room());
        self.keys.roster = roster;
        self.needs_epoch = true;
        self.share_pending.clear();
        let by_id: BTreeMap<EventId, &Event> = events.iter().map(|e| (e.id(), e)).collect();
        let mut out = Rederived::default();
        for id in self.dag.display_order() {
            let Some(ev) = by_id.get(&id) else { continue };
            if ev.sender() == self.me {
                continue;
            }
            match ev.kind() {
                EventKind::KeyShare => match accept_key_share(&mut self.dag, ev, &self.me, prekeys)
                {
                    Ok(accepted) => self.install_share(accepted),
                    Err(KeyError::Share(KeyShareError::NotForMe)) => {}
                    Err(_) => out.shares_refused += 1,
                },
                EventKind::Message | EventKind::Receipt => match self.decrypt(ev) {
                    Ok(content) => out.readable.push((id, content)),
                    Err(reason) => out.unreadable.push((id, reason)),
                },
                EventKind::Membership => {
                    self.take_roster_secret(ev, prekeys);
                }
                _ => {}
            }
        }
        let now = self.dag.members();
        let gone: Vec<DeviceId> = self
            .keys
            .senders()
            .into_iter()
            .filter(|d| !now.is_member(d))
            .collect();
        for d in &gone {
            self.keys.forget_sender(d);
        }
        self.members_seen = now;
        out
    }

    /// Handles one verified-or-not incoming event of this room. The caller
    /// stores the event (if the DAG accepted or holds it) and persists
    /// [`RoomSession::keys_bytes`] afterwards.
    pub fn receive(
        &mut self,
        prekeys: &PrekeyRing,
        event: &Event,
    ) -> Result<Vec<Received>, SessionError> {
        if event.sender() == self.me
            && !self.dag.contains(&event.id())
            && event.seq() >= self.next_seq
        {
            // Another copy of this device used our sequence numbers: continue
            // above them and start a new chain before the next message.
            self.next_seq = event.seq() + 1;
            self.needs_epoch = true;
        }
        let accepted = match self.dag.insert_full(event)? {
            (Inserted::Duplicate, _) => return Ok(Vec::new()),
            (Inserted::Pending { missing }, _) => {
                return Ok(vec![Received::Pending {
                    event_id: event.id(),
                    missing,
                }]);
            }
            (Inserted::Accepted(_), events) => events,
        };
        let mut out = Vec::new();
        let mut membership_changed = false;
        for ev in accepted {
            let id = ev.id();
            if id != event.id() {
                out.push(Received::Released { event_id: id });
            }
            if ev.sender() == self.me {
                continue;
            }
            match ev.kind() {
                EventKind::KeyShare => {
                    match accept_key_share(&mut self.dag, &ev, &self.me, prekeys) {
                        Ok(accepted) => {
                            let sender = accepted.chain.sender();
                            self.install_share(accepted);
                            out.push(Received::KeysInstalled { sender });
                        }
                        Err(KeyError::Share(KeyShareError::NotForMe)) => {}
                        Err(e) => out.push(Received::KeyRejected {
                            event_id: id,
                            reason: e.to_string(),
                        }),
                    }
                }
                EventKind::PrekeyUpdate => match accept_prekey_update(&mut self.dag, &ev) {
                    Ok(u) => self.note_prekey_update(ev.sender(), u),
                    Err(e) => out.push(Received::KeyRejected {
                        event_id: id,
                        reason: e.to_string(),
                    }),
                },
                EventKind::Message | EventKind::Receipt => {
                    let (sender, ts) = (ev.sender(), ev.origin_ts_ms());
                    out.push(match self.decrypt(&ev) {
                        Ok(content) => Received::Message {
                            event_id: id,
                            sender,
                            ts,
                            content,
                        },
                        Err(reason) => Received::Undecryptable {
                            event_id: id,
                            sender,
                            ts,
                            reason,
                        },
                    });
                }
                EventKind::Membership => {
                    membership_changed = true;
                    self.take_roster_secret(&ev, prekeys);
                    out.push(Received::Membership {
                        event_id: id,
                        rejected: None,
                    });
                }
                _ => {}
            }
        }
        if membership_changed {
            let res = self.dag.resolve().clone();
            for r in &mut out {
                if let Received::Membership { event_id, rejected } = r {
                    *rejected = res
                        .verdicts
                        .get(event_id)
                        .and_then(|v| v.as_ref().err())
                        .map(|e| e.to_string());
                }
            }
            let now = res.state;
            if needs_new_epoch(&self.members_seen, &now) {
                self.needs_epoch = true;
            }
            // A removed (or departed) member's chains are forgotten: its
            // messages at later positions can no longer be decrypted here.
            for d in self.members_seen.members.keys() {
                if !now.is_member(d) {
                    self.keys.forget_sender(d);
                }
            }
            for d in now.members.keys() {
                if *d != self.me && !self.members_seen.is_member(d) {
                    self.share_pending.insert(*d);
                }
            }
            self.share_pending.retain(|d| now.is_member(d));
            self.members_seen = now;
        }
        Ok(out)
    }
}
