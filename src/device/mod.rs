//! The device core: the relay [`Node`] and the rooms layer (membership,
//! authorisation, key shares, sender chains, decryption) as **one**
//! sans-IO state machine with one owner of the store
//! (`protocol-spec/daemon.md`, "Device core").
//!
//! It is opened once, from keys the driver loaded ([`DeviceKeys`]), and
//! kept in memory. It reads no file, no clock and no OS randomness: the
//! time comes with every input and the RNG is a parameter. The tokio daemon
//! and the simulator drive exactly this type.
//!
//! # Run loop
//!
//! The driver repeats:
//!
//! 1. feed inputs: [`DeviceCore::handle`] (datagrams, links, timers),
//!    [`DeviceCore::handle_op`] (typed control operations),
//!    [`DeviceCore::deliver`] (homeserver envelopes), [`DeviceCore::maintain`];
//! 2. if [`DeviceCore::needs_commit`]: call [`DeviceCore::prepare_commit`]
//!    (the events the node staged pass through their rooms' sessions, so
//!    the rooms layer's verdicts, keys and plaintexts join the same
//!    transaction), commit the store, then feed [`Input::CommitDone`] (or
//!    [`DeviceCore::commit_failed`]);
//! 3. drain [`DeviceCore::poll_output`]: transmits, closes, application
//!    events, and the replies of operations, which are released only after
//!    the commit that made their effects durable (acknowledge only after
//!    commit).
//!
//! # Admission
//!
//! Before an event is stored, the node classes it by its sender's standing
//! in the room, which this core keeps in step with the rooms layer after
//! every commit (`protocol-spec/store.md`, "Priority classes"); an
//! outsider's events stay stranger traffic, rate-limited per key and held
//! in the stranger pool. Before the commit, the rooms layer checks each
//! staged event at its causal position (`protocol-spec/rooms.md`,
//! "Admission"): what it refuses never enters a room's history and is
//! demoted out of the room's class, in the same transaction.

mod delivery;
mod ops;
mod receipts;

use std::collections::{BTreeSet, VecDeque};

use rand_core::{CryptoRng, Rng};
use thiserror::Error;

use crate::app::{
    AppError, Device, DeviceKeys, EventPlace, ImportSummary, MessageLine, ROOM_KEYS_PREFIX,
    SessionCache,
};
use crate::control::Reply;
use crate::crypto::{ContactCard, DeviceId};
use crate::event::{Event, EventId, EventKind, RoomId};
use crate::proto::urgent::UrgentMark;
use crate::proto::{AppEvent, Command, Input, Node, NodeConfig, Output};
use crate::store::{Source, Store, StoreError};

pub use ops::{DeliverOutcome, OpId};

/// What went wrong inside the core. Only the store failing is fatal to
/// the driver; what peers send is handled inside.
#[derive(Debug, Error)]
pub enum CoreError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rooms layer failed on this device's own state.
    #[error(transparent)]
    App(#[from] AppError),
}

/// Something the core produced for its driver.
#[derive(Debug, Clone)]
pub enum CoreOutput {
    /// A node output: a transmit, a link to close, or an application event.
    Node(Output),
    /// The replies of an operation, released after its commit.
    Replies {
        /// The driver's number for the operation.
        op: OpId,
        /// Streamed lines, then the final `ok` or `error`.
        replies: Vec<Reply>,
    },
    /// Committed events of these rooms changed what they show (followers
    /// re-read them).
    RoomsChanged(BTreeSet<RoomId>),
    /// The own contact card was re-issued (a new prekey became durable):
    /// the driver writes it where people read it (`card.txt`).
    CardIssued(Box<ContactCard>),
    /// A received event the room's rules refused (logged; never shown as a
    /// message).
    Refused {
        /// The event.
        event_id: String,
        /// Why.
        reason: String,
    },
    /// The rooms layer could not process a batch of received events (they
    /// stay stored as carried traffic).
    ProcessingFailed(String),
}

