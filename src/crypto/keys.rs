//! Public keys as they travel: device IDs (ed25519) and key-agreement keys
//! (x25519), with the validation and text encoding of
//! `protocol-spec/identity.md`.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{Signature, VerifyingKey};
use thiserror::Error;

/// Why a public key or signature was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The bytes are not the canonical encoding of a curve point.
    #[error("public key is not a canonical curve point encoding")]
    NonCanonical,
    /// The point has small order (a "weak" key that forges signatures or
    /// forces a known shared secret).
    #[error("public key has small order")]
    SmallOrder,
    /// A signature did not verify under `verify_strict`.
    #[error("signature does not verify")]
    BadSignature,
    /// The text form of a key is malformed.
    #[error("malformed device ID text: {0}")]
    BadText(&'static str),
}

impl KeyError {
    /// Stable error-class name for test vectors.
    pub fn class(&self) -> &'static str {
        match self {
            KeyError::NonCanonical | KeyError::SmallOrder | KeyError::BadText(_) => "bad_key",
            KeyError::BadSignature => "bad_signature",
        }
    }
}

/// Prefix of the text form of a device ID.
pub const DEVICE_ID_PREFIX: &str = "mr1";

/// Text alphabet: RFC 4648 base32, lowercase, no padding, with the trailing
/// bits checked (so each key has exactly one text form).
#[allow(clippy::expect_used)] // invariant: a fixed 32-symbol alphabet is a valid specification
fn base32_lower() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.check_trailing_bits = true;
    spec.encoding()
        .expect("the lowercase base32 alphabet is a valid specification")
}

/// A device's public signing key: its identity on the mesh.
///
/// Construction always validates: the encoding is canonical and the point is
/// not of small order, so `verify_strict` can be used with it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId([u8; 32]);

impl DeviceId {
    /// Validates a 32-byte ed25519 public key.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        Self::from_bytes_with_key(bytes).map(|(id, _)| id)
    }

    /// Validates a 32-byte ed25519 public key and also returns it
    /// decompressed, so a caller that verifies right away (the event
    /// decoder) decompresses the point only once.
    ///
    /// Canonical means `y < p`: decompression reduces `y` modulo `p`, so
    /// that is checked on the bytes (no field inversion needed). The only
    /// other non-canonical encodings, `x = 0` with the sign bit set, have
    /// `y = ±1`, which are small-order points and rejected as such.
    pub fn from_bytes_with_key(bytes: &[u8; 32]) -> Result<(Self, VerifyingKey), KeyError> {
        if !y_is_canonical(bytes) {
            return Err(KeyError::NonCanonical);
        }
        let vk = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NonCanonical)?;
        if vk.is_weak() {
            return Err(KeyError::SmallOrder);
        }
        Ok((Self(*bytes), vk))
    }

    /// Wraps bytes that passed [`DeviceId::from_bytes_with_key`] before
    /// (the key cache).
    pub(crate) fn from_validated(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The ed25519 verifying key.
    #[allow(clippy::expect_used)] // invariant: a DeviceId is validated to decompress at construction
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey::from_bytes(&self.0)
            .expect("DeviceId is validated to decompress at construction")
    }

    /// Verifies `sig` over `domain || msg` with `verify_strict`.
    pub fn verify(&self, domain: &[u8], msg: &[u8], sig: &[u8; 64]) -> Result<(), KeyError> {
        let mut data = Vec::with_capacity(domain.len() + msg.len());
        data.extend_from_slice(domain);
        data.extend_from_slice(msg);
        self.verifying_key()
            .verify_strict(&data, &Signature::from_bytes(sig))
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DEVICE_ID_PREFIX}{}", base32_lower().encode(&self.0))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

impl FromStr for DeviceId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let body = s
            .strip_prefix(DEVICE_ID_PREFIX)
            .ok_or(KeyError::BadText("missing mr1 prefix"))?;
        let raw = base32_lower()
            .decode(body.as_bytes())
            .map_err(|_| KeyError::BadText("not lowercase base32"))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| KeyError::BadText("wrong length"))?;
        Self::from_bytes(&bytes)
    }
}

/// Whether the little-endian `y` in an Edwards point encoding (sign bit
/// ignored) is below `p = 2^255 - 19`.
fn y_is_canonical(bytes: &[u8; 32]) -> bool {
    // y >= p exactly when the top byte (sign bit cleared) is 0x7f, the 30
    // middle bytes are 0xff, and the lowest byte is at least 0xed.
    let top = bytes[31] & 0x7f;
    !(top == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed)
}

/// A public x25519 key-agreement key (long-term or prekey).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgreementKey([u8; 32]);

impl AgreementKey {
    /// Validates an x25519 public key: `u` must be canonical (`u < p`) and
    /// the point must not be of small order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let mont = MontgomeryPoint(*bytes);
        let edwards = mont.to_edwards(0).ok_or(KeyError::SmallOrder)?;
        if edwards.to_montgomery().to_bytes() != *bytes {
            return Err(KeyError::NonCanonical);
        }
        if edwards.is_small_order() {
            return Err(KeyError::SmallOrder);
        }
        Ok(Self(*bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// As an x25519-dalek public key.
    pub fn to_x25519(&self) -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(self.0)
    }
}

impl fmt::Debug for AgreementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgreementKey({})", base32_lower().encode(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_point_is_small_order() {
        let mut id = [0u8; 32];
        id[0] = 1;
        assert_eq!(DeviceId::from_bytes(&id), Err(KeyError::SmallOrder));
    }

    #[test]
    fn non_canonical_y_is_rejected() {
        // y = p + 1 (encodes the same point as y = 1), not canonical.
        let mut b = [0xffu8; 32];
        b[0] = 0xee;
        b[31] = 0x7f;
        assert!(DeviceId::from_bytes(&b).is_err());
    }

    #[test]
    fn byte_canonical_check_agrees_with_recompression() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        // Every y in [p - 3, 2^255) plus small values, with both sign bits.
        let mut cases = Vec::new();
        for low in 0u8..=255 {
            let mut b = [0xffu8; 32];
            b[0] = low;
            b[31] = 0x7f;
            cases.push(b);
            let mut s = [0u8; 32];
            s[0] = low;
            cases.push(s);
        }
        for mut b in cases.clone() {
            b[31] |= 0x80;
            cases.push(b);
        }
        for b in cases {
            let by_compress = CompressedEdwardsY(b)
                .decompress()
                .map(|p| p.compress().to_bytes() == b && !p.is_small_order());
            let ours = DeviceId::from_bytes(&b).is_ok();
            assert_eq!(ours, by_compress == Some(true), "{b:02x?}");
        }
    }

    #[test]
    fn x25519_zero_and_one_are_rejected() {
        assert!(AgreementKey::from_bytes(&[0u8; 32]).is_err());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(AgreementKey::from_bytes(&one).is_err());
    }
}
