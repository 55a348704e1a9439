//! Per-(room, sender) sender chains (`protocol-spec/encryption.md`,
//! "Sender chains"), in the style of Megolm and Signal sender keys.
//!
//! A sender owns one [`OutboundChain`] per room. Each message uses the next
//! chain position `i`:
//!
//! ```text
//! prk      = HKDF-Extract(salt = "meshrelay/v1/sender-chain\0", ikm = CK_i)
//! MK_i     = HKDF-Expand(prk, "message-key", 32)
//! CK_{i+1} = HKDF-Expand(prk, "chain-key", 32)
//! ct       = XChaCha20-Poly1305(MK_i, nonce = 24 random bytes,
//!                               aad = "meshrelay/v1/message-aad\0" || room || sender || chain_id || be32(i),
//!                               pad(plaintext))
//! ```
//!
//! Every message key encrypts exactly one message, and the 192-bit nonce is
//! drawn fresh from the caller's RNG, so a (key, nonce) pair cannot repeat
//! even if a chain position were ever reused (a device restored from a
//! copied data directory): nonce reuse would need both failures at once.
//!
//! **Persist before release.** [`OutboundChain::encrypt`] does not mutate the
//! chain: it returns a [`PendingMessage`] holding the advanced state and the
//! payload. The caller commits [`PendingMessage::next_state`] to its store
//! first, then calls [`PendingMessage::release`] to get the bytes to send.
//! A crash between the two loses one unsent message, never reuses a
//! position.
//!
//! Receivers keep an [`InboundChain`] per (sender, chain). Keys are erased
//! as soon as they are used: decrypting index `i` drops `MK_i` and replaces
//! the chain key with `CK_{i+1}`, so a later seizure cannot decrypt what was
//! already read. Out-of-order messages are served from a bounded cache of
//! skipped message keys ([`MAX_SKIPPED_KEYS`]); an index more than
//! [`MAX_SKIP`] ahead is rejected before any key is derived.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

use crate::cbor::{self, CborError, Reader, Writer};
use crate::crypto::domain;
use crate::crypto::keys::DeviceId;
use crate::crypto::padding::{self, PaddingError};
use crate::event::RoomId;

/// The furthest ahead of the next expected index a message may be; further
/// ones are rejected without deriving any key.
pub const MAX_SKIP: u32 = 2000;
/// Most skipped message keys one inbound chain keeps; beyond this the keys
/// of the lowest indices are erased (those messages become undecryptable).
pub const MAX_SKIPPED_KEYS: usize = 2000;
/// A sender SHOULD start a new chain after this many messages.
pub const CHAIN_ROTATE_MESSAGES: u32 = 10_000;
/// A sender SHOULD start a new chain once its current one is this old.
pub const CHAIN_ROTATE_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Version of the encrypted message payload (`content_version`).
pub const MESSAGE_PAYLOAD_VERSION: u64 = 1;
/// Version of the persisted chain-state formats.
const STATE_VERSION: u64 = 1;
/// XChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;

