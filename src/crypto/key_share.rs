//! Key shares and prekeys (`protocol-spec/encryption.md`, "Key shares" and
//! "Prekeys").
//!
//! A sender hands its chain key ([`ChainShare`]) to each member by sealing it
//! with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305) to the member's current **signed prekey**, never to
//! the long-term key:
//!
//! ```text
//! info = "meshrelay/v1/key-share\0" || room(16) || sender(32) || recipient(32) || be32(prekey_id)
//! aad  = chain_id(16)
//! (enc, ct) = SealBase(pk = recipient prekey, info, aad, cbor(ChainShare))
//! key_share_payload = [ version: 1, chain_id: bstr(16),
//!                       shares: [* [recipient: bstr(32), prekey_id: uint, enc: bstr(32), ct: bstr]] ]
//! ```
//!
//! One key-share event carries up to [`MAX_SHARES_PER_EVENT`] sealed shares,
//! sorted by recipient. The sender of the chain is the authenticated sender
//! of the event that carries the share, never a field inside it, and
//! `room`/`sender`/`recipient` are bound through `info`, so a share cannot be
//! moved to another room, attributed to another sender, or redirected.
//! Whether a share is *accepted* (right event kind, sender is a member) is
//! decided by `crate::room::accept_key_share`.
//!
//! Prekeys rotate ([`PrekeyRing::rotate`]); a superseded prekey's secret is
//! kept for [`PREKEY_GRACE_MS`] so shares in flight still open, then
//! [`PrekeyRing::prune`] deletes it. After that, a seized device cannot open
//! key shares that a homeserver kept.

use std::collections::BTreeMap;
use std::fmt;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::crypto::domain;
use crate::crypto::identity::Identity;
use crate::crypto::keys::{AgreementKey, DeviceId};
use crate::crypto::sender_chain::{ChainError, ChainId, ChainShare};
use crate::event::RoomId;

/// Version of the key-share payload.
pub const KEY_SHARE_VERSION: u64 = 1;
/// Version of the prekey-update payload.
pub const PREKEY_UPDATE_VERSION: u64 = 1;
/// Most sealed shares in one key-share event (about 150 bytes each, 184
/// when an admin's share carries a roster secret, so 80 fit
/// `MAX_PAYLOAD_BYTES`; tested). Larger rooms use several events.
pub const MAX_SHARES_PER_EVENT: usize = 80;
/// Largest sealed share ciphertext (a `ChainShare` is 57 bytes, plus tag).
pub const MAX_SEALED_SHARE_BYTES: usize = 128;
/// A device SHOULD rotate its prekey this often.
pub const PREKEY_ROTATE_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// How long a superseded prekey secret is kept before deletion.
pub const PREKEY_GRACE_MS: u64 = 14 * 24 * 60 * 60 * 1000;
/// Most prekey secrets a ring holds (current plus those in grace).
pub const MAX_PREKEYS: usize = 8;
/// Version of the persisted prekey ring.
const RING_VERSION: u64 = 1;

/// Why a key share could not be made or opened.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyShareError {
    /// Malformed or non-canonical encoding.
    #[error("encoding: {0}")]
    Cbor(#[from] CborError),
    /// Unknown payload version.
    #[error("unknown key-share version {0}")]
    UnknownVersion(u64),
    /// More shares than allowed, or recipients not strictly increasing.
    #[error("share list too long or not sorted by recipient")]
    BadShareList,
    /// No share in the payload is addressed to this device.
    #[error("no share for this device")]
    NotForMe,
    /// The share is sealed to a prekey this device no longer (or never) had.
    #[error("prekey {0} is unknown or was deleted")]
    UnknownPrekey(u32),
    /// HPKE failed to open the share: tampered, or sealed for someone else.
    #[error("sealed share does not open")]
    Open,
    /// HPKE failed to seal.
    #[error("sealing failed")]
    Seal,
    /// The opened share names another chain than the payload.
    #[error("share chain ID does not match the payload")]
    ChainMismatch,
    /// The opened share does not parse.
    #[error("share contents: {0}")]
    Share(#[from] ChainError),
    /// A key in the payload is invalid.
    #[error("invalid key in key share")]
    BadKey,
}

/// One share sealed to one recipient's prekey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedShare {
    /// The member it is for.
    pub recipient: DeviceId,
    /// Which of the recipient's prekeys it is sealed to.
    pub prekey_id: u32,
    /// HPKE encapsulated key.
    pub enc: [u8; 32],
    /// HPKE ciphertext of the `ChainShare`.
    pub ct: Vec<u8>,
}

