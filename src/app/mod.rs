//! The application layer: rooms on one device, over one data directory
//! (`protocol-spec/rooms.md`, `protocol-spec/encryption.md`, and
//! `protocol-spec/app.md`).
//!
//! A [`Device`] owns the identity files of a data directory and its durable
//! store (`store.redb`). Every operation restores the affected
//! [`RoomSession`] from the stored events and room keys, performs the
//! change, stages the new events, the advanced room keys and the decrypted
//! plaintexts in **one** store transaction, commits it, and only then
//! reports success. A crash before the commit loses the whole operation and
//! nothing was reported; a crash after it loses nothing. Ciphertext leaves
//! the device only through [`Device::export`], which reads committed
//! events, so a chain position is never used by two ciphertexts.
//!
//! What the store holds for the application (secret table unless noted):
//!
//! | key | value |
//! |---|---|
//! | `prekey-ring` | [`PrekeyRing::to_bytes`](crate::crypto::key_share::PrekeyRing::to_bytes) |
//! | `room-keys/` + room ID | [`RoomKeys::to_bytes`] of a room this device is or was in |
//! | `pt/` + event ID | the decrypted [`Content`] of a message (chain keys are erased after use, so history is read from here) |
//! | `ud/` + event ID | why a message could not be decrypted (removed once it is) |
//! | contacts table | contact cards ([`ContactCard::to_cbor`]) |
//!
//! Receiving (bundle import) goes through [`RoomSession::receive`], so key
//! shares are accepted only through the key-share channel and from members,
//! and messages that were undecryptable are retried when their sender's
//! keys arrive. Because a restored session does not remember that a
//! received membership change requires a new sender chain, the device
//! erases its outbound chain when it stores such a change: the next send
//! then starts a new chain (epoch) shared with exactly the current members.

mod author;
mod follow;
mod import;
mod keys;
mod prekeys;
mod receipts;
mod repair;
mod retention;
mod sessions;
mod types;
mod views;

use std::collections::BTreeSet;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use rand_core::CryptoRng;
use thiserror::Error;

pub use follow::follow_messages;
pub use import::{IMPORT_BATCH_BYTES, oversize_reason};
pub use keys::DeviceKeys;
pub use prekeys::{PREKEY_GRACE_MS, PREKEY_ROTATE_MS, PrekeyRotation};
pub use receipts::ReadMarks;
pub use sessions::{MAX_CACHED_SESSIONS, SessionCache};
pub use types::{
    AttachmentInfo, Draft, DroppedInfo, EventPlace, FailedRoom, FileDraft, ForkInfo, GapInfo,
    ImportSummary, KeyStateInfo, MemberInfo, MessageLine, RejectedInfo, RepairReport, RoomInfo,
    UnauthorizedInfo,
};

use crate::bundle::{self, BundleError, MAX_BUNDLE_EVENTS};
use crate::contacts::{ContactBook, ContactError};
use crate::crypto::{ContactCard, DeviceId, Identity};
use crate::datadir::{DataDir, DataDirError};
use crate::event::{Event, EventId, EventKind, RoomId};
use crate::proto::urgent::UrgentMark;
use crate::room::{Content, Membership, MembershipState, RoomKeys, RoomSession, SessionError};
use crate::store::redb_backend::STORE_FILE_NAME;
use crate::store::{
    InsertMeta, InsertOutcome, Priority, RedbStore, Source, Store, StoreConfig, StoreError,
};

/// Secret-table key of the prekey ring.
pub const PREKEY_RING_KEY: &[u8] = b"prekey-ring";
/// Secret-table key prefix of room keys.
pub const ROOM_KEYS_PREFIX: &[u8] = b"room-keys/";
/// Secret-table key prefix of decrypted message contents.
pub const PLAINTEXT_PREFIX: &[u8] = b"pt/";
/// Secret-table key prefix of undecryptable-message reasons.
pub const UNDECRYPTABLE_PREFIX: &[u8] = b"ud/";
/// Most chunk events `save` reads for one file: four times a file's most
/// chunks (`protocol-spec/attachments.md` §5).
pub const MAX_CHUNK_EVENTS_READ: usize = 4 * crate::room::attachment::MAX_CHUNKS as usize;
/// Secret-key prefix: where `save` last wrote an attachment
/// (`protocol-spec/attachments.md` §7).
pub const SAVED_PREFIX: &[u8] = b"sv/";
/// Events read from the store per page when a room is rebuilt or exported:
/// small enough that a room flooded with stored strangers' events costs a
/// command bounded memory (`protocol-spec/rooms.md` §3.1).
pub const ROOM_READ_PAGE: usize = 1024;
/// The `reason` of an undecryptable message sent before this device
/// joined the room (`protocol-spec/app.md` §4).
pub const BEFORE_JOIN_REASON: &str = "sent before this device joined the room";
/// The `reason` of an undecryptable message of a room this device is not in
/// (it carries the room's events for others).
pub const NOT_IN_ROOM_REASON: &str = "this device is not in the room";
/// Most gap ranges shown per sender and room.
pub const MAX_GAP_LINES: usize = 256;
/// Most fork records read per room for `messages` (`protocol-spec/app.md`
/// §4); the store keeps at most `MAX_FORK_EVIDENCE` in all.
pub const MAX_FORK_LINES: usize = 256;
/// Longest message text accepted by [`Device::send`], in UTF-8 bytes (a
/// bridged message's attribution counts too): the padding limit minus
/// headroom for the content encoding (at most 13 bytes).
pub const MAX_TEXT_BYTES: usize = crate::crypto::padding::MAX_PLAINTEXT_BYTES - 16;