/// Why a chain operation failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The plaintext cannot be padded (too long) or the padding is bad.
    #[error("padding: {0}")]
    Padding(#[from] PaddingError),
    /// The message index is more than [`MAX_SKIP`] ahead of the chain.
    #[error("message index {index} is more than {MAX_SKIP} ahead of expected index {next}")]
    TooFarAhead {
        /// Index the message claims.
        index: u32,
        /// Next index the chain expects.
        next: u32,
    },
    /// The message key for this index was already used or erased
    /// (a replay, or a message older than this device's key share).
    #[error("no message key for index {0}: already used, erased, or before the shared position")]
    KeyUnavailable(u32),
    /// The AEAD tag did not verify: tampered ciphertext or wrong key.
    #[error("ciphertext does not authenticate (tampered or wrong key)")]
    Decrypt,
    /// The payload belongs to another chain.
    #[error("message belongs to a different chain")]
    WrongChain,
    /// The chain has used every index; start a new one.
    #[error("chain exhausted; start a new chain")]
    Exhausted,
    /// A payload or state encoding is malformed.
    #[error("encoding: {0}")]
    Cbor(#[from] CborError),
    /// Unknown payload or state version.
    #[error("unknown version {0}")]
    UnknownVersion(u64),
}

/// Identifies one sender chain (an epoch): 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChainId(pub [u8; 16]);

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({})", data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// One ratchet step: `(MK_i, CK_{i+1})` from `CK_i`.
pub fn ratchet_step(chain_key: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let hk = Hkdf::<Sha256>::new(Some(domain::SENDER_CHAIN), chain_key);
    let mut mk = Zeroizing::new([0u8; 32]);
    let mut ck = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    let _ = hk.expand(b"message-key", mk.as_mut());
    let _ = hk.expand(b"chain-key", ck.as_mut());
    (mk, ck)
}

/// The associated data binding a ciphertext to its room, sender, chain and
/// index.
pub fn message_aad(room: &RoomId, sender: &DeviceId, chain: &ChainId, index: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(domain::MESSAGE_AAD.len() + 68);
    aad.extend_from_slice(domain::MESSAGE_AAD);
    aad.extend_from_slice(room.as_bytes());
    aad.extend_from_slice(sender.as_bytes());
    aad.extend_from_slice(&chain.0);
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

/// The payload of a `Message` event: which chain position encrypted it, the
/// nonce and the ciphertext (padded plaintext plus tag).
///
/// ```text
/// message_payload = [ version: 1, chain_id: bstr(16), index: uint, nonce: bstr(24), ct: bstr ]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePayload {
    /// The chain that encrypted this message.
    pub chain_id: ChainId,
    /// Position in the chain.
    pub index: u32,
    /// XChaCha20 nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext with the Poly1305 tag appended.
    pub ciphertext: Vec<u8>,
}

impl MessagePayload {
    /// Canonical CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.ciphertext.len() + 64);
        w.array(5)
            .u64(MESSAGE_PAYLOAD_VERSION)
            .bytes(&self.chain_id.0)
            .u64(self.index as u64)
            .bytes(&self.nonce)
            .bytes(&self.ciphertext);
        w.into_bytes()
    }

    /// Strict decoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChainError> {
        cbor::validate(bytes, 1)?;
        let mut r = Reader::new(bytes);
        let n = r.array()?;
        let v = r.u64()?;
        if v != MESSAGE_PAYLOAD_VERSION {
            return Err(ChainError::UnknownVersion(v));
        }
        if n != 5 {
            return Err(CborError::WrongType {
                expected: "message payload array of 5",
            }
            .into());
        }
        let chain_id = ChainId(r.byte_array("16-byte chain ID")?);
        let index = u32::try_from(r.u64()?).map_err(|_| CborError::WrongType {
            expected: "chain index below 2^32",
        })?;
        let nonce = r.byte_array("24-byte nonce")?;
        let ciphertext = r.bytes()?.to_vec();
        r.finish()?;
        Ok(Self {
            chain_id,
            index,
            nonce,
            ciphertext,
        })
    }
}

/// A chain key at a position: what a key share carries. Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ChainShare {
    /// The chain.
    pub chain_id: ChainId,
    /// The index `chain_key` is the key of; earlier messages stay unreadable.
    pub index: u32,
    /// `CK_index`.
    pub chain_key: Zeroizing<[u8; 32]>,
    /// The room's current roster secret, when the sender is an admin
    /// (`protocol-spec/encryption.md` §6.2): how members learn a rotated
    /// roster secret.
    pub roster: Option<Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for ChainShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainShare")
            .field("chain_id", &self.chain_id)
            .field("index", &self.index)
            .field("chain_key", &"<redacted>")
            .field("roster", &self.roster.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ChainShare {
    /// Canonical CBOR: `[chain_id: bstr(16), index: uint, chain_key: bstr(32)]`,
    /// with a fourth element `roster_secret: bstr(32)` when it carries one.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(100);
        w.array(3 + usize::from(self.roster.is_some()))
            .bytes(&self.chain_id.0)
            .u64(self.index as u64)
            .bytes(self.chain_key.as_ref());
        if let Some(r) = &self.roster {
            w.bytes(r.as_ref());
        }
        Zeroizing::new(w.into_bytes())
    }

    /// Strict decoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChainError> {
        cbor::validate(bytes, 1)?;
        let mut r = Reader::new(bytes);
        let n = r.array()?;
        if n != 3 && n != 4 {
            return Err(CborError::WrongType {
                expected: "chain share array of 3 or 4",
            }
            .into());
        }
        let chain_id = ChainId(r.byte_array("16-byte chain ID")?);
        let index = u32::try_from(r.u64()?).map_err(|_| CborError::WrongType {
            expected: "chain index below 2^32",
        })?;
        let chain_key = Zeroizing::new(r.byte_array("32-byte chain key")?);
        let roster = if n == 4 {
            Some(Zeroizing::new(r.byte_array("32-byte roster secret")?))
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            chain_id,
            index,
            chain_key,
            roster,
        })
    }
}