/// The payload of a `KeyShare` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySharePayload {
    /// The chain being shared.
    pub chain_id: ChainId,
    /// Sealed shares, strictly increasing by recipient.
    pub shares: Vec<SealedShare>,
}

/// A recipient for [`seal_shares`]: a member and its current prekey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// The member's device.
    pub device: DeviceId,
    /// Its prekey ID.
    pub prekey_id: u32,
    /// Its prekey.
    pub prekey: AgreementKey,
}

fn info(room: &RoomId, sender: &DeviceId, recipient: &DeviceId, prekey_id: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(domain::KEY_SHARE_INFO.len() + 84);
    v.extend_from_slice(domain::KEY_SHARE_INFO);
    v.extend_from_slice(room.as_bytes());
    v.extend_from_slice(sender.as_bytes());
    v.extend_from_slice(recipient.as_bytes());
    v.extend_from_slice(&prekey_id.to_be_bytes());
    v
}

/// HPKE base-mode seal (the suite in the module docs) to `prekey`:
/// returns the encapsulated key and the ciphertext. The one HPKE seal of
/// the crate: key shares and roster secrets
/// (`crate::crypto::roster`) both use it.
pub(crate) fn hpke_seal<R: CryptoRng + ?Sized>(
    prekey: &AgreementKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<([u8; 32], Vec<u8>), KeyShareError> {
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(prekey.as_bytes())
        .map_err(|_| KeyShareError::BadKey)?;
    let (enc, ct) =
        hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeS::Base,
            &pk,
            info,
            plaintext,
            aad,
            &mut RngAdapter(rng),
        )
        .map_err(|_| KeyShareError::Seal)?;
    let mut e = [0u8; 32];
    e.copy_from_slice(&enc.to_bytes());
    Ok((e, ct))
}

/// Opens what [`hpke_seal`] sealed to this device's prekey `prekey_id`.
pub(crate) fn hpke_open(
    prekeys: &PrekeyRing,
    prekey_id: u32,
    enc: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    ct: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyShareError> {
    let sk_bytes = prekeys
        .secret(prekey_id)
        .ok_or(KeyShareError::UnknownPrekey(prekey_id))?;
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(sk_bytes.as_ref())
        .map_err(|_| KeyShareError::BadKey)?;
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc)
        .map_err(|_| KeyShareError::Open)?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &enc,
        info,
        ct,
        aad,
    )
    .map(Zeroizing::new)
    .map_err(|_| KeyShareError::Open)
}

/// Seals one share to one recipient.
pub fn seal_one<R: CryptoRng + ?Sized>(
    room: &RoomId,
    sender: &DeviceId,
    share: &ChainShare,
    to: &Recipient,
    rng: &mut R,
) -> Result<SealedShare, KeyShareError> {
    let (enc, ct) = hpke_seal(
        &to.prekey,
        &info(room, sender, &to.device, to.prekey_id),
        &share.chain_id.0,
        &share.to_bytes(),
        rng,
    )?;
    Ok(SealedShare {
        recipient: to.device,
        prekey_id: to.prekey_id,
        enc,
        ct,
    })
}