/// Why an application operation failed.
#[derive(Debug, Error)]
pub enum AppError {
    /// A file of the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The data directory (identity, own card, contact book) failed.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The contact book failed.
    #[error(transparent)]
    Contacts(#[from] ContactError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A room operation was refused.
    #[error("{0}")]
    Session(#[from] SessionError),
    /// The bundle as a whole was rejected.
    #[error("bundle: {0}")]
    Bundle(#[from] BundleError),
    /// No stored events of this room.
    #[error("unknown room {0}")]
    UnknownRoom(RoomId),
    /// The contact argument is neither a valid card nor a stored contact.
    #[error("{0}")]
    BadContact(String),
    /// The user's input is invalid (text too long, bad name...).
    #[error("{0}")]
    BadInput(String),
    /// Stored data is inconsistent.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl AppError {
    /// Whether a file of the data directory was written by a newer
    /// meshrelay (a downgrade, refused without touching it).
    pub fn is_too_new(&self) -> bool {
        match self {
            AppError::DataDir(d) => d.is_too_new(),
            AppError::Contacts(c) => c.is_too_new(),
            AppError::Store(s) => s.is_too_new(),
            _ => false,
        }
    }
}

fn key(prefix: &[u8], id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(id);
    k
}

fn room_keys_key(room: &RoomId) -> Vec<u8> {
    key(ROOM_KEYS_PREFIX, room.as_bytes())
}

fn pt_key(id: &EventId) -> Vec<u8> {
    key(PLAINTEXT_PREFIX, id.as_bytes())
}

fn saved_key(id: &EventId) -> Vec<u8> {
    key(SAVED_PREFIX, id.as_bytes())
}

fn ud_key(id: &EventId) -> Vec<u8> {
    key(UNDECRYPTABLE_PREFIX, id.as_bytes())
}

/// Creates a data directory with a new identity and card (what `meshrelay
/// init` does). Returns the device ID.
pub fn init<R: CryptoRng + ?Sized>(
    dir: &Path,
    name: &str,
    now_ms: u64,
    rng: &mut R,
) -> Result<DeviceId, AppError> {
    let identity = Identity::generate(rng);
    let card = ContactCard::create(&identity, name, now_ms)
        .map_err(|e| AppError::BadInput(e.to_string()))?;
    DataDir::new(dir).init(&identity, &card)?;
    Ok(identity.device_id())
}

/// Loads the identity and own card of the data directory `dir`.
pub fn load_identity(dir: &Path) -> Result<(Identity, ContactCard), AppError> {
    Ok(DataDir::new(dir).load()?)
}

/// One device: its keys and its open store. See the module docs.
///
/// `S` is the store: the device's own [`RedbStore`] ([`Device::open`]), or
/// a store lent by the device core ([`Device::with_keys`] over
/// `&mut S`).
#[derive(Debug)]
pub struct Device<S: Store = RedbStore> {
    /// The data directory, for the contact book and the card file; `None`
    /// inside the device core, which reads and writes no file.
    dir: Option<PathBuf>,
    keys: DeviceKeys,
    store: S,
    /// Deferred mode (the device core): new events are collected here for
    /// the node to insert and relay, and nothing is committed.
    deferred: Option<Vec<Event>>,
    /// Sessions kept between [`Device::absorb`] calls (the device core).
    cache: Option<SessionCache>,
    /// Messages read or sent as urgent during this call, for the node's
    /// queues ([`Device::take_urgent`]).
    urgent: Vec<UrgentMark>,
}

impl Device {
    /// Opens the data directory `dir`: loads the identity, opens (or
    /// creates) the store, and loads the prekey ring, creating it from the
    /// identity's published prekey the first time. Holds the store's lock
    /// until dropped.
    pub fn open(dir: &Path, now_ms: u64) -> Result<Self, AppError> {
        // An uninitialised directory is a usage error, not a missing store.
        if !DataDir::new(dir).has_identity() {
            return Err(DataDirError::NotInitialized(dir.to_owned()).into());
        }
        // The identity before the store: an identity file this build
        // cannot read (a downgrade) is refused before the store is touched.
        drop(load_identity(dir)?);
        let store = RedbStore::open(&dir.join(STORE_FILE_NAME), StoreConfig::default())?;
        Device::open_with(dir, store, now_ms)
    }
}

impl<S: Store> Device<S> {
    /// Loads the identity of the data directory `dir` and works over
    /// `store` (which must be that directory's store).
    pub fn open_with(dir: &Path, mut store: S, now_ms: u64) -> Result<Self, AppError> {
        let (identity, card) = load_identity(dir)?;
        let fresh = store.get_secret(PREKEY_RING_KEY)?.is_none();
        let keys = DeviceKeys::load(identity, card, &mut store, now_ms)?;
        if fresh {
            store.commit()?;
        }
        let mut dev = Device::with_keys(keys, store);
        dev.dir = Some(dir.to_owned());
        Ok(dev)
    }

    /// A device over `store` with keys already loaded, reading and writing
    /// no file: contacts come from the store only, and a re-issued card is
    /// left to the caller ([`Device::card`]).
    pub fn with_keys(keys: DeviceKeys, store: S) -> Self {
        Self {
            dir: None,
            keys,
            store,
            deferred: None,
            cache: None,
            urgent: Vec::new(),
        }
    }

    /// Gives the keys back (see [`Device::with_keys`]).
    pub fn into_keys(self) -> DeviceKeys {
        self.keys
    }

    /// Lends a session cache to this device (see [`SessionCache`]).
    pub fn set_session_cache(&mut self, cache: SessionCache) {
        self.cache = Some(cache);
    }

    /// Takes the session cache back.
    pub fn take_session_cache(&mut self) -> SessionCache {
        self.cache.take().unwrap_or_default()
    }

    /// Drops `room`'s cached session (its stored state changed).
    fn forget_session(&mut self, room: &RoomId) {
        if let Some(c) = self.cache.as_mut() {
            c.forget(room);
        }
    }

    /// Deferred mode, for a driver that owns the node: operations stage
    /// their keys and plaintexts without committing, and hand their new
    /// events to [`Device::take_deferred`] instead of inserting them. The
    /// driver publishes those through the node (which stores and relays
    /// them) and commits everything in one transaction.
    pub fn defer(&mut self) {
        self.deferred.get_or_insert_with(Vec::new);
    }

    /// The messages read or sent as urgent since the last call
    /// (`protocol-spec/wire.md`, "Urgent messages").
    pub fn take_urgent(&mut self) -> Vec<UrgentMark> {
        std::mem::take(&mut self.urgent)
    }

    /// Keeps a message's plaintext (it became readable) and notes an
    /// urgent mark for the node's queues.
    fn keep_plaintext(&mut self, m: UrgentMark, content: &Content) -> Result<(), AppError> {
        self.store.put_secret(&pt_key(&m.id), &content.to_bytes())?;
        self.store.remove_secret(&ud_key(&m.id))?;
        if matches!(content, Content::RoomName(_))
            && let Some(c) = self.cache.as_mut()
        {
            c.forget_name(&m.room);
        }
        if content.is_urgent() {
            self.urgent.push(m);
        }
        Ok(())
    }

    /// The events the operations in deferred mode produced, in order.
    pub fn take_deferred(&mut self) -> Vec<Event> {
        self.deferred
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// This device's ID.
    pub fn device_id(&self) -> DeviceId {
        self.keys.identity.device_id()
    }

    /// This device's own contact card.
    pub fn card(&self) -> &ContactCard {
        &self.keys.card
    }

    /// The data directory, if this device reads files.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The underlying store (read access, for reports).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The underlying store, for the homeserver sync's bookkeeping (queue
    /// state, cursor, bundle compositions). Callers commit what they stage.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    // ---- contacts --------------------------------------------------------

    /// Verifies and stores a contact card in the store's contacts table
    /// (`meshrelay contact add` uses the contact book file; both are read
    /// by [`Device::resolve_contact`]). A card older than the stored one
    /// for the same device is ignored.
    pub fn add_contact(&mut self, card_text: &str) -> Result<ContactCard, AppError> {
        let card = ContactCard::from_text(card_text.trim())
            .map_err(|e| AppError::BadContact(format!("invalid contact card: {e}")))?;
        if card.device_id == self.device_id() {
            return Err(AppError::BadContact(
                "that is this device's own card".into(),
            ));
        }
        let newer = match self.store.get_contact(&card.device_id)? {
            Some(b) => {
                ContactCard::from_cbor(&b).map_or(true, |old| old.created_ms < card.created_ms)
            }
            None => true,
        };
        if newer {
            self.store.put_contact(&card.device_id, &card.to_cbor())?;
            self.store.commit()?;
        }
        Ok(card)
    }

    /// The contact `arg` names: a card text, or the device ID of a contact
    /// in the store or in the data directory's [`ContactBook`].
    pub fn resolve_contact(&self, arg: &str) -> Result<ContactCard, AppError> {
        let arg = arg.trim();
        if let Ok(card) = ContactCard::from_text(arg) {
            return Ok(card);
        }
        let device: DeviceId = arg.parse().map_err(|_| {
            AppError::BadContact(format!(
                "{arg:.40}: neither a valid contact card nor a device ID"
            ))
        })?;
        if let Some(b) = self.store.get_contact(&device)? {
            return ContactCard::from_cbor(&b)
                .map_err(|e| AppError::Corrupt(format!("stored contact {device}: {e}")));
        }
        if let Some(card) = self.book_contact(&device)? {
            return Ok(card);
        }
        Err(AppError::BadContact(format!(
            "no stored contact {device}; add its card first or pass the card"
        )))
    }

    fn book_contact(&self, device: &DeviceId) -> Result<Option<ContactCard>, AppError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let book = ContactBook::load(&DataDir::new(dir))?;
        Ok(book.get(device).cloned())
    }

    // ---- loading ---------------------------------------------------------

    /// Every stored event of `room`, in (origin time, ID) order.
    fn room_events(&self, room: &RoomId) -> Result<Vec<Event>, AppError> {
        let mut out = Vec::new();
        self.for_each_room_event(room, |ev| out.push(ev))?;
        Ok(out)
    }

    /// Passes every stored event of `room` to `f`, in (origin time, ID)
    /// order, one page at a time (memory stays bounded by what `f` keeps).
    /// Stored events count as verified ([`Event::decode_stored`]).
    fn for_each_room_event(&self, room: &RoomId, mut f: impl FnMut(Event)) -> Result<(), AppError> {
        let mut from = Bound::Unbounded;
        loop {
            let items = self
                .store
                .room_items(room, (from, Bound::Unbounded), ROOM_READ_PAGE)?;
            let Some(last) = items.last().copied() else {
                break;
            };
            for it in &items {
                if let Some(b) = self.store.get_event(&it.id)? {
                    let ev = Event::decode_stored(&b)
                        .map_err(|e| AppError::Corrupt(format!("stored event {}: {e}", it.id)))?;
                    f(ev);
                }
            }
            if items.len() < ROOM_READ_PAGE {
                break;
            }
            from = Bound::Excluded(last);
        }
        Ok(())
    }

    /// One stored event (decoded, not re-verified).
    fn stored_event(&self, id: &EventId) -> Result<Option<Event>, AppError> {
        let Some(b) = self.store.get_event(id)? else {
            return Ok(None);
        };
        Event::decode_stored(&b)
            .map(Some)
            .map_err(|e| AppError::Corrupt(format!("stored event {id}: {e}")))
    }

    fn stored_keys(&self, room: &RoomId) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, AppError> {
        Ok(self.store.get_secret(&room_keys_key(room))?)
    }

    /// Restores the session of `room` from stored events and keys. It
    /// keeps no event bodies: a view reads what it shows from the store one
    /// event at a time ([`RoomDag::held`]), so its memory is the DAG's
    /// whatever the room's stored size. Events admission refused (an
    /// outsider's flood) are read one page at a time and never kept
    /// (`protocol-spec/rooms.md`, "Admission").
    fn session(&self, room: &RoomId) -> Result<RoomSession, AppError> {
        self.session_only(room, &BTreeSet::new())
    }

    fn restore_session(
        &self,
        room: &RoomId,
        skip: &BTreeSet<EventId>,
        keep: bool,
    ) -> Result<(RoomSession, Vec<Event>), AppError> {
        let keys = match self.stored_keys(room)? {
            Some(k) => k,
            None => RoomKeys::new(*room).to_bytes(),
        };
        let rebuild = RoomSession::rebuild(*room, self.device_id(), &keys)?;
        let (mut s, events) = rebuild.replay(
            |add| {
                self.for_each_room_event(room, |ev| {
                    if !skip.contains(&ev.id()) {
                        add(ev);
                    }
                })
            },
            |id| self.stored_event(id),
            keep,
        )?;
        if s.dropped() > 0 {
            tracing::debug!(%room, dropped = s.dropped(), "rebuild left out refused events");
        }
        s.continue_after(self.store.high_water(room, &self.device_id())?);
        Ok((s, events))
    }

    /// Restores the session of `room`, leaving out `skip` (events staged by
    /// the node, still to be received), and keeps no events: memory is the
    /// DAG's, whatever the room's size.
    fn session_only(
        &self,
        room: &RoomId,
        skip: &BTreeSet<EventId>,
    ) -> Result<RoomSession, AppError> {
        self.restore_session(room, skip, false).map(|(s, _)| s)
    }

    fn known_session(&self, room: &RoomId) -> Result<RoomSession, AppError> {
        let mut s = self.session(room)?;
        if s.dag().holds_nothing() {
            return Err(AppError::UnknownRoom(*room));
        }
        Ok(s)
    }

    /// The device core's cached session of `room` (it holds everything
    /// committed: no rebuild, whatever the room's stored size), else
    /// [`Device::known_session`]. Give it back with [`Device::keep_session`].
    fn cached_session(&mut self, room: &RoomId) -> Result<RoomSession, AppError> {
        match self.cache.as_mut().and_then(|c| c.take(room)) {
            Some(s) => Ok(s),
            None => self.known_session(room),
        }
    }

    /// Puts a session taken with [`Device::cached_session`] back in the
    /// cache (when there is one).
    fn keep_session(&mut self, room: RoomId, s: RoomSession) {
        if let Some(c) = self.cache.as_mut() {
            c.put(room, s);
        }
    }

    // ---- local operations --------------------------------------------------

    /// Stages the outgoing events and keys of `room`, plus plaintexts, and
    /// commits: nothing is reported (or exported) before this returns. In
    /// deferred mode it only stages (the driver commits).
    fn persist(
        &mut self,
        room: &RoomId,
        keys: &[u8],
        events: &[Event],
        plaintexts: &[(EventId, Vec<u8>)],
        now_ms: u64,
    ) -> Result<(), AppError> {
        self.stage(room, keys, events, plaintexts, now_ms)?;
        if self.deferred.is_some() {
            return Ok(());
        }
        if let Err(e) = self.store.commit() {
            let _ = self.store.rollback();
            return Err(e.into());
        }
        Ok(())
    }

    /// Stages keys, plaintexts and events without committing; in deferred
    /// mode the events go to [`Device::take_deferred`] instead of the store.
    fn stage(
        &mut self,
        room: &RoomId,
        keys: &[u8],
        events: &[Event],
        plaintexts: &[(EventId, Vec<u8>)],
        now_ms: u64,
    ) -> Result<(), AppError> {
        // The session is dropped (an operation that keeps it puts it back);
        // the name only if one of these plaintexts renames the room.
        let renames = plaintexts
            .iter()
            .any(|(_, pt)| matches!(Content::from_bytes(pt), Ok(Content::RoomName(_))));
        if let Some(c) = self.cache.as_mut() {
            c.take(room);
            if renames {
                c.forget_name(room);
            }
        }
        self.store.put_secret(&room_keys_key(room), keys)?;
        for (id, pt) in plaintexts {
            self.store.put_secret(&pt_key(id), pt)?;
        }
        if let Some(out) = self.deferred.as_mut() {
            out.extend(events.iter().cloned());
            return Ok(());
        }
        let meta = InsertMeta {
            priority: Priority::OwnUndelivered,
            source: Source::Local,
            received_ms: now_ms,
            carried: false,
        };
        for ev in events {
            match self.store.insert_event(ev, &meta) {
                Ok(InsertOutcome::Inserted) => {}
                Ok(other) => {
                    self.store.rollback()?;
                    return Err(AppError::Corrupt(format!(
                        "the store refused this device's own event {}: {other:?}",
                        ev.id()
                    )));
                }
                Err(e) => {
                    self.store.rollback()?;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

/// The plaintext to keep for the last sender-chain event of `events`: the
/// content it encrypted.
fn last_message_plaintext(events: &[Event], content: &Content) -> Vec<(EventId, Vec<u8>)> {
    events
        .iter()
        .rev()
        .find(|e| e.kind().in_sender_chain())
        .map(|e| vec![(e.id(), content.to_bytes())])
        .unwrap_or_default()
}
