//! Contact cards: how people exchange identities in the field
//! (`protocol-spec/identity.md`, "Contact cards").
//!
//! A card is a canonical CBOR array, signed by the device key, and carried as
//! text: `MRC1:` followed by RFC 4648 base32 (uppercase, unpadded). Uppercase
//! base32 and `:` are all in the QR alphanumeric set, so the text form makes a
//! compact QR code and survives being read aloud (no case, no 0/O or 1/l).
//!
//! ```text
//! card = [ version: 1, device_id: bstr(32), kx_key: bstr(32),
//!          kx_binding_sig: bstr(64), name: tstr, created_ms: uint,
//!          prekey_id: uint, prekey: bstr(32), ? flags: uint, card_sig: bstr(64) ]
//! card_sig = Ed25519(device, "meshrelay/v1/card\0" || cbor(every field but card_sig as an array))
//! ```
//!
//! `flags` is present only when not zero (so every card has one encoding);
//! bit 0 ([`CARD_FLAG_BRIDGE`]) says the device is a Matrix bridge
//! (`protocol-spec/bridge.md`), and no other bit is defined.

use thiserror::Error;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::crypto::domain;
use crate::crypto::identity::{Identity, kx_binding_message};
use crate::crypto::keys::{AgreementKey, DeviceId, KeyError};
use crate::limits::{CARD_FORMAT_VERSION, MAX_CARD_BYTES, MAX_NAME_BYTES};

/// Text prefix of a contact card.
pub const CARD_TEXT_PREFIX: &str = "MRC1:";

/// Number of fields in an encoded card without flags.
const CARD_FIELDS: usize = 9;
/// The card flag of a Matrix bridge device.
pub const CARD_FLAG_BRIDGE: u64 = 1;

/// Why a contact card was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CardError {
    /// The text is not `MRC1:` plus canonical uppercase base32.
    #[error("contact card text is malformed: {0}")]
    BadText(&'static str),
    /// The card is larger than `MAX_CARD_BYTES`.
    #[error("contact card is larger than {MAX_CARD_BYTES} bytes")]
    TooLarge,
    /// The CBOR inside is malformed or not canonical.
    #[error("contact card encoding: {0}")]
    Cbor(#[from] CborError),
    /// Unknown card format version.
    #[error("contact card has unknown format version {0}")]
    UnknownVersion(u64),
    /// A key in the card is invalid.
    #[error("contact card key: {0}")]
    Key(#[from] KeyError),
    /// The display name is too long.
    #[error("display name longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    /// The key-agreement binding signature does not verify.
    #[error("contact card key-agreement binding signature does not verify")]
    BadBinding,
    /// The card signature does not verify: forged or altered.
    #[error("contact card signature does not verify (forged or altered card)")]
    BadSignature,
}

impl CardError {
    /// Stable error-class name for test vectors.
    pub fn class(&self) -> &'static str {
        match self {
            CardError::BadText(_) => "bad_text",
            CardError::TooLarge => "oversize",
            CardError::Cbor(e) => e.class(),
            CardError::UnknownVersion(_) => "unknown_version",
            CardError::Key(e) => e.class(),
            CardError::NameTooLong => "schema",
            CardError::BadBinding | CardError::BadSignature => "bad_signature",
        }
    }
}

/// A verified contact card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactCard {
    /// The device's signing key (its identity).
    pub device_id: DeviceId,
    /// Long-term x25519 key-agreement key.
    pub kx_key: AgreementKey,
    /// Signature binding `kx_key` to `device_id`.
    pub kx_binding_sig: [u8; 64],
    /// Display name chosen by the device owner (not verified by anyone).
    pub name: String,
    /// When the card was made, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Identifier of the current prekey.
    pub prekey_id: u32,
    /// Current prekey that key shares are sealed to.
    pub prekey: AgreementKey,
    /// The device is a Matrix bridge (signed: flag [`CARD_FLAG_BRIDGE`]).
    pub bridge: bool,
    /// Signature over all the fields above.
    pub card_sig: [u8; 64],
}