/// Seals `share` to every recipient, in recipient order, split into
/// payloads of at most [`MAX_SHARES_PER_EVENT`] shares. Duplicate recipients
/// are sealed once.
pub fn seal_shares<R: CryptoRng + ?Sized>(
    room: &RoomId,
    sender: &DeviceId,
    share: &ChainShare,
    recipients: &[Recipient],
    rng: &mut R,
) -> Result<Vec<KeySharePayload>, KeyShareError> {
    let mut sorted: Vec<Recipient> = recipients.to_vec();
    sorted.sort_by_key(|r| r.device);
    sorted.dedup_by_key(|r| r.device);
    let mut out = Vec::new();
    for chunk in sorted.chunks(MAX_SHARES_PER_EVENT) {
        let mut shares = Vec::with_capacity(chunk.len());
        for r in chunk {
            shares.push(seal_one(room, sender, share, r, rng)?);
        }
        out.push(KeySharePayload {
            chain_id: share.chain_id,
            shares,
        });
    }
    Ok(out)
}

/// Opens the share addressed to `me` in `payload`, which arrived in an event
/// of `room` signed by `sender`. This is the cryptographic half only: the
/// caller must already have checked the event kind and the sender's
/// membership (`crate::room::accept_key_share` does both).
pub fn open_share(
    room: &RoomId,
    sender: &DeviceId,
    payload: &KeySharePayload,
    me: &DeviceId,
    prekeys: &PrekeyRing,
) -> Result<ChainShare, KeyShareError> {
    let sealed = payload
        .shares
        .iter()
        .find(|s| s.recipient == *me)
        .ok_or(KeyShareError::NotForMe)?;
    let pt = hpke_open(
        prekeys,
        sealed.prekey_id,
        &sealed.enc,
        &info(room, sender, me, sealed.prekey_id),
        &payload.chain_id.0,
        &sealed.ct,
    )?;
    let share = ChainShare::from_bytes(&pt)?;
    if share.chain_id != payload.chain_id {
        return Err(KeyShareError::ChainMismatch);
    }
    Ok(share)
}

impl KeySharePayload {
    /// Canonical CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(32 + 160 * self.shares.len());
        w.array(3)
            .u64(KEY_SHARE_VERSION)
            .bytes(&self.chain_id.0)
            .array(self.shares.len());
        for s in &self.shares {
            w.array(4)
                .bytes(s.recipient.as_bytes())
                .u64(s.prekey_id as u64)
                .bytes(&s.enc)
                .bytes(&s.ct);
        }
        w.into_bytes()
    }

    /// Strict decoding (structure only; nothing is opened).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyShareError> {
        cbor::validate(bytes, 3)?;
        let mut r = Reader::new(bytes);
        let n = r.array()?;
        let v = r.u64()?;
        if v != KEY_SHARE_VERSION {
            return Err(KeyShareError::UnknownVersion(v));
        }
        if n != 3 {
            return Err(CborError::WrongType {
                expected: "key-share array of 3",
            }
            .into());
        }
        let chain_id = ChainId(r.byte_array("16-byte chain ID")?);
        let count = r.array()?;
        if count > MAX_SHARES_PER_EVENT {
            return Err(KeyShareError::BadShareList);
        }
        let mut shares: Vec<SealedShare> = Vec::with_capacity(count);
        for _ in 0..count {
            r.array_of(4, "sealed share array of 4")?;
            let recipient = DeviceId::from_bytes(&r.byte_array("32-byte device ID")?)
                .map_err(|_| KeyShareError::BadKey)?;
            let prekey_id = u32::try_from(r.u64()?).map_err(|_| CborError::WrongType {
                expected: "prekey id below 2^32",
            })?;
            let enc = r.byte_array("32-byte encapsulated key")?;
            let ct = r.bytes()?;
            if ct.len() > MAX_SEALED_SHARE_BYTES {
                return Err(KeyShareError::BadShareList);
            }
            if shares.last().is_some_and(|l| l.recipient >= recipient) {
                return Err(KeyShareError::BadShareList);
            }
            shares.push(SealedShare {
                recipient,
                prekey_id,
                enc,
                ct: ct.to_vec(),
            });
        }
        r.finish()?;
        Ok(Self { chain_id, shares })
    }
}

