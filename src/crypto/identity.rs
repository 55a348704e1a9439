//! A device's secret identity: its ed25519 signing key, its long-term x25519
//! key-agreement key, and its current prekey (`protocol-spec/identity.md`).
//!
//! Secrets never leave this type except through [`Identity::to_secret_bytes`],
//! which the storage layer writes to a 0600 file. `Debug` is redacted and every
//! secret is zeroized on drop.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use rand_core::CryptoRng;
use thiserror::Error;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::cbor::{self, CborError, Reader, Writer};
use crate::crypto::domain;
use crate::crypto::keys::{AgreementKey, DeviceId};

/// Version of the on-disk secret-key file format.
pub const SECRET_FILE_VERSION: u64 = 1;

/// Why a stored identity could not be loaded.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// The file is not valid canonical CBOR.
    #[error("identity file is malformed: {0}")]
    Cbor(#[from] CborError),
    /// The file was written by an unknown (older, unreleased) format version.
    #[error("identity file has unknown format version {0}")]
    UnknownVersion(u64),
    /// The file was written by a newer meshrelay (a downgrade).
    #[error(
        "identity file was written by a newer meshrelay (format version {0}; this build reads up to {SECRET_FILE_VERSION}); upgrade meshrelay again (downgrades are refused)"
    )]
    TooNew(u64),
    /// A key inside the file is invalid.
    #[error("identity file holds an invalid key")]
    BadKey,
}

impl IdentityError {
    /// Whether the file was written by a newer meshrelay (a downgrade).
    pub fn is_too_new(&self) -> bool {
        matches!(self, IdentityError::TooNew(_))
    }
}

/// A prekey: a rotating x25519 key pair that key shares are sealed to.
pub struct Prekey {
    /// Sequential identifier, published in the contact card.
    pub id: u32,
    secret: StaticSecret,
}

impl Prekey {
    /// Generates prekey `id`.
    pub fn generate<R: CryptoRng + ?Sized>(id: u32, rng: &mut R) -> Self {
        Self {
            id,
            secret: StaticSecret::random_from_rng(rng),
        }
    }

    /// The public half.
    #[allow(clippy::expect_used)] // invariant: x25519 public keys of clamped secrets have large order
    pub fn public(&self) -> AgreementKey {
        AgreementKey::from_bytes(x25519_dalek::PublicKey::from(&self.secret).as_bytes())
            .expect("x25519 public keys of clamped secrets have large order")
    }

    /// The secret half.
    pub fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for Prekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prekey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A device identity with its secrets.
pub struct Identity {
    signing: SigningKey,
    kx: StaticSecret,
    prekey: Prekey,
    device_id: DeviceId,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("device_id", &self.device_id)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// Creates a new identity from `rng` (the OS RNG in production, a seeded
    /// one in tests and the simulator).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let signing = SigningKey::generate(rng);
        let kx = StaticSecret::random_from_rng(rng);
        let prekey = Prekey::generate(1, rng);
        Self::from_parts(signing, kx, prekey)
    }

