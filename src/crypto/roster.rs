//! The sealed roster (`protocol-spec/encryption.md`, "Sealed roster").
//!
//! A room's members learn each other's names, prekeys and card flags from
//! the contact cards in `create` and `invite` events. Relays and the
//! homeserver carry those events and verify their signatures, so the cards
//! travel **sealed** under the room's *roster secret*, a 32-byte random
//! value drawn by the room's creator:
//!
//! ```text
//! card_key    = HKDF-SHA256(salt = room(16), ikm = roster_secret, info = "meshrelay/v2/roster-card\0")[0..32]
//! aad         = "meshrelay/v2/roster-card\0" || room(16) || device(32)
//! sealed_card = nonce(24) || XChaCha20-Poly1305(card_key, nonce, pad_to(cbor(card), 320 or 513), aad)
//! ```
//!
//! `device` is the device the event creates or invites, in clear in the
//! event; a card that opens must be that device's. `pad_to` pads a card
//! (the `0x80` marker and zeros of `crate::crypto::padding`) to 320 bytes,
//! which holds every card of the current format whatever its name, so a
//! relay learns nothing of a name's length; 513 is kept for larger cards of
//! later formats.
//!
//! An invite also carries the room's roster secrets (its own, then the
//! rotations, see below) sealed to the invitee's prekey (the key-share HPKE
//! suite, `crate::crypto::key_share`), so a new member reads the whole
//! roster from its invite:
//!
//! ```text
//! info          = "meshrelay/v2/roster-secret\0" || room(16) || inviter(32) || invitee(32) || be32(prekey_id)
//! (enc, ct)     = SealBase(pk = invitee prekey, info, aad = room(16), secret_0 || secret_1 || ...)
//! sealed_secret = [prekey_id: uint, enc: bstr(32), ct: bstr(32 k + 16)]   ; 1 <= k <= MAX_ROSTER_SECRETS
//! ```
//!
//! The list is accepted only if its first secret opens the room's `create`
//! card: a member (even an admin) cannot hand an invitee a room secret of
//! its own making without the creator's card failing to open.
//!
//! **Rotation.** When an admin starts a new sender chain because a member
//! was removed or left, it first draws a new roster secret; every key share
//! an admin sends carries its newest secret (`ChainShare::roster`), and new
//! invites are sealed under it. A removed member gets no share of the new
//! chain, so it cannot read the cards of members invited afterwards.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::cbor::{CborError, Reader, Writer};
use crate::crypto::card::{CardError, ContactCard};
use crate::crypto::domain;
use crate::crypto::key_share::{KeyShareError, PrekeyRing, Recipient, hpke_open, hpke_seal};
use crate::crypto::keys::DeviceId;
use crate::crypto::padding::{self, PaddingError};
use crate::event::RoomId;
use crate::limits::MAX_CARD_BYTES;

/// Bytes of a roster secret.
pub const ROSTER_SECRET_BYTES: usize = 32;
/// Most roster secrets a device keeps for one room: the room's own and
/// the newest rotations (one per removal an admin rotates for). An invite
/// seals all of them to the invitee.
pub const MAX_ROSTER_SECRETS: usize = 32;
/// Bytes of a sealed card's nonce.
const CARD_NONCE_BYTES: usize = 24;
/// Bytes of the AEAD tag.
const TAG_BYTES: usize = 16;
/// The sizes a card is padded to before sealing: the first holds every
/// card of the current format (the largest, with a 64-byte name, every
/// integer at its widest and the bridge flag, is 318 bytes; tested); the
/// second any card up to `MAX_CARD_BYTES`, for later card formats.
pub const CARD_PADDED_SIZES: [usize; 2] = [320, MAX_CARD_BYTES + 1];
/// The sizes of a sealed card: nonce, a padded size, tag.
pub const SEALED_CARD_SIZES: [usize; 2] = [
    CARD_NONCE_BYTES + CARD_PADDED_SIZES[0] + TAG_BYTES,
    CARD_NONCE_BYTES + CARD_PADDED_SIZES[1] + TAG_BYTES,
];
/// Largest sealed roster secrets' ciphertext: every secret kept, and the tag.
pub const MAX_SEALED_SECRETS_CT_BYTES: usize = MAX_ROSTER_SECRETS * ROSTER_SECRET_BYTES + TAG_BYTES;

