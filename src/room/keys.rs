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
use crate::crypto::sender_chain::{
    ChainError, ChainId, InboundChain, MessagePayload, OutboundChain,
};
use crate::event::{Event, EventKind, RoomId};
use crate::room::dag::RoomDag;
use crate::room::resolve::MembershipState;

/// Most inbound chains one room keeps (four epochs per member at the room
/// cap); the least recently installed is dropped first.
pub const MAX_INBOUND_CHAINS: usize = 1024;
/// Version of the persisted room-keys format.
const KEYS_VERSION: u64 = 1;

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

/// Accepts a key-share event (see the module docs) and returns the chain it
/// gives this device. The caller installs it with [`RoomKeys::install`].
pub fn accept_key_share(
    dag: &mut RoomDag,
    event: &Event,
    me: &DeviceId,
    prekeys: &PrekeyRing,
) -> Result<InboundChain, KeyError> {
    if event.kind() != EventKind::KeyShare {
        return Err(KeyError::WrongChannel(event.kind().name()));
    }
    if dag.node(&event.id()).is_none() {
        return Err(KeyError::UnknownEvent);
    }
    if !dag.sender_authorized_at(&event.id(), &event.sender()) {
        return Err(KeyError::NotMember(event.sender()));
    }
    let payload = KeySharePayload::from_bytes(event.payload())?;
    let share = open_share(&event.room(), &event.sender(), &payload, me, prekeys)?;
    Ok(InboundChain::from_share(
        event.room(),
        event.sender(),
        &share,
    ))
}

/// Accepts a prekey-update event from a member.
pub fn accept_prekey_update(dag: &mut RoomDag, event: &Event) -> Result<PrekeyUpdate, KeyError> {
    if event.kind() != EventKind::PrekeyUpdate {
        return Err(KeyError::WrongChannel(event.kind().name()));
    }
    if dag.node(&event.id()).is_none() {
        return Err(KeyError::UnknownEvent);
    }
    if !dag.sender_authorized_at(&event.id(), &event.sender()) {
        return Err(KeyError::NotMember(event.sender()));
    }
    Ok(PrekeyUpdate::from_bytes(event.payload())?)
}

/// The recipients of a key share: every member but `me`, each with the
/// newest prekey known (its card's, or a later accepted update's).
pub fn recipients(
    state: &MembershipState,
    me: &DeviceId,
    updates: &BTreeMap<DeviceId, PrekeyUpdate>,
) -> Vec<Recipient> {
    state
        .members
        .values()
        .filter(|m| m.device != *me)
        .map(|m| {
            let mut r = Recipient {
                device: m.device,
                prekey_id: m.card.prekey_id,
                prekey: m.card.prekey,
            };
            if let Some(u) = updates.get(&m.device)
                && u.prekey_id > r.prekey_id
            {
                r.prekey_id = u.prekey_id;
                r.prekey = u.prekey;
            }
            r
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
    if !matches!(event.kind(), EventKind::Message | EventKind::Receipt) {
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
    Ok(chain.decrypt(&payload)?)
}

/// A device's key state for one room. Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomKeys {
    room: RoomId,
    /// This device's current sending chain.
    pub outbound: Option<OutboundChain>,
    inbound: BTreeMap<(DeviceId, ChainId), (u64, InboundChain)>,
    counter: u64,
}

impl RoomKeys {
    /// Empty key state for `room`.
    pub fn new(room: RoomId) -> Self {
        Self {
            room,
            outbound: None,
            inbound: BTreeMap::new(),
            counter: 0,
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
        self.counter += 1;
        self.inbound.insert(key, (self.counter, chain));
        while self.inbound.len() > MAX_INBOUND_CHAINS {
            let oldest = self
                .inbound
                .iter()
                .min_by_key(|(_, (c, _))| *c)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.inbound.remove(&k);
            }
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

    /// Drops every inbound chain of `sender` (for example after it left).
    pub fn forget_sender(&mut self, sender: &DeviceId) {
        self.inbound.retain(|(s, _), _| s != sender);
    }

    /// Persisted form: `[1, room, outbound_bytes|null, counter, [* [installed, inbound_bytes]]]`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(256);
        w.array(5).u64(KEYS_VERSION).bytes(self.room.as_bytes());
        match &self.outbound {
            Some(o) => w.bytes(&o.to_bytes()),
            None => w.null(),
        };
        w.u64(self.counter).array(self.inbound.len());
        for (c, chain) in self.inbound.values() {
            w.array(2).u64(*c).bytes(&chain.to_bytes());
        }
        Zeroizing::new(w.into_bytes())
    }

    /// Parses [`RoomKeys::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        cbor::validate(bytes, 3)?;
        let mut r = Reader::new(bytes);
        r.array_of(5, "room keys array of 5")?;
        let v = r.u64()?;
        if v != KEYS_VERSION {
            return Err(ChainError::UnknownVersion(v).into());
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
        r.finish()?;
        Ok(Self {
            room,
            outbound,
            inbound,
            counter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    proptest! {
        #[test]
        fn room_keys_round_trip(seed in any::<u64>(), n in 0usize..4, with_out in any::<bool>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let room = RoomId([2; 16]);
            let mut keys = RoomKeys::new(room);
            if with_out {
                keys.outbound = Some(OutboundChain::new(room, seed, &mut rng));
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