/// This device's sending chain in one room. Secret; persist it with
/// [`OutboundChain::to_bytes`].
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundChain {
    room: RoomId,
    chain_id: ChainId,
    index: u32,
    chain_key: Zeroizing<[u8; 32]>,
    created_ms: u64,
}

impl fmt::Debug for OutboundChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundChain")
            .field("room", &self.room)
            .field("chain_id", &self.chain_id)
            .field("index", &self.index)
            .field("chain_key", &"<redacted>")
            .finish()
    }
}

/// An encrypted message whose advanced chain state has not been committed
/// yet. Persist [`PendingMessage::next_state`], then [`PendingMessage::release`].
#[derive(Debug)]
#[must_use = "persist next_state() and then release() the payload"]
pub struct PendingMessage {
    next: OutboundChain,
    payload: MessagePayload,
}

impl PendingMessage {
    /// The chain state after this message. Commit it before sending.
    pub fn next_state(&self) -> &OutboundChain {
        &self.next
    }

    /// After the commit: the chain to keep using and the payload to put in
    /// a `Message` event.
    pub fn release(self) -> (OutboundChain, MessagePayload) {
        (self.next, self.payload)
    }
}

impl OutboundChain {
    /// Starts a new chain (epoch) for `room` with a random chain ID and key.
    pub fn new<R: CryptoRng + ?Sized>(room: RoomId, now_ms: u64, rng: &mut R) -> Self {
        let mut chain_id = [0u8; 16];
        rng.fill_bytes(&mut chain_id);
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        Self {
            room,
            chain_id: ChainId(chain_id),
            index: 0,
            chain_key: key,
            created_ms: now_ms,
        }
    }

    /// The room.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// The chain ID.
    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// The index the next message will use.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// When the chain was started.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// The share that lets a member decrypt from the current index on.
    pub fn share(&self) -> ChainShare {
        ChainShare {
            chain_id: self.chain_id,
            index: self.index,
            chain_key: self.chain_key.clone(),
            roster: None,
        }
    }

    /// Whether the sender SHOULD start a new chain (message count or age).
    pub fn should_rotate(&self, now_ms: u64) -> bool {
        self.index >= CHAIN_ROTATE_MESSAGES
            || now_ms.saturating_sub(self.created_ms) >= CHAIN_ROTATE_MS
    }

    /// Encrypts `plaintext` (padded first) at the current index. `self` is
    /// not changed: the advanced state is in the returned [`PendingMessage`].
    pub fn encrypt<R: CryptoRng + ?Sized>(
        &self,
        sender: &DeviceId,
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<PendingMessage, ChainError> {
        let next_index = self.index.checked_add(1).ok_or(ChainError::Exhausted)?;
        let padded = Zeroizing::new(padding::pad(plaintext)?);
        let (mk, ck) = ratchet_step(&self.chain_key);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let aad = message_aad(&self.room, sender, &self.chain_id, self.index);
        let ciphertext = XChaCha20Poly1305::new(&(*mk).into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &padded,
                    aad: &aad,
                },
            )
            .map_err(|_| ChainError::Decrypt)?;
        Ok(PendingMessage {
            next: OutboundChain {
                room: self.room,
                chain_id: self.chain_id,
                index: next_index,
                chain_key: ck,
                created_ms: self.created_ms,
            },
            payload: MessagePayload {
                chain_id: self.chain_id,
                index: self.index,
                nonce,
                ciphertext,
            },
        })
    }

    /// Persisted form:
    /// `[1, room: bstr(16), chain_id: bstr(16), index, chain_key: bstr(32), created_ms]`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(96);
        w.array(6)
            .u64(STATE_VERSION)
            .bytes(self.room.as_bytes())
            .bytes(&self.chain_id.0)
            .u64(self.index as u64)
            .bytes(self.chain_key.as_ref())
            .u64(self.created_ms);
        Zeroizing::new(w.into_bytes())
    }

    /// Parses [`OutboundChain::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChainError> {
        cbor::validate(bytes, 1)?;
        let mut r = Reader::new(bytes);
        r.array_of(6, "outbound chain array of 6")?;
        let v = r.u64()?;
        if v != STATE_VERSION {
            return Err(ChainError::UnknownVersion(v));
        }
        let room = RoomId(r.byte_array("16-byte room ID")?);
        let chain_id = ChainId(r.byte_array("16-byte chain ID")?);
        let index = read_index(&mut r)?;
        let chain_key = Zeroizing::new(r.byte_array("32-byte chain key")?);
        let created_ms = r.u64()?;
        r.finish()?;
        Ok(Self {
            room,
            chain_id,
            index,
            chain_key,
            created_ms,
        })
    }
}