/// The payload of a `PrekeyUpdate` event: a device publishes its new prekey.
/// The event signature (by the device) authenticates it.
///
/// ```text
/// prekey_update = [ version: 1, prekey_id: uint, prekey: bstr(32) ]
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrekeyUpdate {
    /// New prekey ID (greater than every earlier one).
    pub prekey_id: u32,
    /// New prekey.
    pub prekey: AgreementKey,
}

impl PrekeyUpdate {
    /// Canonical CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(48);
        w.array(3)
            .u64(PREKEY_UPDATE_VERSION)
            .u64(self.prekey_id as u64)
            .bytes(self.prekey.as_bytes());
        w.into_bytes()
    }

    /// Strict decoding; validates the key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyShareError> {
        cbor::validate(bytes, 1)?;
        let mut r = Reader::new(bytes);
        let n = r.array()?;
        let v = r.u64()?;
        if v != PREKEY_UPDATE_VERSION {
            return Err(KeyShareError::UnknownVersion(v));
        }
        if n != 3 {
            return Err(CborError::WrongType {
                expected: "prekey update array of 3",
            }
            .into());
        }
        let prekey_id = u32::try_from(r.u64()?).map_err(|_| CborError::WrongType {
            expected: "prekey id below 2^32",
        })?;
        let prekey = AgreementKey::from_bytes(&r.byte_array("32-byte prekey")?)
            .map_err(|_| KeyShareError::BadKey)?;
        r.finish()?;
        Ok(Self { prekey_id, prekey })
    }
}

/// One prekey secret and its lifetime.
#[derive(Clone, PartialEq, Eq)]
struct PrekeyEntry {
    secret: Zeroizing<[u8; 32]>,
    created_ms: u64,
    retired_ms: Option<u64>,
}

/// This device's prekey secrets: the current one and superseded ones still
/// in their grace period. Secret; persist with [`PrekeyRing::to_bytes`]
/// after every rotation and prune.
#[derive(Clone, PartialEq, Eq)]
pub struct PrekeyRing {
    current: u32,
    entries: BTreeMap<u32, PrekeyEntry>,
}

impl fmt::Debug for PrekeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrekeyRing")
            .field("current", &self.current)
            .field("ids", &self.entries.keys().collect::<Vec<_>>())
            .field("secrets", &"<redacted>")
            .finish()
    }
}

fn public_of(secret: &[u8; 32]) -> Option<AgreementKey> {
    let sk = x25519_dalek::StaticSecret::from(*secret);
    AgreementKey::from_bytes(x25519_dalek::PublicKey::from(&sk).as_bytes()).ok()
}

impl PrekeyRing {
    /// A ring holding the identity's current prekey.
    pub fn from_identity(identity: &Identity, now_ms: u64) -> Self {
        let p = identity.prekey();
        let mut entries = BTreeMap::new();
        entries.insert(
            p.id,
            PrekeyEntry {
                secret: Zeroizing::new(p.secret().to_bytes()),
                created_ms: now_ms,
                retired_ms: None,
            },
        );
        Self {
            current: p.id,
            entries,
        }
    }

    /// The current prekey ID.
    pub fn current_id(&self) -> u32 {
        self.current
    }

    /// The public key of prekey `id`, if held.
    pub fn public(&self, id: u32) -> Option<AgreementKey> {
        self.entries.get(&id).and_then(|e| public_of(&e.secret))
    }

    /// Prekey IDs whose secrets are held.
    pub fn ids(&self) -> Vec<u32> {
        self.entries.keys().copied().collect()
    }

    fn secret(&self, id: u32) -> Option<&Zeroizing<[u8; 32]>> {
        self.entries.get(&id).map(|e| &e.secret)
    }

