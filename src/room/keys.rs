//! Per-room key handling (`protocol-spec/encryption.md`, "Accepting key
//! shares", "Epochs").
//!
//! * [`accept_key_share`] is the only way a chain key enters a device: the
//!   event must be of kind `KeyShare` (never a message, receipt or anything
//!   else: the Matrix "protocol confusion" attack), already in the room's
//!   DAG (so its signature was verified), and its sender must be a member at
//!   the event's causal position and not removed concurrently. The chain is
//!   installed for the event's *signer*, so nobody can plant a chain under
//!   another member's name.
//! * [`RoomKeys`] holds this device's outbound chain and the inbound chains
//!   of a room; the caller persists [`RoomKeys::to_bytes`] after every
//!   change (for sending: before the ciphertext leaves, see
//!   `crate::crypto::sender_chain`).
//! * On any removal or leave, every remaining sender starts a new chain
//!   ([`needs_new_epoch`]) and shares it only with the remaining members.

use std::collections::BTreeMap;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::crypto::key_share::{
    KeyShareError, KeySharePayload, PrekeyRing, PrekeyUpdate, Recipient, open_share,
};
use crate::crypto::keys::DeviceId;
use crate::crypto::roster::{MAX_ROSTER_SECRETS, ROSTER_SECRET_BYTES, RosterSecret};
use crate::crypto::sender_chain::{
    ChainError, ChainId, InboundChain, MAX_SKIPPED_KEYS, MessagePayload, OutboundChain,
};
use crate::event::{Event, EventKind, RoomId};
use crate::room::dag::RoomDag;
use crate::room::resolve::MembershipState;

/// Most inbound chains one room keeps (four epochs per member at the room
/// cap); the least recently installed is dropped first.
pub const MAX_INBOUND_CHAINS: usize = 1024;
/// Most inbound chains one room keeps per sender; beyond this the sender's
/// least recently installed chain is dropped first, so one member opening
/// chain after chain only evicts its own chains.
pub const MAX_INBOUND_CHAINS_PER_SENDER: usize = 16;
/// Most skipped message keys one room keeps over all its inbound chains.
/// Beyond this, keys are erased from the chain holding the most, lowest
/// index (oldest) first: a member who skips far ahead on many chains loses
/// its own old messages, never the room.
pub const MAX_ROOM_SKIPPED_KEYS: usize = 8192;

/// Length of a CBOR head (major type plus argument) for argument `v`.
const fn cbor_head_len(v: u64) -> usize {
    if v < 24 {
        1
    } else if v <= 0xff {
        2
    } else if v <= 0xffff {
        3
    } else if v <= 0xffff_ffff {
        5
    } else {
        9
    }
}

/// Largest [`OutboundChain::to_bytes`]: head, version, room, chain ID,
/// index (< 2^32), chain key, creation time (any u64).
const MAX_OUTBOUND_BYTES: usize = 1 + 1 + 17 + 17 + 5 + 34 + 9;
/// Largest [`InboundChain::to_bytes`] without its skipped keys: head,
/// version, room, sender, chain ID, next index, chain key, and the head of
/// a skipped-key array of up to [`MAX_SKIPPED_KEYS`].
const MAX_INBOUND_BASE_BYTES: usize =
    1 + 1 + 17 + 34 + 17 + 5 + 34 + cbor_head_len(MAX_SKIPPED_KEYS as u64);
/// One skipped key in an inbound chain: `[index (< 2^32), bstr(32)]`.
const SKIPPED_KEY_BYTES: usize = 1 + 5 + 34;
/// One entry of the room's inbound list without the skipped keys: head,
/// install counter (any u64), the byte-string head of the chain encoding
/// (under 2^32 bytes) and the chain.
const MAX_INBOUND_ENTRY_BYTES: usize = 1 + 9 + 5 + MAX_INBOUND_BASE_BYTES;

/// Upper bound of [`RoomKeys::to_bytes`], computed from the caps: every
/// inbound chain slot used, every skipped-key slot of the room used, every
/// integer at its widest. It is below the store's largest secret value
/// (`crate::store::MAX_BLOB_VALUE_BYTES`, tested), so the room's key state
/// can always be persisted.
pub const MAX_ROOM_KEYS_BYTES: usize = 1
    + 1
    + 17
    + cbor_head_len(MAX_OUTBOUND_BYTES as u64)
    + MAX_OUTBOUND_BYTES
    + 9
    + cbor_head_len(MAX_INBOUND_CHAINS as u64)
    + MAX_INBOUND_CHAINS * MAX_INBOUND_ENTRY_BYTES
    + MAX_ROOM_SKIPPED_KEYS * SKIPPED_KEY_BYTES
    + cbor_head_len(MAX_ROSTER_SECRETS as u64)
    + MAX_ROSTER_SECRETS * (2 + ROSTER_SECRET_BYTES);