fn read_index(r: &mut Reader<'_>) -> Result<u32, ChainError> {
    u32::try_from(r.u64()?).map_err(|_| {
        CborError::WrongType {
            expected: "chain index below 2^32",
        }
        .into()
    })
}

/// A chain received from another sender. Secret; persist with
/// [`InboundChain::to_bytes`] after every successful decryption.
#[derive(Clone, PartialEq, Eq)]
pub struct InboundChain {
    room: RoomId,
    sender: DeviceId,
    chain_id: ChainId,
    next_index: u32,
    chain_key: Zeroizing<[u8; 32]>,
    skipped: BTreeMap<u32, Zeroizing<[u8; 32]>>,
}

impl fmt::Debug for InboundChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundChain")
            .field("room", &self.room)
            .field("sender", &self.sender)
            .field("chain_id", &self.chain_id)
            .field("next_index", &self.next_index)
            .field("skipped", &self.skipped.len())
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl InboundChain {
    /// Installs a chain from a share. The sender is the authenticated
    /// sender of the key-share event, never a field of the share.
    pub fn from_share(room: RoomId, sender: DeviceId, share: &ChainShare) -> Self {
        Self {
            room,
            sender,
            chain_id: share.chain_id,
            next_index: share.index,
            chain_key: share.chain_key.clone(),
            skipped: BTreeMap::new(),
        }
    }

    /// The room.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// The sender whose chain this is.
    pub fn sender(&self) -> DeviceId {
        self.sender
    }

    /// The chain ID.
    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// The next index whose key is derived from the chain key.
    pub fn next_index(&self) -> u32 {
        self.next_index
    }

    /// Number of cached skipped message keys.
    pub fn skipped_len(&self) -> usize {
        self.skipped.len()
    }

    /// Erases the `n` cached skipped keys of the lowest indices (the oldest
    /// messages of this chain become undecryptable). Used by the per-room
    /// cap (`crate::room::keys::MAX_ROOM_SKIPPED_KEYS`).
    pub fn drop_oldest_skipped(&mut self, n: usize) {
        for _ in 0..n {
            if self.skipped.pop_first().is_none() {
                break;
            }
        }
    }

    /// Decrypts a message of this chain and returns the unpadded plaintext.
    /// On success the used key is erased and the chain advanced; on any
    /// failure the state is unchanged.
    pub fn decrypt(&mut self, msg: &MessagePayload) -> Result<Zeroizing<Vec<u8>>, ChainError> {
        if msg.chain_id != self.chain_id {
            return Err(ChainError::WrongChain);
        }
        let aad = message_aad(&self.room, &self.sender, &self.chain_id, msg.index);
        if msg.index < self.next_index {
            let mk = self
                .skipped
                .get(&msg.index)
                .ok_or(ChainError::KeyUnavailable(msg.index))?;
            let pt = open(mk, msg, &aad)?;
            self.skipped.remove(&msg.index);
            return Ok(pt);
        }
        let ahead = msg.index - self.next_index;
        if ahead > MAX_SKIP {
            return Err(ChainError::TooFarAhead {
                index: msg.index,
                next: self.next_index,
            });
        }
        let next_after = msg.index.checked_add(1).ok_or(ChainError::Exhausted)?;
        // Derive on copies; commit only if the message authenticates.
        let mut ck = self.chain_key.clone();
        let mut new_skipped = Vec::with_capacity(ahead as usize);
        for i in self.next_index..msg.index {
            let (mk, next) = ratchet_step(&ck);
            new_skipped.push((i, mk));
            ck = next;
        }
        let (mk, next) = ratchet_step(&ck);
        let pt = open(&mk, msg, &aad)?;
        self.chain_key = next;
        self.next_index = next_after;
        self.skipped.extend(new_skipped);
        while self.skipped.len() > MAX_SKIPPED_KEYS {
            // Erase the oldest (lowest index) keys first.
            self.skipped.pop_first();
        }
        Ok(pt)
    }

    /// Persisted form: `[1, room, sender, chain_id, next_index, chain_key,
    /// [* [index, message_key]]]` (skipped keys in increasing index order).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(128 + 40 * self.skipped.len());
        w.array(7)
            .u64(STATE_VERSION)
            .bytes(self.room.as_bytes())
            .bytes(self.sender.as_bytes())
            .bytes(&self.chain_id.0)
            .u64(self.next_index as u64)
            .bytes(self.chain_key.as_ref())
            .array(self.skipped.len());
        for (i, k) in &self.skipped {
            w.array(2).u64(*i as u64).bytes(k.as_ref());
        }
        Zeroizing::new(w.into_bytes())
    }

    /// Parses [`InboundChain::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChainError> {
        cbor::validate(bytes, 3)?;
        let mut r = Reader::new(bytes);
        r.array_of(7, "inbound chain array of 7")?;
        let v = r.u64()?;
        if v != STATE_VERSION {
            return Err(ChainError::UnknownVersion(v));
        }
        let room = RoomId(r.byte_array("16-byte room ID")?);
        let sender = DeviceId::from_bytes(&r.byte_array("32-byte device ID")?).map_err(|_| {
            CborError::WrongType {
                expected: "valid sender key",
            }
        })?;
        let chain_id = ChainId(r.byte_array("16-byte chain ID")?);
        let next_index = read_index(&mut r)?;
        let chain_key = Zeroizing::new(r.byte_array("32-byte chain key")?);
        let n = r.array()?;
        if n > MAX_SKIPPED_KEYS {
            return Err(CborError::WrongType {
                expected: "at most MAX_SKIPPED_KEYS skipped keys",
            }
            .into());
        }
        let mut skipped = BTreeMap::new();
        let mut last: Option<u32> = None;
        for _ in 0..n {
            r.array_of(2, "skipped key pair")?;
            let i = read_index(&mut r)?;
            if last.is_some_and(|l| i <= l) || i >= next_index {
                return Err(CborError::WrongType {
                    expected: "increasing skipped indices below next_index",
                }
                .into());
            }
            last = Some(i);
            skipped.insert(i, Zeroizing::new(r.byte_array("32-byte message key")?));
        }
        r.finish()?;
        Ok(Self {
            room,
            sender,
            chain_id,
            next_index,
            chain_key,
            skipped,
        })
    }
}