fn base32_upper() -> data_encoding::Encoding {
    data_encoding::BASE32_NOPAD
}

impl ContactCard {
    /// Makes and signs the card of `identity`.
    pub fn create(identity: &Identity, name: &str, created_ms: u64) -> Result<Self, CardError> {
        let pk = identity.prekey();
        Self::create_with_prekey(identity, name, created_ms, pk.id, pk.public())
    }

    /// Makes and signs the card of `identity` publishing a rotated prekey
    /// (`protocol-spec/encryption.md`, "Prekey rotation").
    pub fn create_with_prekey(
        identity: &Identity,
        name: &str,
        created_ms: u64,
        prekey_id: u32,
        prekey: AgreementKey,
    ) -> Result<Self, CardError> {
        if name.len() > MAX_NAME_BYTES {
            return Err(CardError::NameTooLong);
        }
        let mut card = ContactCard {
            device_id: identity.device_id(),
            kx_key: identity.agreement_key(),
            kx_binding_sig: identity.kx_binding(),
            name: name.to_owned(),
            created_ms,
            prekey_id,
            prekey,
            bridge: false,
            card_sig: [0; 64],
        };
        card.card_sig = identity.sign(domain::CARD, &card.signed_bytes());
        Ok(card)
    }

    /// This card, flagged (or not) as a Matrix bridge's and signed again.
    pub fn with_bridge_flag(mut self, identity: &Identity, bridge: bool) -> Self {
        self.bridge = bridge;
        self.card_sig = identity.sign(domain::CARD, &self.signed_bytes());
        self
    }

    fn fields(&self) -> usize {
        CARD_FIELDS + usize::from(self.bridge)
    }

    fn write_unsigned(&self, w: &mut Writer) {
        w.bytes(self.device_id.as_bytes())
            .bytes(self.kx_key.as_bytes())
            .bytes(&self.kx_binding_sig)
            .text(&self.name)
            .u64(self.created_ms)
            .u64(self.prekey_id as u64)
            .bytes(self.prekey.as_bytes());
        if self.bridge {
            w.u64(CARD_FLAG_BRIDGE);
        }
    }