/// The device core. `S` is the store, `R` the RNG (seeded in the
/// simulator, from the OS once at start in the daemon).
pub struct DeviceCore<S: Store, R: Rng + CryptoRng> {
    own: DeviceId,
    node: Node<S, R>,
    /// The device's keys; lent to a [`Device`] during an operation only.
    keys: Option<DeviceKeys>,
    /// Room sessions kept between batches.
    sessions: SessionCache,
    /// Events the rooms layer already handled in this cycle (own events,
    /// imports, downloads): not passed through the sessions again.
    absorbed: BTreeSet<EventId>,
    /// Replies waiting for the cycle's commit.
    held: Vec<(OpId, Vec<Reply>)>,
    /// Rooms with staged events, announced after the commit.
    touched: BTreeSet<RoomId>,
    /// Writes staged outside the node (keys, plaintexts, expiry).
    dirty: bool,
    /// An operation may have rotated the prekey: check the card after the
    /// commit (never before: the new prekey must be durable first).
    card_check: bool,
    /// Rooms owed a receipt, and when.
    receipts: receipts::DueReceipts,
    /// Own events a peer showed it holds, acknowledged to the mesh with
    /// the next commit (at most `MAX_MESH_ACKS`).
    mesh_acks: BTreeSet<(RoomId, EventId)>,
    /// Whether receipts are sent.
    receipts_on: bool,
    /// How long a room's receipt gathers.
    receipt_delay_ms: u64,
    /// Messages read or sent as urgent in this cycle, for the node's
    /// queues at the commit (`protocol-spec/wire.md`, "Urgent messages").
    urgent: Vec<UrgentMark>,
    out: VecDeque<CoreOutput>,
}

impl<S: Store, R: Rng + CryptoRng> std::fmt::Debug for DeviceCore<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCore")
            .field("keys", &self.keys)
            .field("own_rooms", &self.node.own_rooms().len())
            .finish_non_exhaustive()
    }
}

impl<S: Store, R: Rng + CryptoRng> DeviceCore<S, R> {
    /// The core of the device with `keys`, over its `store` (with nothing
    /// staged), at `now_ms`. Starts carrying every room the device holds
    /// keys for.
    pub fn new(
        keys: DeviceKeys,
        store: S,
        rng: R,
        config: NodeConfig,
        now_ms: u64,
    ) -> Result<Self, CoreError> {
        let own = keys.device_id();
        let node = Node::new(own, store, rng, config, now_ms);
        let mut core = Self {
            own,
            node,
            keys: Some(keys),
            sessions: SessionCache::default(),
            absorbed: BTreeSet::new(),
            held: Vec::new(),
            touched: BTreeSet::new(),
            dirty: false,
            card_check: false,
            receipts: Default::default(),
            mesh_acks: BTreeSet::new(),
            receipts_on: true,
            receipt_delay_ms: crate::room::receipt::RECEIPT_DELAY_MS,
            urgent: Vec::new(),
            out: VecDeque::new(),
        };
        core.join_own_rooms(now_ms)?;
        // A crash between a prekey rotation's commit and the card's write
        // left the card behind: re-issue it now (the store is committed).
        core.reissue_card(now_ms);
        Ok(core)
    }

    /// This device's ID.
    pub fn device_id(&self) -> DeviceId {
        self.own
    }

    /// The node (read access: links, stats, own rooms).
    pub fn node(&self) -> &Node<S, R> {
        &self.node
    }

    /// The node, for driver-level settings ([`Node::set_admission`]).
    pub fn node_mut(&mut self) -> &mut Node<S, R> {
        &mut self.node
    }

    /// The store (read access).
    pub fn store(&self) -> &S {
        self.node.store()
    }

    /// The store, for the driver's commit and its own metadata.
    pub fn store_mut(&mut self) -> &mut S {
        self.node.store_mut()
    }

    /// Whether staged writes wait for a commit.
    pub fn needs_commit(&self) -> bool {
        self.dirty || self.node.needs_commit()
    }

    /// How many events the node stored since the last commit: the driver
    /// ends a cycle's batch of received datagrams at
    /// [`crate::daemon::driver::MAX_EVENTS_PER_CYCLE`].
    pub fn uncommitted_len(&self) -> usize {
        self.node.uncommitted_len()
    }