/// Version of the persisted room-keys format (2 adds the roster secret;
/// version 1 states are still read).
const KEYS_VERSION: u64 = 2;

/// Why a key share, prekey update or message was not accepted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Key material arrived in an event of the wrong kind.
    #[error("key material in a {0} event; only key-share events carry keys")]
    WrongChannel(String),
    /// The event is not in the room's DAG yet (insert it first).
    #[error("event is not in the room DAG")]
    UnknownEvent,
    /// The sender was not a member at the event's position (or was removed
    /// concurrently).
    #[error("sender {0} is not a room member at this event")]
    NotMember(DeviceId),
    /// The key share could not be opened.
    #[error("key share: {0}")]
    Share(#[from] KeyShareError),
    /// The event is not an encrypted kind (message or receipt).
    #[error("not an encrypted message or receipt event")]
    NotMessage,
    /// No chain for this (sender, chain) is held: the share never arrived
    /// or this device was not a member when it was sent.
    #[error("no key for sender {sender} chain {chain:?}")]
    NoChain {
        /// Sender.
        sender: DeviceId,
        /// Chain.
        chain: ChainId,
    },
    /// The chain rejected the message (replay, tampering, too far ahead).
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// Malformed persisted state.
    #[error("room keys encoding: {0}")]
    Cbor(#[from] CborError),
}

/// What an accepted key share gives this device.
#[derive(Debug)]
pub struct AcceptedShare {
    /// The sender's chain, to install with [`RoomKeys::install`].
    pub chain: InboundChain,
    /// The roster secret the share carries, when its sender is an admin at
    /// the event's position (`crate::crypto::roster`, "Rotation"); a
    /// non-admin's is ignored.
    pub roster: Option<RosterSecret>,
}

/// Accepts a key-share event (see the module docs) and returns what it
/// gives this device.
pub fn accept_key_share(
    dag: &mut RoomDag,
    event: &Event,
    me: &DeviceId,
    prekeys: &PrekeyRing,
) -> Result<AcceptedShare, KeyError> {
    if event.kind() != EventKind::KeyShare {
        return Err(KeyError::WrongChannel(event.kind().name()));
    }
    if !dag.admitted(&event.id()) {
        return Err(KeyError::UnknownEvent);
    }
    if !dag.sender_authorized_at(&event.id(), &event.sender()) {
        return Err(KeyError::NotMember(event.sender()));
    }
    let payload = KeySharePayload::from_bytes(event.payload())?;
    let share = open_share(&event.room(), &event.sender(), &payload, me, prekeys)?;
    let roster = match &share.roster {
        Some(r)
            if dag
                .members_at(&event.id())
                .is_some_and(|st| st.is_admin(&event.sender())) =>
        {
            Some(RosterSecret::from_bytes(**r))
        }
        _ => None,
    };
    Ok(AcceptedShare {
        chain: InboundChain::from_share(event.room(), event.sender(), &share),
        roster,
    })
}

/// Accepts a prekey-update event from a member.
pub fn accept_prekey_update(dag: &mut RoomDag, event: &Event) -> Result<PrekeyUpdate, KeyError> {
    if event.kind() != EventKind::PrekeyUpdate {
        return Err(KeyError::WrongChannel(event.kind().name()));
    }
    if !dag.admitted(&event.id()) {
        return Err(KeyError::UnknownEvent);
    }
    if !dag.sender_authorized_at(&event.id(), &event.sender()) {
        return Err(KeyError::NotMember(event.sender()));
    }
    Ok(PrekeyUpdate::from_bytes(event.payload())?)
}

/// The recipients of a key share: every member but `me` whose card this
/// device can read, each with the newest prekey known (its card's, or a
/// later accepted update's).
pub fn recipients(
    state: &MembershipState,
    me: &DeviceId,
    updates: &BTreeMap<DeviceId, PrekeyUpdate>,
) -> Vec<Recipient> {
    state
        .members
        .values()
        .filter(|m| m.device != *me)
        .filter_map(|m| {
            let card = m.card.as_ref()?;
            let mut r = Recipient {
                device: m.device,
                prekey_id: card.prekey_id,
                prekey: card.prekey,
            };
            if let Some(u) = updates.get(&m.device)
                && u.prekey_id > r.prekey_id
            {
                r.prekey_id = u.prekey_id;
                r.prekey = u.prekey;
            }
            Some(r)
        })
        .collect()
}

/// Whether going from `before` to `after` removed anyone, so every
/// remaining sender must start a new chain shared only with `after`.
pub fn needs_new_epoch(before: &MembershipState, after: &MembershipState) -> bool {
    before.members.keys().any(|d| !after.is_member(d))
}

/// Decrypts a message (or receipt) event with the matching inbound chain, erasing the
/// used key. The caller persists `keys` afterwards.
pub fn decrypt_message(keys: &mut RoomKeys, event: &Event) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if !event.kind().in_sender_chain() {
        return Err(KeyError::NotMessage);
    }
    let payload = MessagePayload::from_bytes(event.payload())?;
    let chain = keys
        .inbound
        .get_mut(&(event.sender(), payload.chain_id))
        .map(|(_, c)| c)
        .ok_or(KeyError::NoChain {
            sender: event.sender(),
            chain: payload.chain_id,
        })?;
    let pt = chain.decrypt(&payload)?;
    keys.enforce_skipped_cap();
    Ok(pt)
}