    /// The bytes the card signature covers (after the domain prefix).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.array(self.fields() - 1).u64(CARD_FORMAT_VERSION);
        self.write_unsigned(&mut w);
        w.into_bytes()
    }

    /// Canonical CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(320);
        w.array(self.fields()).u64(CARD_FORMAT_VERSION);
        self.write_unsigned(&mut w);
        w.bytes(&self.card_sig);
        w.into_bytes()
    }

    /// Decodes and verifies a card from canonical CBOR.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CardError> {
        if bytes.len() > MAX_CARD_BYTES {
            return Err(CardError::TooLarge);
        }
        cbor::validate(bytes, 1)?;
        let mut r = Reader::new(bytes);
        let n = r.array()?;
        let version = r.u64()?;
        if version != CARD_FORMAT_VERSION {
            return Err(CardError::UnknownVersion(version));
        }
        if n != CARD_FIELDS && n != CARD_FIELDS + 1 {
            return Err(CborError::WrongType {
                expected: "contact card array of 9 or 10",
            }
            .into());
        }
        let device_id = DeviceId::from_bytes(&r.byte_array("32-byte device key")?)?;
        let kx_key = AgreementKey::from_bytes(&r.byte_array("32-byte x25519 key")?)?;
        let kx_binding_sig = r.byte_array("64-byte signature")?;
        let name = r.text()?;
        if name.len() > MAX_NAME_BYTES {
            return Err(CardError::NameTooLong);
        }
        let created_ms = r.u64()?;
        let prekey_id = u32::try_from(r.u64()?).map_err(|_| CborError::WrongType {
            expected: "prekey id below 2^32",
        })?;
        let prekey = AgreementKey::from_bytes(&r.byte_array("32-byte prekey")?)?;
        // Flags are present only when set, and only known flags are.
        let bridge = n == CARD_FIELDS + 1;
        if bridge && r.u64()? != CARD_FLAG_BRIDGE {
            return Err(CborError::WrongType {
                expected: "card flags 1 (bridge)",
            }
            .into());
        }
        let card_sig = r.byte_array("64-byte signature")?;
        r.finish()?;
        let card = ContactCard {
            device_id,
            kx_key,
            kx_binding_sig,
            name: name.to_owned(),
            created_ms,
            prekey_id,
            prekey,
            bridge,
            card_sig,
        };
        card.device_id
            .verify(
                domain::KX_BINDING,
                &kx_binding_message(&card.device_id, &card.kx_key),
                &card.kx_binding_sig,
            )
            .map_err(|_| CardError::BadBinding)?;
        card.device_id
            .verify(domain::CARD, &card.signed_bytes(), &card.card_sig)
            .map_err(|_| CardError::BadSignature)?;
        Ok(card)
    }

    /// The text form: `MRC1:` + uppercase unpadded base32.
    pub fn to_text(&self) -> String {
        format!(
            "{CARD_TEXT_PREFIX}{}",
            base32_upper().encode(&self.to_cbor())
        )
    }

    /// Parses and verifies the text form. Whitespace is ignored and
    /// lowercase is accepted, so a card read aloud or re-typed still parses.
    pub fn from_text(text: &str) -> Result<Self, CardError> {
        let compact: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let body = compact
            .strip_prefix(CARD_TEXT_PREFIX)
            .ok_or(CardError::BadText("missing MRC1: prefix"))?;
        // Check the size before decoding so a huge paste allocates nothing.
        if body.len() > MAX_CARD_BYTES * 8 / 5 + 1 {
            return Err(CardError::TooLarge);
        }
        let bytes = base32_upper()
            .decode(body.as_bytes())
            .map_err(|_| CardError::BadText("not canonical base32"))?;
        Self::from_cbor(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_round_trips_through_text() {
        let id = Identity::from_seed(&[1; 32]);
        let card = ContactCard::create(&id, "Ana", 1_700_000_000_000).unwrap();
        let text = card.to_text();
        assert_eq!(ContactCard::from_text(&text).unwrap(), card);
        assert_eq!(ContactCard::from_text(&text.to_lowercase()).unwrap(), card);
    }

    #[test]
    fn the_bridge_flag_is_signed_and_canonical() {
        let id = Identity::from_seed(&[1; 32]);
        let plain = ContactCard::create(&id, "HQ", 1).unwrap();
        let bridge = plain.clone().with_bridge_flag(&id, true);
        let back = ContactCard::from_text(&bridge.to_text()).unwrap();
        assert!(back.bridge && !ContactCard::from_cbor(&plain.to_cbor()).unwrap().bridge);
        // Dropping the flag (or setting it) without the key breaks the signature.
        let mut stripped = bridge.clone();
        stripped.bridge = false;
        assert_eq!(
            ContactCard::from_cbor(&stripped.to_cbor()),
            Err(CardError::BadSignature)
        );
        // Flags 0 or unknown flags are not canonical.
        let mut w = Writer::new();
        w.array(CARD_FIELDS + 1).u64(CARD_FORMAT_VERSION);
        plain.write_unsigned(&mut w);
        w.u64(0).bytes(&plain.card_sig);
        assert!(ContactCard::from_cbor(&w.into_bytes()).is_err());
    }

    #[test]
    fn altered_name_is_rejected() {
        let id = Identity::from_seed(&[1; 32]);
        let mut card = ContactCard::create(&id, "Ana", 1).unwrap();
        card.name = "Eve".into();
        assert_eq!(
            ContactCard::from_cbor(&card.to_cbor()),
            Err(CardError::BadSignature)
        );
    }
}