    /// Whether the current prekey is due for rotation.
    pub fn should_rotate(&self, now_ms: u64) -> bool {
        self.entries
            .get(&self.current)
            .is_none_or(|e| now_ms.saturating_sub(e.created_ms) >= PREKEY_ROTATE_MS)
    }

    /// Makes a new current prekey and retires the old one (kept for
    /// [`PREKEY_GRACE_MS`]). Returns the update to publish; the caller
    /// persists the ring first, then publishes a `PrekeyUpdate` event and a
    /// fresh contact card.
    pub fn rotate<R: CryptoRng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> PrekeyUpdate {
        let id = self.current.wrapping_add(1).max(1);
        let mut secret = Zeroizing::new([0u8; 32]);
        let prekey = loop {
            rng.fill_bytes(secret.as_mut());
            if let Some(p) = public_of(&secret) {
                break p;
            }
        };
        if let Some(old) = self.entries.get_mut(&self.current) {
            old.retired_ms = Some(now_ms);
        }
        self.entries.insert(
            id,
            PrekeyEntry {
                secret,
                created_ms: now_ms,
                retired_ms: None,
            },
        );
        self.current = id;
        while self.entries.len() > MAX_PREKEYS {
            self.entries.pop_first();
        }
        PrekeyUpdate {
            prekey_id: id,
            prekey,
        }
    }

    /// Deletes retired prekeys whose grace period is over. Returns how many
    /// were deleted.
    pub fn prune(&mut self, now_ms: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| {
            e.retired_ms
                .is_none_or(|r| now_ms < r.saturating_add(PREKEY_GRACE_MS))
        });
        before - self.entries.len()
    }

    /// Persisted form: `[1, current, [* [id, secret: bstr(32), created_ms, retired_ms|null]]]`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(16 + 64 * self.entries.len());
        w.array(3)
            .u64(RING_VERSION)
            .u64(self.current as u64)
            .array(self.entries.len());
        for (id, e) in &self.entries {
            w.array(4)
                .u64(*id as u64)
                .bytes(e.secret.as_ref())
                .u64(e.created_ms);
            match e.retired_ms {
                Some(r) => w.u64(r),
                None => w.null(),
            };
        }
        Zeroizing::new(w.into_bytes())
    }

    /// Parses [`PrekeyRing::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyShareError> {
        cbor::validate(bytes, 3)?;
        let mut r = Reader::new(bytes);
        r.array_of(3, "prekey ring array of 3")?;
        let v = r.u64()?;
        if v != RING_VERSION {
            return Err(KeyShareError::UnknownVersion(v));
        }
        let bad = || CborError::WrongType {
            expected: "prekey id below 2^32",
        };
        let current = u32::try_from(r.u64()?).map_err(|_| bad())?;
        let n = r.array()?;
        if n > MAX_PREKEYS {
            return Err(KeyShareError::BadShareList);
        }
        let mut entries = BTreeMap::new();
        for _ in 0..n {
            r.array_of(4, "prekey entry array of 4")?;
            let id = u32::try_from(r.u64()?).map_err(|_| bad())?;
            let secret = Zeroizing::new(r.byte_array("32-byte prekey secret")?);
            let created_ms = r.u64()?;
            let retired_ms = if r.null()? { None } else { Some(r.u64()?) };
            if entries.last_key_value().is_some_and(|(l, _)| *l >= id) {
                return Err(CborError::WrongType {
                    expected: "increasing prekey ids",
                }
                .into());
            }
            entries.insert(
                id,
                PrekeyEntry {
                    secret,
                    created_ms,
                    retired_ms,
                },
            );
        }
        r.finish()?;
        Ok(Self { current, entries })
    }
}

/// Adapts `&mut R` (possibly unsized) to the sized `CryptoRng` HPKE wants.
struct RngAdapter<'a, R: CryptoRng + ?Sized>(&'a mut R);