/// A device's key state for one room. Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeys {
    room: RoomId,
    /// This device's current sending chain.
    pub outbound: Option<OutboundChain>,
    inbound: BTreeMap<(DeviceId, ChainId), (u64, InboundChain)>,
    counter: u64,
    /// The room's roster secrets (`crate::crypto::roster`), the room's
    /// own first: held once this device created the room or opened its
    /// invite. The session keeps it equal to its DAG's.
    pub roster: Vec<RosterSecret>,
}

impl RoomKeys {
    /// Empty key state for `room`.
    pub fn new(room: RoomId) -> Self {
        Self {
            room,
            outbound: None,
            inbound: BTreeMap::new(),
            counter: 0,
            roster: Vec::new(),
        }
    }

    /// The room.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// Installs an inbound chain. A chain already held at an earlier (or
    /// the same) position is kept, so a late re-share never erases keys.
    pub fn install(&mut self, chain: InboundChain) {
        let key = (chain.sender(), chain.chain_id());
        if let Some((_, have)) = self.inbound.get(&key)
            && have.next_index() <= chain.next_index()
        {
            return;
        }
        let sender = key.0;
        self.counter += 1;
        self.inbound.insert(key, (self.counter, chain));
        // Per sender first (one member cannot evict the others' chains),
        // then per room; the least recently installed goes first.
        while self.inbound.keys().filter(|(s, _)| *s == sender).count()
            > MAX_INBOUND_CHAINS_PER_SENDER
        {
            self.drop_oldest_chain(|k| k.0 == sender);
        }
        while self.inbound.len() > MAX_INBOUND_CHAINS {
            self.drop_oldest_chain(|_| true);
        }
    }

    /// Drops the least recently installed chain among those `pick` selects.
    fn drop_oldest_chain(&mut self, pick: impl Fn(&(DeviceId, ChainId)) -> bool) {
        let oldest = self
            .inbound
            .iter()
            .filter(|(k, _)| pick(k))
            .min_by_key(|(_, (c, _))| *c)
            .map(|(k, _)| *k);
        if let Some(k) = oldest {
            self.inbound.remove(&k);
        }
    }

    /// Total skipped message keys cached over all inbound chains.
    pub fn skipped_len(&self) -> usize {
        self.inbound.values().map(|(_, c)| c.skipped_len()).sum()
    }

    /// Enforces [`MAX_ROOM_SKIPPED_KEYS`]: while over it, erases the oldest
    /// skipped keys of the chain holding the most (ties: the first in key
    /// order), down to the next-largest chain's count or the excess.
    fn enforce_skipped_cap(&mut self) {
        let mut total = self.skipped_len();
        while total > MAX_ROOM_SKIPPED_KEYS {
            let mut largest: Option<&mut InboundChain> = None;
            let mut second = 0usize;
            for (_, c) in self.inbound.values_mut() {
                match &largest {
                    Some(l) if l.skipped_len() >= c.skipped_len() => {
                        second = second.max(c.skipped_len());
                    }
                    _ => {
                        if let Some(l) = &largest {
                            second = second.max(l.skipped_len());
                        }
                        largest = Some(c);
                    }
                }
            }
            let Some(chain) = largest else { break };
            let excess = total - MAX_ROOM_SKIPPED_KEYS;
            let n = excess.min(chain.skipped_len() - second).max(1);
            chain.drop_oldest_skipped(n);
            total = total.saturating_sub(n);
        }
    }