/// Why a card or a roster secret could not be sealed or opened.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RosterError {
    /// Malformed encoding.
    #[error("encoding: {0}")]
    Cbor(#[from] CborError),
    /// A sealed card of another length than [`SEALED_CARD_SIZES`].
    #[error("sealed card of {0} bytes (sealed cards are 360 or 553 bytes)")]
    BadLength(usize),
    /// The card does not open under this roster secret (another room's
    /// secret, a wrong secret, or tampering).
    #[error("sealed card does not open")]
    Open,
    /// Sealing failed.
    #[error("sealing failed")]
    Seal,
    /// Bad padding inside the sealed card.
    #[error("card padding: {0}")]
    Padding(#[from] PaddingError),
    /// The opened card is invalid (its own signature fails).
    #[error("sealed card: {0}")]
    Card(#[from] CardError),
    /// The opened card is another device's than the event names.
    #[error("the sealed card is not the named device's")]
    WrongDevice,
    /// The sealed roster secret does not open.
    #[error("roster secret: {0}")]
    Secret(#[from] KeyShareError),
}

/// A room's roster secret. Secret: zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RosterSecret(Zeroizing<[u8; ROSTER_SECRET_BYTES]>);

impl fmt::Debug for RosterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RosterSecret(<redacted>)")
    }
}

impl RosterSecret {
    /// A fresh random secret (the creator draws it once per room).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut s = Zeroizing::new([0u8; ROSTER_SECRET_BYTES]);
        rng.fill_bytes(s.as_mut());
        Self(s)
    }

    /// From its bytes (persisted room keys, an opened invite, vectors).
    pub fn from_bytes(bytes: [u8; ROSTER_SECRET_BYTES]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Its bytes, to persist.
    pub fn as_bytes(&self) -> &[u8; ROSTER_SECRET_BYTES] {
        &self.0
    }

    fn card_key(&self, room: &RoomId) -> Zeroizing<[u8; 32]> {
        let mut k = Zeroizing::new([0u8; 32]);
        // A 32-byte output is always within HKDF-SHA256's limit.
        let _ = Hkdf::<Sha256>::new(Some(room.as_bytes()), self.0.as_ref())
            .expand(domain::ROSTER_CARD, k.as_mut());
        k
    }
}

fn card_aad(room: &RoomId, device: &DeviceId) -> Vec<u8> {
    let mut v = Vec::with_capacity(domain::ROSTER_CARD.len() + 48);
    v.extend_from_slice(domain::ROSTER_CARD);
    v.extend_from_slice(room.as_bytes());
    v.extend_from_slice(device.as_bytes());
    v
}

/// A contact card sealed under a room's roster secret: opaque to everyone
/// without the secret. Its length is checked when it is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCard(Vec<u8>);

impl SealedCard {
    /// Checks the length (before anything else is done with it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RosterError> {
        if !SEALED_CARD_SIZES.contains(&bytes.len()) {
            return Err(RosterError::BadLength(bytes.len()));
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The bytes in the event.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Seals `card` (the card of `device`, which the event names).
    pub fn seal<R: CryptoRng + ?Sized>(
        secret: &RosterSecret,
        room: &RoomId,
        card: &ContactCard,
        rng: &mut R,
    ) -> Result<Self, RosterError> {
        let cbor = card.to_cbor();
        let size = CARD_PADDED_SIZES
            .into_iter()
            .find(|s| *s > cbor.len())
            .ok_or(RosterError::Padding(PaddingError::TooLong(cbor.len())))?;
        let padded = Zeroizing::new(padding::pad_to(&cbor, size)?);
        let mut nonce = [0u8; CARD_NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        let ct = XChaCha20Poly1305::new(&(*secret.card_key(room)).into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &padded,
                    aad: &card_aad(room, &card.device_id),
                },
            )
            .map_err(|_| RosterError::Seal)?;
        let mut out = Vec::with_capacity(CARD_NONCE_BYTES + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Self::from_bytes(&out)
    }

    /// Opens the card of `device` and verifies it.
    pub fn open(
        &self,
        secret: &RosterSecret,
        room: &RoomId,
        device: &DeviceId,
    ) -> Result<ContactCard, RosterError> {
        let (nonce, ct) = self.0.split_at(CARD_NONCE_BYTES);
        let mut n = [0u8; CARD_NONCE_BYTES];
        n.copy_from_slice(nonce);
        let padded = Zeroizing::new(
            XChaCha20Poly1305::new(&(*secret.card_key(room)).into())
                .decrypt(
                    &XNonce::from(n),
                    Payload {
                        msg: ct,
                        aad: &card_aad(room, device),
                    },
                )
                .map_err(|_| RosterError::Open)?,
        );
        let card = ContactCard::from_cbor(padding::unpad_fixed(&padded, ct.len() - TAG_BYTES)?)?;
        if card.device_id != *device {
            return Err(RosterError::WrongDevice);
        }
        Ok(card)
    }
}

/// A room's roster secrets (the room's own first, then its rotations),
/// sealed to an invitee's prekey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The invitee's prekey it is sealed to.
    pub prekey_id: u32,
    /// HPKE encapsulated key.
    pub enc: [u8; 32],
    /// HPKE ciphertext of the secrets, concatenated: 32 bytes each, then
    /// the tag.
    pub ct: Vec<u8>,
}

fn secret_info(room: &RoomId, inviter: &DeviceId, invitee: &DeviceId, prekey_id: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(domain::ROSTER_SECRET_INFO.len() + 84);
    v.extend_from_slice(domain::ROSTER_SECRET_INFO);
    v.extend_from_slice(room.as_bytes());
    v.extend_from_slice(inviter.as_bytes());
    v.extend_from_slice(invitee.as_bytes());
    v.extend_from_slice(&prekey_id.to_be_bytes());
    v
}

/// Whether `len` is the ciphertext length of 1 to [`MAX_ROSTER_SECRETS`]
/// secrets.
fn secrets_ct_len_ok(len: usize) -> bool {
    len > TAG_BYTES
        && len <= MAX_SEALED_SECRETS_CT_BYTES
        && (len - TAG_BYTES).is_multiple_of(ROSTER_SECRET_BYTES)
}

impl SealedSecret {
    /// Seals `secrets` (1 to [`MAX_ROSTER_SECRETS`], the room's own first)
    /// to the invitee `to`, for an invite signed by `inviter`.
    pub fn seal<R: CryptoRng + ?Sized>(
        secrets: &[RosterSecret],
        room: &RoomId,
        inviter: &DeviceId,
        to: &Recipient,
        rng: &mut R,
    ) -> Result<Self, RosterError> {
        if secrets.is_empty() || secrets.len() > MAX_ROSTER_SECRETS {
            return Err(RosterError::Seal);
        }
        let mut plain = Zeroizing::new(Vec::with_capacity(secrets.len() * ROSTER_SECRET_BYTES));
        for s in secrets {
            plain.extend_from_slice(s.as_bytes());
        }
        let (enc, ct) = hpke_seal(
            &to.prekey,
            &secret_info(room, inviter, &to.device, to.prekey_id),
            room.as_bytes(),
            &plain,
            rng,
        )?;
        Ok(Self {
            prekey_id: to.prekey_id,
            enc,
            ct,
        })
    }

    /// Opens the secrets sealed to this device (`me`) by `inviter`.
    pub fn open(
        &self,
        room: &RoomId,
        inviter: &DeviceId,
        me: &DeviceId,
        prekeys: &PrekeyRing,
    ) -> Result<Vec<RosterSecret>, RosterError> {
        let pt = hpke_open(
            prekeys,
            self.prekey_id,
            &self.enc,
            &secret_info(room, inviter, me, self.prekey_id),
            room.as_bytes(),
            &self.ct,
        )?;
        if pt.is_empty() || !pt.len().is_multiple_of(ROSTER_SECRET_BYTES) {
            return Err(RosterError::Secret(KeyShareError::Open));
        }
        Ok(pt
            .chunks_exact(ROSTER_SECRET_BYTES)
            .map(|c| {
                let mut b = [0u8; ROSTER_SECRET_BYTES];
                b.copy_from_slice(c);
                RosterSecret::from_bytes(b)
            })
            .collect())
    }

    /// Writes `[prekey_id, enc, ct]`.
    pub fn write(&self, w: &mut Writer) {
        w.array(3)
            .u64(self.prekey_id as u64)
            .bytes(&self.enc)
            .bytes(&self.ct);
    }

    /// Reads what [`SealedSecret::write`] wrote (lengths checked).
    pub fn read(r: &mut Reader<'_>) -> Result<Self, CborError> {
        r.array_of(3, "sealed roster secrets array of 3")?;
        let prekey_id = u32::try_from(r.u64()?).map_err(|_| CborError::WrongType {
            expected: "prekey id below 2^32",
        })?;
        let enc = r.byte_array("32-byte encapsulated key")?;
        let ct = r.bytes()?;
        if !secrets_ct_len_ok(ct.len()) {
            return Err(CborError::WrongType {
                expected: "1 to MAX_ROSTER_SECRETS sealed roster secrets",
            });
        }
        Ok(Self {
            prekey_id,
            enc,
            ct: ct.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn room() -> RoomId {
        RoomId([9; 16])
    }

    #[test]
    fn a_card_opens_only_with_its_secret_room_and_device() {
        let mut rng = StdRng::seed_from_u64(1);
        let ana = Identity::from_seed(&[1; 32]);
        let card = ContactCard::create(&ana, "Ana", 1).unwrap();
        let secret = RosterSecret::generate(&mut rng);
        let sealed = SealedCard::seal(&secret, &room(), &card, &mut rng).unwrap();
        assert_eq!(
            sealed.open(&secret, &room(), &ana.device_id()).unwrap(),
            card
        );
        // The name is nowhere in the bytes a relay sees.
        assert!(!sealed.as_bytes().windows(3).any(|w| w == b"Ana"));
        let other = RosterSecret::generate(&mut rng);
        assert_eq!(
            sealed.open(&other, &room(), &ana.device_id()),
            Err(RosterError::Open)
        );
        assert_eq!(
            sealed.open(&secret, &RoomId([8; 16]), &ana.device_id()),
            Err(RosterError::Open)
        );
        let eve = Identity::from_seed(&[2; 32]).device_id();
        assert_eq!(sealed.open(&secret, &room(), &eve), Err(RosterError::Open));
        let mut bytes = sealed.as_bytes().to_vec();
        bytes[30] ^= 1;
        let tampered = SealedCard::from_bytes(&bytes).unwrap();
        assert_eq!(
            tampered.open(&secret, &room(), &ana.device_id()),
            Err(RosterError::Open)
        );
    }

    #[test]
    fn names_of_any_length_seal_to_the_same_bucket() {
        let mut rng = StdRng::seed_from_u64(2);
        let secret = RosterSecret::generate(&mut rng);
        let id = Identity::from_seed(&[3; 32]);
        let mut len = |name: &str| {
            let card = ContactCard::create(&id, name, 1).unwrap();
            SealedCard::seal(&secret, &room(), &card, &mut rng)
                .unwrap()
                .as_bytes()
                .len()
        };
        let short = len("A");
        assert_eq!(short, len("Ana Lucia Fernández"));
        let longest = "n".repeat(crate::limits::MAX_NAME_BYTES);
        assert_eq!(short, len(&longest));
        assert_eq!(short, SEALED_CARD_SIZES[0]);
    }

    #[test]
    fn the_largest_card_of_this_format_fits_the_first_size() {
        let id = Identity::from_seed(&[6; 32]);
        let ring = PrekeyRing::from_identity(&id, 0);
        let prekey = ring.public(ring.current_id()).unwrap();
        let name = "\u{10348}".repeat(crate::limits::MAX_NAME_BYTES / 4);
        let card = ContactCard::create_with_prekey(&id, &name, u64::MAX, u32::MAX, prekey)
            .unwrap()
            .with_bridge_flag(&id, true);
        assert_eq!(card.to_cbor().len(), 317);
        assert!(card.to_cbor().len() < CARD_PADDED_SIZES[0]);
    }

    #[test]
    fn sealed_card_lengths_are_checked_first() {
        for size in SEALED_CARD_SIZES {
            assert_eq!(
                SealedCard::from_bytes(&vec![0; size - 1]),
                Err(RosterError::BadLength(size - 1))
            );
            assert!(SealedCard::from_bytes(&vec![0; size + 1]).is_err());
        }
        let junk = SealedCard::from_bytes(&[0; SEALED_CARD_SIZES[0]]).unwrap();
        let secret = RosterSecret::from_bytes([1; 32]);
        let device = Identity::from_seed(&[4; 32]).device_id();
        assert!(junk.open(&secret, &room(), &device).is_err());
    }

    #[test]
    fn the_secret_opens_only_for_its_invitee() {
        let mut rng = StdRng::seed_from_u64(3);
        let ana = Identity::from_seed(&[1; 32]);
        let bo = Identity::from_seed(&[2; 32]);
        let ring = PrekeyRing::from_identity(&bo, 0);
        let id = ring.current_id();
        let to = Recipient {
            device: bo.device_id(),
            prekey_id: id,
            prekey: ring.public(id).unwrap(),
        };
        let secret = RosterSecret::generate(&mut rng);
        let rotated = RosterSecret::generate(&mut rng);
        let both = [secret.clone(), rotated];
        let sealed = SealedSecret::seal(&both, &room(), &ana.device_id(), &to, &mut rng).unwrap();
        let opened = sealed
            .open(&room(), &ana.device_id(), &bo.device_id(), &ring)
            .unwrap();
        assert_eq!(opened, both);
        assert_eq!(sealed.ct.len(), 2 * ROSTER_SECRET_BYTES + TAG_BYTES);
        assert!(SealedSecret::seal(&[], &room(), &ana.device_id(), &to, &mut rng).is_err());
        // Bound to the inviter, the invitee and the room.
        let eve = Identity::from_seed(&[5; 32]).device_id();
        assert!(sealed.open(&room(), &eve, &bo.device_id(), &ring).is_err());
        assert!(
            sealed
                .open(&RoomId([1; 16]), &ana.device_id(), &bo.device_id(), &ring)
                .is_err()
        );
        let mut w = Writer::new();
        sealed.write(&mut w);
        let bytes = w.into_bytes();
        assert_eq!(
            SealedSecret::read(&mut Reader::new(&bytes)).unwrap(),
            sealed
        );
        assert_eq!(format!("{secret:?}"), "RosterSecret(<redacted>)");
    }
}