impl<R: CryptoRng + ?Sized> rand_core::TryRng for RngAdapter<'_, R> {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl<R: CryptoRng + ?Sized> rand_core::TryCryptoRng for RngAdapter<'_, R> {}

/// Derives the X25519 key pair RFC 9180 `DeriveKeyPair` gives for `ikm`
/// (used by the test vectors: a fixed-output RNG makes HPKE's ephemeral key
/// exactly `DeriveKeyPair(ikm)`).
pub fn derive_hpke_keypair(ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let (sk, pk) = X25519HkdfSha256::derive_keypair(ikm);
    let mut s = [0u8; 32];
    s.copy_from_slice(&sk.to_bytes());
    let mut p = [0u8; 32];
    p.copy_from_slice(&pk.to_bytes());
    (s, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sender_chain::OutboundChain;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn a_full_event_of_shares_with_roster_secrets_fits_a_payload() {
        let mut rng = StdRng::seed_from_u64(9);
        let room = RoomId([1; 16]);
        let a = Identity::from_seed(&[1; 32]);
        let mut share = OutboundChain::new(room, 0, &mut rng).share();
        share.index = u32::MAX;
        share.roster = Some(Zeroizing::new([7; 32]));
        let to: Vec<Recipient> = (0..MAX_SHARES_PER_EVENT)
            .map(|i| {
                let id = Identity::from_seed(&[i as u8 + 2; 32]);
                Recipient {
                    device: id.device_id(),
                    prekey_id: u32::MAX,
                    prekey: id.prekey().public(),
                }
            })
            .collect();
        let payloads = seal_shares(&room, &a.device_id(), &share, &to, &mut rng).unwrap();
        assert_eq!(payloads.len(), 1);
        let bytes = payloads[0].to_bytes();
        assert!(
            bytes.len() <= crate::limits::MAX_PAYLOAD_BYTES,
            "{} > {}",
            bytes.len(),
            crate::limits::MAX_PAYLOAD_BYTES
        );
        assert!(
            payloads[0]
                .shares
                .iter()
                .all(|s| s.ct.len() <= MAX_SEALED_SHARE_BYTES)
        );
    }

    #[test]
    fn seal_open_and_binding() {
        let mut rng = StdRng::seed_from_u64(1);
        let a = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        let c = Identity::from_seed(&[3; 32]);
        let room = RoomId([4; 16]);
        let ring_b = PrekeyRing::from_identity(&b, 0);
        let ring_c = PrekeyRing::from_identity(&c, 0);
        let chain = OutboundChain::new(room, 0, &mut rng);
        let rb = Recipient {
            device: b.device_id(),
            prekey_id: b.prekey().id,
            prekey: b.prekey().public(),
        };
        let payloads =
            seal_shares(&room, &a.device_id(), &chain.share(), &[rb, rb], &mut rng).unwrap();
        assert_eq!(payloads.len(), 1);
        let p = KeySharePayload::from_bytes(&payloads[0].to_bytes()).unwrap();
        assert_eq!(p.shares.len(), 1);
        let got = open_share(&room, &a.device_id(), &p, &b.device_id(), &ring_b).unwrap();
        assert_eq!(got, chain.share());
        // C has no share; C's keys cannot open B's share even if relabelled.
        assert_eq!(
            open_share(&room, &a.device_id(), &p, &c.device_id(), &ring_c),
            Err(KeyShareError::NotForMe)
        );
        let mut relabel = p.clone();
        relabel.shares[0].recipient = c.device_id();
        assert!(open_share(&room, &a.device_id(), &relabel, &c.device_id(), &ring_c).is_err());
        // Attributed to another sender or room: does not open.
        assert_eq!(
            open_share(&room, &c.device_id(), &p, &b.device_id(), &ring_b),
            Err(KeyShareError::Open)
        );
        assert_eq!(
            open_share(
                &RoomId([0; 16]),
                &a.device_id(),
                &p,
                &b.device_id(),
                &ring_b
            ),
            Err(KeyShareError::Open)
        );
        // Other chain ID in the clear: AAD mismatch.
        let mut other = p.clone();
        other.chain_id.0[0] ^= 1;
        assert_eq!(
            open_share(&room, &a.device_id(), &other, &b.device_id(), &ring_b),
            Err(KeyShareError::Open)
        );
    }

    #[test]
    fn rotation_grace_and_deletion() {
        let mut rng = StdRng::seed_from_u64(2);
        let a = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        let room = RoomId([4; 16]);
        let mut ring = PrekeyRing::from_identity(&b, 0);
        let old = Recipient {
            device: b.device_id(),
            prekey_id: ring.current_id(),
            prekey: ring.public(ring.current_id()).unwrap(),
        };
        let chain = OutboundChain::new(room, 0, &mut rng);
        let p = seal_shares(&room, &a.device_id(), &chain.share(), &[old], &mut rng).unwrap();
        let upd = ring.rotate(1000, &mut rng);
        assert_eq!(upd.prekey_id, 2);
        assert_eq!(ring.public(2), Some(upd.prekey));
        assert_eq!(ring.prune(1000 + PREKEY_GRACE_MS - 1), 0);
        assert!(open_share(&room, &a.device_id(), &p[0], &b.device_id(), &ring).is_ok());
        assert_eq!(ring.prune(1000 + PREKEY_GRACE_MS), 1);
        assert_eq!(
            open_share(&room, &a.device_id(), &p[0], &b.device_id(), &ring),
            Err(KeyShareError::UnknownPrekey(1))
        );
        assert!(format!("{ring:?}").contains("redacted"));
    }

    #[test]
    fn big_rooms_split_into_several_events() {
        let mut rng = StdRng::seed_from_u64(3);
        let room = RoomId([4; 16]);
        let a = Identity::from_seed(&[1; 32]);
        let recips: Vec<_> = (0..200u8)
            .map(|i| {
                let id = Identity::from_seed(&[i; 32]);
                Recipient {
                    device: id.device_id(),
                    prekey_id: 1,
                    prekey: id.prekey().public(),
                }
            })
            .collect();
        let chain = OutboundChain::new(room, 0, &mut rng);
        let ps = seal_shares(&room, &a.device_id(), &chain.share(), &recips, &mut rng).unwrap();
        assert_eq!(ps.len(), 3);
        for p in &ps {
            assert!(p.to_bytes().len() <= crate::limits::MAX_PAYLOAD_BYTES);
        }
    }

    proptest! {
        #[test]
        fn payload_codecs_round_trip(seed in any::<u64>(), n in 0usize..4) {
            let mut rng = StdRng::seed_from_u64(seed);
            let room = RoomId([1; 16]);
            let a = Identity::from_seed(&[1; 32]);
            let recips: Vec<_> = (0..n as u8).map(|i| {
                let id = Identity::from_seed(&[i + 10; 32]);
                Recipient { device: id.device_id(), prekey_id: i as u32, prekey: id.prekey().public() }
            }).collect();
            let chain = OutboundChain::new(room, 0, &mut rng);
            for p in seal_shares(&room, &a.device_id(), &chain.share(), &recips, &mut rng).unwrap() {
                prop_assert_eq!(KeySharePayload::from_bytes(&p.to_bytes()).unwrap(), p);
            }
            let mut ring = PrekeyRing::from_identity(&a, seed);
            let upd = ring.rotate(seed.saturating_add(5), &mut rng);
            prop_assert_eq!(PrekeyUpdate::from_bytes(&upd.to_bytes()).unwrap(), upd);
            prop_assert_eq!(PrekeyRing::from_bytes(&ring.to_bytes()).unwrap(), ring);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = KeySharePayload::from_bytes(&bytes);
            let _ = PrekeyUpdate::from_bytes(&bytes);
            let _ = PrekeyRing::from_bytes(&bytes);
        }
    }
}