    /// The earliest time at which [`Input::Timeout`] must be fed.
    pub fn poll_timeout(&self) -> Option<u64> {
        [self.node.poll_timeout(), self.receipts_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next output, if any. Drain until `None` after every cycle.
    pub fn poll_output(&mut self) -> Option<CoreOutput> {
        if let Some(o) = self.out.pop_front() {
            return Some(o);
        }
        loop {
            match self.node.poll_output()? {
                Output::App(AppEvent::PeerHolds { room, items, lacks }) => {
                    self.peer_holds(room, &items, &lacks);
                }
                Output::App(AppEvent::PeerHas { room, ids }) => self.peer_has(room, &ids),
                other => return Some(CoreOutput::Node(other)),
            }
        }
    }

    /// Feeds one node input at `now_ms`. [`Input::CommitDone`] also
    /// releases the held replies and updates the rooms' standing;
    /// [`Input::CommitFailed`] answers them with a generic error (see
    /// [`DeviceCore::commit_failed`] for the driver's own reply).
    pub fn handle(&mut self, now_ms: u64, input: Input) -> Result<(), CoreError> {
        match input {
            Input::CommitDone => self.commit_done(now_ms),
            Input::CommitFailed => {
                let reply = Reply::error(
                    crate::control::ErrorCode::Runtime,
                    "the store could not commit; nothing of this was stored",
                );
                self.commit_failed(now_ms, reply)
            }
            Input::Timeout => {
                self.node.handle(now_ms, Input::Timeout)?;
                self.send_due_receipts(now_ms)
            }
            other => Ok(self.node.handle(now_ms, other)?),
        }
    }

    /// Passes what the node staged through the rooms layer (key shares,
    /// decryption, admission at causal position), so its verdicts commit
    /// together with the node's writes. Call right before committing.
    pub fn prepare_commit(&mut self, now_ms: u64) -> Result<(), CoreError> {
        self.apply_mesh_acks()?;
        let pending = self.node.uncommitted_events();
        let staged: Vec<EventId> = pending
            .iter()
            .copied()
            .filter(|id| !self.absorbed.contains(id))
            .collect();
        for id in &pending {
            if let Some(info) = self.node.store().event_info(id)? {
                self.touched.insert(info.room);
            }
        }
        if !staged.is_empty() {
            match self.absorb(&staged, now_ms) {
                Ok(sum) => self.after_absorb(sum, now_ms)?,
                // The node's events stay stored (a relay carries what it
                // cannot read); say so.
                Err(e) => self
                    .out
                    .push_back(CoreOutput::ProcessingFailed(e.to_string())),
            }
        }
        self.absorbed.clear();
        // Urgent messages read or sent in this cycle jump the queues their
        // relay after the commit goes into.
        let urgent = std::mem::take(&mut self.urgent);
        if !urgent.is_empty() {
            self.node
                .handle(now_ms, Input::Command(Command::Urgent(urgent)))?;
        }
        Ok(())
    }

    /// One whole commit cycle for a driver without its own commit policy
    /// (the simulator, tests, benches): [`DeviceCore::prepare_commit`],
    /// commit, [`Input::CommitDone`]; a failed commit rolls back and feeds
    /// [`DeviceCore::commit_failed`]. Drain [`DeviceCore::poll_output`]
    /// afterwards.
    pub fn settle(&mut self, now_ms: u64) -> Result<(), CoreError> {
        if !self.needs_commit() {
            return Ok(());
        }
        self.prepare_commit(now_ms)?;
        match self.node.store_mut().commit() {
            Ok(()) => self.handle(now_ms, Input::CommitDone),
            Err(e) => {
                self.node.store_mut().rollback()?;
                let reply = Reply::error(crate::control::ErrorCode::Runtime, e.to_string());
                self.commit_failed(now_ms, reply)
            }
        }
    }

    /// The driver committed: release what waited for it.
    fn commit_done(&mut self, now_ms: u64) -> Result<(), CoreError> {
        self.dirty = false;
        self.absorbed.clear();
        self.node.handle(now_ms, Input::CommitDone)?;
        self.join_own_rooms(now_ms)?;
        if !self.touched.is_empty() {
            let rooms = std::mem::take(&mut self.touched);
            self.out.push_back(CoreOutput::RoomsChanged(rooms));
        }
        if std::mem::take(&mut self.card_check) {
            self.reissue_card(now_ms);
        }
        for (op, replies) in self.held.drain(..) {
            self.out.push_back(CoreOutput::Replies { op, replies });
        }
        Ok(())
    }

    /// The driver's commit failed (the disk is full) and it rolled the
    /// store back: nothing staged is acknowledged or relayed, cached room
    /// sessions are dropped, and every held reply becomes `reply`.
    pub fn commit_failed(&mut self, now_ms: u64, reply: Reply) -> Result<(), CoreError> {
        self.dirty = false;
        self.absorbed.clear();
        self.touched.clear();
        self.sessions.clear();
        self.card_check = false;
        self.node.handle(now_ms, Input::CommitFailed)?;
        for (op, _) in self.held.drain(..) {
            self.out.push_back(CoreOutput::Replies {
                op,
                replies: vec![reply.clone()],
            });
        }
        Ok(())
    }

    /// Runs `f` on a [`Device`] over the node's store with this core's keys
    /// and the node's RNG (no file is read or written).
    pub(crate) fn with_device<T>(
        &mut self,
        f: impl FnOnce(&mut Device<&mut S>, &mut R) -> Result<T, AppError>,
    ) -> Result<T, AppError> {
        let Some(keys) = self.keys.take() else {
            return Err(AppError::Corrupt("the device keys are lent out".into()));
        };
        let (store, rng) = self.node.store_and_rng();
        let mut dev = Device::with_keys(keys, store);
        let r = f(&mut dev, rng);
        self.urgent.extend(dev.take_urgent());
        self.keys = Some(dev.into_keys());
        r
    }

    /// Runs `f` on a lent [`Device`] in deferred mode with the session
    /// cache (a room it changes is dropped from the cache, `send` puts back
    /// its advanced session): what it returned, and the events it made.
    pub(crate) fn on_device<T>(
        &mut self,
        f: impl FnOnce(&mut Device<&mut S>, &mut R) -> Result<T, AppError>,
    ) -> Result<(T, Vec<Event>), AppError> {
        self.forget_evicted_sessions();
        let cache = std::mem::take(&mut self.sessions);
        let mut back = SessionCache::default();
        let result = self.with_device(|dev, rng| {
            dev.defer();
            dev.set_session_cache(cache);
            let r = f(dev, rng);
            back = dev.take_session_cache();
            Ok((r?, dev.take_deferred()))
        });
        self.sessions = back;
        self.forget_evicted_sessions();
        if result.is_err() {
            self.sessions.clear();
        }
        result
    }

    /// Drops everything staged since the last commit (an operation failed
    /// half-way): the store rolls back, the node forgets what it staged.
    pub(crate) fn abandon(&mut self, now_ms: u64) -> Result<(), CoreError> {
        self.sessions.clear();
        self.node.store_mut().rollback()?;
        self.node.handle(now_ms, Input::CommitFailed)?;
        self.dirty = false;
        self.absorbed.clear();
        self.urgent.clear();
        Ok(())
    }

    /// Passes staged events through their rooms' sessions, with the
    /// session cache (dropped on any error: it may be ahead of the store).
    fn absorb(&mut self, staged: &[EventId], now_ms: u64) -> Result<ImportSummary, AppError> {
        self.forget_evicted_sessions();
        let cache = std::mem::take(&mut self.sessions);
        let mut back = SessionCache::default();
        let r = self.with_device(|dev, _| {
            dev.set_session_cache(cache);
            let r = dev.absorb(staged, now_ms);
            back = dev.take_session_cache();
            r
        });
        if r.is_err() {
            back.clear();
        }
        self.sessions = back;
        self.forget_evicted_sessions();
        self.dirty = true;
        r
    }

    /// Drops cached room sessions that rest on an event the store evicted
    /// since the last look ([`SessionCache::forget_holding`]).
    fn forget_evicted_sessions(&mut self) {
        let evicted = self.node.store_mut().take_evicted();
        self.sessions.forget_holding(evicted.as_deref());
    }

    /// Reports the rooms layer's refusals and tells the node the new
    /// standing of rooms whose members changed.
    fn after_absorb(&mut self, sum: ImportSummary, now_ms: u64) -> Result<(), CoreError> {
        for u in &sum.unauthorized {
            self.out.push_back(CoreOutput::Refused {
                event_id: u.event_id.clone(),
                reason: u.reason.clone(),
            });
        }
        for (room, members) in sum.members {
            self.node.handle(
                now_ms,
                Input::Command(Command::RoomMembers { room, members }),
            )?;
        }
        for (room, members) in sum.carried {
            self.node.handle(
                now_ms,
                Input::Command(Command::CarriedMembers { room, members }),
            )?;
        }
        for room in sum.expecting {
            self.node
                .handle(now_ms, Input::Command(Command::ExpectRoom(room)))?;
        }
        for room in sum.readable {
            self.receipt_due(room, None, now_ms);
        }
        Ok(())
    }

    /// Starts carrying every room this device holds keys for that the node
    /// does not carry yet, with its members' standing.
    fn join_own_rooms(&mut self, now_ms: u64) -> Result<(), CoreError> {
        let keys = self.node.store().secret_keys(ROOM_KEYS_PREFIX)?;
        for k in keys {
            let Some(Ok(arr)) = k.get(ROOM_KEYS_PREFIX.len()..).map(<[u8; 16]>::try_from) else {
                continue;
            };
            let room = RoomId(arr);
            if self.node.own_rooms().contains(&room) {
                continue;
            }
            // Unknown members (a damaged room) leave the room's events in
            // the stranger class until its state can be read again.
            let members = self
                .with_device(|dev, _| dev.room_members(&room))
                .unwrap_or_default();
            self.node
                .handle(now_ms, Input::Command(Command::JoinRoom { room, members }))?;
        }
        Ok(())
    }

    /// Re-issues the own card if a new prekey became durable.
    fn reissue_card(&mut self, now_ms: u64) {
        match self.with_device(|dev, _| {
            Ok(if dev.reissue_card(now_ms)? {
                Some(dev.card().clone())
            } else {
                None
            })
        }) {
            Ok(Some(card)) => self.out.push_back(CoreOutput::CardIssued(Box::new(card))),
            Ok(None) => {}
            Err(e) => self.out.push_back(CoreOutput::ProcessingFailed(format!(
                "re-issuing the card: {e}"
            ))),
        }
    }

    /// A room's lines in display order, or only those of its last `last`
    /// messages (a check: nobody is shown them).
    pub fn messages(
        &mut self,
        room: &RoomId,
        last: Option<usize>,
    ) -> Result<Vec<MessageLine>, AppError> {
        self.with_device(|dev, _| dev.messages_last(room, last))
    }

    /// Where event `id` stands in `room`'s history here (a check:
    /// [`crate::app::Device::place_of`]).
    pub fn place_of(&mut self, room: &RoomId, id: &EventId) -> Result<EventPlace, AppError> {
        self.with_device(|dev, _| dev.place_of(room, id))
    }

    /// [`DeviceCore::messages`] as a person following the room is shown
    /// them at `now_ms`: a read receipt becomes due.
    pub fn show_messages(
        &mut self,
        room: &RoomId,
        last: Option<usize>,
        now_ms: u64,
    ) -> Result<Vec<MessageLine>, AppError> {
        let (lines, marks) = self.with_device(|dev, _| dev.messages_view(room, last))?;
        self.receipt_due(*room, Some(marks), now_ms);
        Ok(lines)
    }

    /// The room a room argument names (a full ID, a name or an ID prefix:
    /// [`crate::control::exec::resolve_room`]).
    pub fn resolve_room(&mut self, arg: &str) -> Result<RoomId, AppError> {
        self.with_device(|dev, _| crate::control::exec::resolve_room(dev, arg))
    }

    /// Publishes events this device made (their keys and plaintexts are
    /// staged already). Fails if the store refuses one (the caller rolls
    /// back).
    fn publish(&mut self, now_ms: u64, events: Vec<Event>) -> Result<Option<EventId>, CoreError> {
        let mut changed = BTreeSet::new();
        for ev in events {
            let id = ev.id();
            if ev.kind() == EventKind::Membership {
                changed.insert(ev.room());
            }
            self.node
                .handle(now_ms, Input::Command(Command::Publish(Box::new(ev))))?;
            if !self.node.store().has_event(&id)? {
                return Ok(Some(id));
            }
            self.absorbed.insert(id);
        }
        // An own membership change (an invite, a removal) changes who has
        // standing at once, as one received does (`after_absorb`): an
        // invitee's first messages are not strangers' traffic here.
        for room in changed {
            let members = self.with_device(|dev, _| dev.room_members(&room))?;
            self.node.handle(
                now_ms,
                Input::Command(Command::RoomMembers { room, members }),
            )?;
        }
        Ok(None)
    }

    /// Delivers events from outside the mesh through the node (verified,
    /// classed, stored, relayed after the commit) and the rooms layer, and
    /// returns the new events with what the rooms refused.
    fn deliver_events(
        &mut self,
        now_ms: u64,
        events: impl IntoIterator<Item = Event>,
        source: Source,
    ) -> Result<(Vec<EventId>, Result<ImportSummary, AppError>), CoreError> {
        let before: BTreeSet<EventId> = self.node.uncommitted_events().into_iter().collect();
        for ev in events {
            self.node.handle(
                now_ms,
                Input::Command(Command::Deliver {
                    event: Box::new(ev),
                    source,
                }),
            )?;
        }
        let staged: Vec<EventId> = self
            .node
            .uncommitted_events()
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        let sum = self.absorb(&staged, now_ms);
        self.absorbed.extend(staged.iter().copied());
        Ok((staged, sum))
    }
}