fn open(mk: &[u8; 32], msg: &MessagePayload, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ChainError> {
    let mut padded = XChaCha20Poly1305::new(&(*mk).into())
        .decrypt(
            &XNonce::from(msg.nonce),
            Payload {
                msg: &msg.ciphertext,
                aad,
            },
        )
        .map_err(|_| ChainError::Decrypt)?;
    let out = padding::unpad(&padded).map(|p| Zeroizing::new(p.to_vec()));
    padded.zeroize();
    Ok(out?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn setup() -> (DeviceId, OutboundChain, InboundChain, StdRng) {
        let mut rng = StdRng::seed_from_u64(7);
        let a = Identity::from_seed(&[1; 32]).device_id();
        let out = OutboundChain::new(RoomId([5; 16]), 0, &mut rng);
        let inb = InboundChain::from_share(RoomId([5; 16]), a, &out.share());
        (a, out, inb, rng)
    }

    fn send(
        out: &mut OutboundChain,
        a: &DeviceId,
        text: &[u8],
        rng: &mut StdRng,
    ) -> MessagePayload {
        let pending = out.encrypt(a, text, rng).unwrap();
        let (next, payload) = pending.release();
        *out = next;
        payload
    }

    #[test]
    fn in_order_and_out_of_order_decrypt_then_erase() {
        let (a, mut out, mut inb, mut rng) = setup();
        let msgs: Vec<_> = (0..5)
            .map(|i| send(&mut out, &a, format!("m{i}").as_bytes(), &mut rng))
            .collect();
        assert_eq!(&*inb.decrypt(&msgs[3]).unwrap(), b"m3");
        assert_eq!(inb.skipped_len(), 3);
        assert_eq!(&*inb.decrypt(&msgs[0]).unwrap(), b"m0");
        assert_eq!(&*inb.decrypt(&msgs[4]).unwrap(), b"m4");
        // Replay: the key is gone.
        assert_eq!(inb.decrypt(&msgs[3]), Err(ChainError::KeyUnavailable(3)));
        assert_eq!(inb.decrypt(&msgs[0]), Err(ChainError::KeyUnavailable(0)));
        assert_eq!(&*inb.decrypt(&msgs[1]).unwrap(), b"m1");
        assert_eq!(inb.skipped_len(), 1);
    }

    #[test]
    fn too_far_ahead_is_rejected_without_state_change() {
        let (a, out, mut inb, mut rng) = setup();
        let mut far = out.clone();
        far.index = MAX_SKIP + 1;
        let msg = send(&mut far, &a, b"x", &mut rng);
        let before = inb.clone();
        assert!(matches!(
            inb.decrypt(&msg),
            Err(ChainError::TooFarAhead { .. })
        ));
        assert_eq!(inb, before);
    }

    #[test]
    fn tampering_is_rejected_and_state_unchanged() {
        let (a, mut out, mut inb, mut rng) = setup();
        let msg = send(&mut out, &a, b"hello", &mut rng);
        let before = inb.clone();
        for i in 0..msg.ciphertext.len() {
            let mut bad = msg.clone();
            bad.ciphertext[i] ^= 1;
            assert_eq!(inb.decrypt(&bad), Err(ChainError::Decrypt));
        }
        let mut bad = msg.clone();
        bad.nonce[0] ^= 1;
        assert_eq!(inb.decrypt(&bad), Err(ChainError::Decrypt));
        assert_eq!(inb, before);
        // Another sender cannot claim this ciphertext: the AAD binds sender.
        let c = Identity::from_seed(&[3; 32]).device_id();
        let mut wrong = InboundChain::from_share(RoomId([5; 16]), c, &out.share());
        wrong.next_index = 0;
        wrong.chain_key = before.chain_key.clone();
        assert_eq!(wrong.decrypt(&msg), Err(ChainError::Decrypt));
        assert_eq!(&*inb.decrypt(&msg).unwrap(), b"hello");
    }

    #[test]
    fn share_gives_no_access_to_earlier_messages() {
        let (a, mut out, _, mut rng) = setup();
        let early = send(&mut out, &a, b"before", &mut rng);
        let mut late = InboundChain::from_share(RoomId([5; 16]), a, &out.share());
        assert_eq!(late.decrypt(&early), Err(ChainError::KeyUnavailable(0)));
        let msg = send(&mut out, &a, b"after", &mut rng);
        assert_eq!(&*late.decrypt(&msg).unwrap(), b"after");
    }

    #[test]
    fn debug_is_redacted() {
        let (_, out, inb, _) = setup();
        assert!(format!("{out:?}").contains("redacted"));
        assert!(format!("{inb:?}").contains("redacted"));
        assert!(format!("{:?}", out.share()).contains("redacted"));
    }

    proptest! {
        #[test]
        fn message_payload_round_trips(id in any::<[u8; 16]>(), index in any::<u32>(),
                nonce in any::<[u8; 24]>(), ct in proptest::collection::vec(any::<u8>(), 0..200)) {
            let p = MessagePayload { chain_id: ChainId(id), index, nonce, ciphertext: ct };
            prop_assert_eq!(MessagePayload::from_bytes(&p.to_bytes()).unwrap(), p);
        }

        #[test]
        fn chain_states_round_trip(seed in any::<u64>(), sends in 0usize..6, skip in 0u32..5) {
            let mut rng = StdRng::seed_from_u64(seed);
            let a = Identity::from_seed(&[1; 32]).device_id();
            let mut out = OutboundChain::new(RoomId([9; 16]), seed, &mut rng);
            let mut inb = InboundChain::from_share(RoomId([9; 16]), a, &out.share());
            let mut last = None;
            for _ in 0..sends + skip as usize {
                last = Some(send(&mut out, &a, b"x", &mut rng));
            }
            if let Some(m) = last { inb.decrypt(&m).unwrap(); }
            prop_assert_eq!(OutboundChain::from_bytes(&out.to_bytes()).unwrap(), out.clone());
            prop_assert_eq!(InboundChain::from_bytes(&inb.to_bytes()).unwrap(), inb);
            let share = out.share();
            prop_assert_eq!(ChainShare::from_bytes(&share.to_bytes()).unwrap(), share);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = MessagePayload::from_bytes(&bytes);
            let _ = InboundChain::from_bytes(&bytes);
            let _ = OutboundChain::from_bytes(&bytes);
            let _ = ChainShare::from_bytes(&bytes);
        }
    }
}