    /// The inbound chain of (sender, chain), if held.
    pub fn inbound(&self, sender: &DeviceId, chain: &ChainId) -> Option<&InboundChain> {
        self.inbound.get(&(*sender, *chain)).map(|(_, c)| c)
    }

    /// Number of inbound chains.
    pub fn inbound_len(&self) -> usize {
        self.inbound.len()
    }

    /// The senders whose chains are held, ascending.
    pub fn senders(&self) -> Vec<DeviceId> {
        let mut v: Vec<DeviceId> = self.inbound.keys().map(|(s, _)| *s).collect();
        v.dedup();
        v
    }

    /// Drops every inbound chain of `sender` (for example after it left).
    pub fn forget_sender(&mut self, sender: &DeviceId) {
        self.inbound.retain(|(s, _), _| s != sender);
    }

    /// Persisted form: `[2, room, outbound_bytes|null, counter, [* [installed, inbound_bytes]], [* roster_secret]]`
    /// (version 1 had no roster secret).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(256);
        w.array(6).u64(KEYS_VERSION).bytes(self.room.as_bytes());
        match &self.outbound {
            Some(o) => w.bytes(&o.to_bytes()),
            None => w.null(),
        };
        w.u64(self.counter).array(self.inbound.len());
        for (c, chain) in self.inbound.values() {
            w.array(2).u64(*c).bytes(&chain.to_bytes());
        }
        w.array(self.roster.len());
        for s in &self.roster {
            w.bytes(s.as_bytes());
        }
        Zeroizing::new(w.into_bytes())
    }

    /// Parses [`RoomKeys::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        cbor::validate(bytes, 3)?;
        let mut r = Reader::new(bytes);
        let len = r.array()?;
        let v = r.u64()?;
        match (v, len) {
            (1, 5) | (KEYS_VERSION, 6) => {}
            (1 | KEYS_VERSION, _) => {
                return Err(CborError::WrongType {
                    expected: "room keys array of its version's length",
                }
                .into());
            }
            _ => return Err(ChainError::UnknownVersion(v).into()),
        }
        let room = RoomId(r.byte_array("16-byte room ID")?);
        let outbound = if r.null()? {
            None
        } else {
            Some(OutboundChain::from_bytes(r.bytes()?)?)
        };
        let counter = r.u64()?;
        let n = r.array()?;
        if n > MAX_INBOUND_CHAINS {
            return Err(CborError::WrongType {
                expected: "at most MAX_INBOUND_CHAINS chains",
            }
            .into());
        }
        let mut inbound = BTreeMap::new();
        for _ in 0..n {
            r.array_of(2, "inbound chain entry")?;
            let c = r.u64()?;
            let chain = InboundChain::from_bytes(r.bytes()?)?;
            let key = (chain.sender(), chain.chain_id());
            if chain.room() != room || inbound.contains_key(&key) {
                return Err(CborError::WrongType {
                    expected: "unique chains of this room",
                }
                .into());
            }
            inbound.insert(key, (c, chain));
        }
        let mut roster = Vec::new();
        if v != 1 {
            let n = r.array()?;
            if n > MAX_ROSTER_SECRETS {
                return Err(CborError::WrongType {
                    expected: "at most MAX_ROSTER_SECRETS roster secrets",
                }
                .into());
            }
            for _ in 0..n {
                roster.push(RosterSecret::from_bytes(
                    r.byte_array("32-byte roster secret")?,
                ));
            }
        }
        r.finish()?;
        let mut keys = Self {
            room,
            outbound,
            inbound,
            counter,
            roster,
        };
        // A state written before the room cap existed is trimmed, not refused.
        keys.enforce_skipped_cap();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    // The bound is computed from the caps alone and checked at compile time.
    const _: () = assert!(MAX_ROOM_KEYS_BYTES < crate::store::MAX_BLOB_VALUE_BYTES);

    #[test]
    fn worst_case_encoding_fits_one_secret_value() {
        // limits.md quotes the value; the limit it must stay under is 1 MiB.
        assert_eq!(MAX_ROOM_KEYS_BYTES, 458_935);
        assert_eq!(crate::store::MAX_BLOB_VALUE_BYTES, 1_048_576);
    }

    /// Encodes an inbound chain with every integer at its widest.
    fn wide_chain(room: RoomId, sender: &DeviceId, chain: u16, skipped: usize) -> Vec<u8> {
        let next = u32::MAX;
        let mut w = Writer::new();
        let mut id = [0xffu8; 16];
        id[..2].copy_from_slice(&chain.to_be_bytes());
        w.array(7)
            .u64(1)
            .bytes(room.as_bytes())
            .bytes(sender.as_bytes())
            .bytes(&id)
            .u64(next as u64)
            .bytes(&[7; 32])
            .array(skipped);
        for i in 0..skipped {
            w.array(2)
                .u64((next - 1 - (skipped - i) as u32) as u64)
                .bytes(&[9; 32]);
        }
        w.into_bytes()
    }

    #[test]
    fn every_cap_filled_encodes_within_the_bound() {
        // Fill every cap through the public API: 64 senders x 16 chains
        // (1,024), then each sender jumps far ahead on every chain.
        let mut rng = StdRng::seed_from_u64(1);
        let room = RoomId([2; 16]);
        let mut keys = RoomKeys::new(room);
        keys.outbound = Some(OutboundChain::new(room, u64::MAX, &mut rng));
        keys.roster = (0..MAX_ROSTER_SECRETS)
            .map(|_| RosterSecret::generate(&mut rng))
            .collect();
        let mut msgs = Vec::new();
        for s in 0..(MAX_INBOUND_CHAINS / MAX_INBOUND_CHAINS_PER_SENDER + 1) {
            let id = Identity::from_seed(&[s as u8 + 1; 32]);
            // One chain more than the per-sender cap: the first is dropped.
            for _ in 0..=MAX_INBOUND_CHAINS_PER_SENDER {
                let out = OutboundChain::new(room, 0, &mut rng);
                keys.install(InboundChain::from_share(room, id.device_id(), &out.share()));
                msgs.push((s as u8 + 1, out));
            }
        }
        assert_eq!(keys.inbound_len(), MAX_INBOUND_CHAINS);
        // The room cap evicted the first sender's chains; the last sender
        // keeps its newest MAX_INBOUND_CHAINS_PER_SENDER.
        let last = msgs.last().map(|(s, _)| *s).unwrap();
        let last = Identity::from_seed(&[last; 32]).device_id();
        let held = keys.inbound.keys().filter(|(s, _)| *s == last).count();
        assert_eq!(held, MAX_INBOUND_CHAINS_PER_SENDER);
        assert!(
            keys.inbound(&last, &msgs.last().unwrap().1.chain_id())
                .is_some()
        );
        let n = msgs.len();
        assert!(
            keys.inbound(
                &last,
                &msgs[n - MAX_INBOUND_CHAINS_PER_SENDER - 1].1.chain_id()
            )
            .is_none()
        );
        // Jump ahead by MAX_SKIP on the first 8 held chains: 16,000 skipped keys
        // offered, MAX_ROOM_SKIPPED_KEYS kept.
        let mut jumped = 0;
        for (seed, out) in &msgs {
            let id = &Identity::from_seed(&[*seed; 32]);
            if keys.inbound(&id.device_id(), &out.chain_id()).is_none() {
                continue;
            }
            let mut ck = out.share().chain_key;
            for _ in 0..crate::crypto::sender_chain::MAX_SKIP {
                ck = crate::crypto::sender_chain::ratchet_step(&ck).1;
            }
            let mut w = Writer::new();
            w.array(6)
                .u64(1)
                .bytes(room.as_bytes())
                .bytes(&out.chain_id().0)
                .u64(crate::crypto::sender_chain::MAX_SKIP as u64)
                .bytes(ck.as_ref())
                .u64(0);
            let far = OutboundChain::from_bytes(&w.into_bytes()).unwrap();
            let (_, payload) = far
                .encrypt(&id.device_id(), b"x", &mut rng)
                .unwrap()
                .release();
            let ev = crate::event::UnsignedEvent {
                room,
                sender: id.device_id(),
                seq: 1,
                prev: vec![],
                origin_ts_ms: 1,
                expires_ms: 2,
                kind: EventKind::Message,
                payload: payload.to_bytes(),
            }
            .sign(id)
            .unwrap();
            assert_eq!(&*decrypt_message(&mut keys, &ev).unwrap(), b"x");
            assert!(keys.skipped_len() <= MAX_ROOM_SKIPPED_KEYS);
            jumped += 1;
            if jumped == 8 {
                break;
            }
        }
        assert_eq!(keys.skipped_len(), MAX_ROOM_SKIPPED_KEYS);
        let bytes = keys.to_bytes();
        assert!(bytes.len() <= MAX_ROOM_KEYS_BYTES, "{}", bytes.len());
        assert_eq!(RoomKeys::from_bytes(&bytes).unwrap(), keys);

        // The same caps with every integer at its widest, built directly.
        let mut w = Writer::new();
        let out = OutboundChain::new(room, u64::MAX, &mut rng);
        w.array(6)
            .u64(KEYS_VERSION)
            .bytes(room.as_bytes())
            .bytes(&out.to_bytes())
            .u64(u64::MAX);
        w.array(MAX_INBOUND_CHAINS);
        let mut left = MAX_ROOM_SKIPPED_KEYS;
        for c in 0..MAX_INBOUND_CHAINS {
            let sender = Identity::from_seed(&[(c / MAX_INBOUND_CHAINS_PER_SENDER) as u8; 32]);
            let n = left.min(MAX_SKIPPED_KEYS);
            left -= n;
            w.array(2).u64(u64::MAX - c as u64).bytes(&wide_chain(
                room,
                &sender.device_id(),
                c as u16,
                n,
            ));
        }
        w.array(MAX_ROSTER_SECRETS);
        for i in 0..MAX_ROSTER_SECRETS {
            w.bytes(&[i as u8; ROSTER_SECRET_BYTES]);
        }
        let wide = w.into_bytes();
        assert!(
            wide.len() <= MAX_ROOM_KEYS_BYTES,
            "{} > {MAX_ROOM_KEYS_BYTES}",
            wide.len()
        );
        let keys = RoomKeys::from_bytes(&wide).unwrap();
        assert_eq!(keys.to_bytes().len(), wide.len());
    }

    #[test]
    fn a_version_1_state_reads_without_a_roster_secret() {
        let room = RoomId([3; 16]);
        let mut w = Writer::new();
        w.array(5)
            .u64(1)
            .bytes(room.as_bytes())
            .null()
            .u64(0)
            .array(0);
        let keys = RoomKeys::from_bytes(&w.into_bytes()).unwrap();
        assert_eq!(keys, RoomKeys::new(room));
        // A version-1 head with the version-2 length is refused.
        let mut w = Writer::new();
        w.array(6)
            .u64(1)
            .bytes(room.as_bytes())
            .null()
            .u64(0)
            .array(0)
            .null();
        assert!(RoomKeys::from_bytes(&w.into_bytes()).is_err());
    }

    #[test]
    fn oversized_old_state_is_trimmed_on_load() {
        let room = RoomId([2; 16]);
        let mut w = Writer::new();
        w.array(5).u64(1).bytes(room.as_bytes()).null().u64(13);
        w.array(13);
        for c in 0..13u16 {
            let sender = Identity::from_seed(&[1; 32]);
            w.array(2).u64(c as u64).bytes(&wide_chain(
                room,
                &sender.device_id(),
                c,
                MAX_SKIPPED_KEYS,
            ));
        }
        let keys = RoomKeys::from_bytes(&w.into_bytes()).unwrap();
        assert_eq!(keys.skipped_len(), MAX_ROOM_SKIPPED_KEYS);
        assert_eq!(keys.inbound_len(), 13);
    }

    proptest! {
        #[test]
        fn room_keys_round_trip(seed in any::<u64>(), n in 0usize..4, with_out in any::<bool>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let room = RoomId([2; 16]);
            let mut keys = RoomKeys::new(room);
            if with_out {
                keys.outbound = Some(OutboundChain::new(room, seed, &mut rng));
                keys.roster = vec![RosterSecret::generate(&mut rng), RosterSecret::generate(&mut rng)];
            }
            for i in 0..n {
                let sender = Identity::from_seed(&[i as u8; 32]).device_id();
                let out = OutboundChain::new(room, 0, &mut rng);
                keys.install(InboundChain::from_share(room, sender, &out.share()));
            }
            prop_assert_eq!(RoomKeys::from_bytes(&keys.to_bytes()).unwrap(), keys);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = RoomKeys::from_bytes(&bytes);
        }
    }
}