    /// Derives an identity deterministically from a 32-byte seed, for test
    /// vectors and the simulator (`protocol-spec/identity.md`, "Seeded
    /// identities"). Never use this for real devices.
    #[allow(clippy::expect_used)] // invariant: 32 bytes is a valid HKDF-SHA256 output length
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let derive = |label: &[u8]| -> Zeroizing<[u8; 32]> {
            let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"meshrelay/v1/seeded-identity"), seed);
            let mut out = Zeroizing::new([0u8; 32]);
            hk.expand(label, out.as_mut())
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            out
        };
        let signing = SigningKey::from_bytes(&derive(b"ed25519"));
        let kx = StaticSecret::from(*derive(b"x25519"));
        let prekey = Prekey {
            id: 1,
            secret: StaticSecret::from(*derive(b"prekey-1")),
        };
        Self::from_parts(signing, kx, prekey)
    }

    #[allow(clippy::expect_used)] // invariant: a public key derived from a secret scalar is canonical and of large order
    fn from_parts(signing: SigningKey, kx: StaticSecret, prekey: Prekey) -> Self {
        let device_id = DeviceId::from_bytes(signing.verifying_key().as_bytes())
            .expect("public keys derived from secret scalars are canonical and of large order");
        Self {
            signing,
            kx,
            prekey,
            device_id,
        }
    }

    /// The public device ID.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The long-term key-agreement public key.
    #[allow(clippy::expect_used)] // invariant: x25519 public keys of clamped secrets have large order
    pub fn agreement_key(&self) -> AgreementKey {
        AgreementKey::from_bytes(x25519_dalek::PublicKey::from(&self.kx).as_bytes())
            .expect("x25519 public keys of clamped secrets have large order")
    }

    /// The long-term key-agreement secret.
    pub fn agreement_secret(&self) -> &StaticSecret {
        &self.kx
    }

    /// The current prekey.
    pub fn prekey(&self) -> &Prekey {
        &self.prekey
    }

    /// Replaces the current prekey (rotation); the caller keeps the old one
    /// for its grace period.
    pub fn set_prekey(&mut self, prekey: Prekey) -> Prekey {
        std::mem::replace(&mut self.prekey, prekey)
    }

    /// Signs `domain || msg`.
    pub fn sign(&self, domain: &[u8], msg: &[u8]) -> [u8; 64] {
        let mut data = Vec::with_capacity(domain.len() + msg.len());
        data.extend_from_slice(domain);
        data.extend_from_slice(msg);
        self.signing.sign(&data).to_bytes()
    }

    /// The signature binding the long-term x25519 key to the device ID.
    pub fn kx_binding(&self) -> [u8; 64] {
        self.sign(
            domain::KX_BINDING,
            &kx_binding_message(&self.device_id, &self.agreement_key()),
        )
    }

    /// Serializes the secrets for the 0600 identity file.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(128);
        w.array(5)
            .u64(SECRET_FILE_VERSION)
            .bytes(self.signing.as_bytes())
            .bytes(&self.kx.to_bytes())
            .u64(self.prekey.id as u64)
            .bytes(&self.prekey.secret.to_bytes());
        Zeroizing::new(w.into_bytes())
    }

    /// Parses the identity file written by [`Identity::to_secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        cbor::validate(bytes, 2)?;
        let mut r = Reader::new(bytes);
        // The version first: a newer format may have another shape.
        let len = r.array()?;
        let version = r.u64()?;
        if version > SECRET_FILE_VERSION {
            return Err(IdentityError::TooNew(version));
        }
        if version != SECRET_FILE_VERSION {
            return Err(IdentityError::UnknownVersion(version));
        }
        if len != 5 {
            return Err(CborError::WrongType {
                expected: "identity array of 5",
            }
            .into());
        }
        let mut sk: [u8; 32] = r.byte_array("32-byte signing key")?;
        let mut kx: [u8; 32] = r.byte_array("32-byte x25519 key")?;
        let prekey_id = u32::try_from(r.u64()?).map_err(|_| IdentityError::BadKey)?;
        let mut pk: [u8; 32] = r.byte_array("32-byte prekey")?;
        r.finish()?;
        let id = Self::from_parts(
            SigningKey::from_bytes(&sk),
            StaticSecret::from(kx),
            Prekey {
                id: prekey_id,
                secret: StaticSecret::from(pk),
            },
        );
        sk.zeroize();
        kx.zeroize();
        pk.zeroize();
        Ok(id)
    }
}

/// The message signed by the key-agreement binding signature.
pub fn kx_binding_message(device: &DeviceId, kx: &AgreementKey) -> [u8; 64] {
    let mut m = [0u8; 64];
    m[..32].copy_from_slice(device.as_bytes());
    m[32..].copy_from_slice(kx.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let id = Identity::from_seed(&[7; 32]);
        let s = format!("{id:?}");
        assert!(s.contains("redacted"));
        let secret_hex: String = id
            .signing
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!s.contains(&secret_hex));
    }

    #[test]
    fn secret_bytes_round_trip() {
        let id = Identity::from_seed(&[9; 32]);
        let back = Identity::from_secret_bytes(&id.to_secret_bytes()).unwrap();
        assert_eq!(back.device_id(), id.device_id());
        assert_eq!(back.agreement_key(), id.agreement_key());
        assert_eq!(back.prekey().public(), id.prekey().public());
    }
}
