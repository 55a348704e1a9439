//! Rotating advertisement tokens (`protocol-spec/ble.md`, "Advertisement").
//!
//! A device advertises the meshrelay service UUID and one per-device value,
//! the [`AdvToken`]: six bytes derived with HKDF-SHA256 from a 32-byte
//! [`AdvSecret`] and the current rotation epoch
//! (`unix_ms / ADV_ROTATION_MS`). A passive listener without the secret
//! cannot link two epochs' tokens; within an epoch the token lets centrals
//! avoid a second link to a peer they already have.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an advertisement token.
pub const ADV_TOKEN_BYTES: usize = 6;

/// Length of the advertisement secret.
pub const ADV_SECRET_BYTES: usize = 32;

/// How long one token is advertised: 15 minutes, the default resolvable
/// private address lifetime of the Linux kernel, and well under the hour
/// the issue allows.
pub const ADV_ROTATION_MS: u64 = 15 * 60 * 1000;

/// After a failed advertisement registration, how long until the next
/// attempt (an epoch boundary that comes sooner still wins).
pub const ADV_RETRY_MS: u64 = 30_000;

/// HKDF salt of the token derivation.
pub const ADV_TOKEN_SALT: &[u8] = b"meshrelay/v1/ble-adv-token\0";

/// HKDF `info` prefix when deriving the advertisement secret from another
/// secret (the daemon uses the device's identity seed file).
pub const ADV_SECRET_INFO: &[u8] = b"meshrelay/v1/ble-adv-secret\0";

/// The per-device advertisement value of one epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdvToken(pub [u8; ADV_TOKEN_BYTES]);

impl fmt::Debug for AdvToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdvToken({})", data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl AdvToken {
    /// Parses a token from advertisement bytes (exactly
    /// [`ADV_TOKEN_BYTES`]); anything else is not a meshrelay token.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        <[u8; ADV_TOKEN_BYTES]>::try_from(b).ok().map(AdvToken)
    }
}

/// The secret tokens are derived from. Redacted in `Debug`, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AdvSecret([u8; ADV_SECRET_BYTES]);

impl fmt::Debug for AdvSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdvSecret(<redacted>)")
    }
}

impl AdvSecret {
    /// A secret from raw bytes.
    pub fn from_bytes(bytes: [u8; ADV_SECRET_BYTES]) -> Self {
        Self(bytes)
    }

    /// A secret derived from other key material (HKDF-SHA256, `info` =
    /// [`ADV_SECRET_INFO`]), so the daemon need not store another file.
    pub fn derive(ikm: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(None, ikm);
        let mut out = [0u8; ADV_SECRET_BYTES];
        // 32 bytes is far below HKDF-SHA256's output limit.
        let _ = hk.expand(ADV_SECRET_INFO, &mut out);
        Self(out)
    }

    /// A fresh random secret (tokens then change at every start, too).
    pub fn random() -> Self {
        let mut out = [0u8; ADV_SECRET_BYTES];
        rand::fill(&mut out);
        Self(out)
    }

    /// The token of `epoch`.
    pub fn token(&self, epoch: u64) -> AdvToken {
        let hk = Hkdf::<Sha256>::new(Some(ADV_TOKEN_SALT), &self.0);
        let mut out = [0u8; ADV_TOKEN_BYTES];
        let _ = hk.expand(&epoch.to_be_bytes(), &mut out);
        AdvToken(out)
    }

    /// The token advertised at `unix_ms`.
    pub fn token_at(&self, unix_ms: u64) -> AdvToken {
        self.token(epoch_of(unix_ms))
    }
}

/// The rotation epoch of a wall-clock time.
pub fn epoch_of(unix_ms: u64) -> u64 {
    unix_ms / ADV_ROTATION_MS
}

/// When the token in force at `unix_ms` is replaced.
pub fn next_rotation_ms(unix_ms: u64) -> u64 {
    (epoch_of(unix_ms) + 1).saturating_mul(ADV_ROTATION_MS)
}

/// When the running adapter (re-)registers its advertisement: at start, at
/// every epoch boundary (never on a free-running timer that could straddle
/// one), and [`ADV_RETRY_MS`] after a failed registration.
#[derive(Debug, Clone, Default)]
pub struct AdvSchedule {
    next_ms: u64,
}

impl AdvSchedule {
    /// The token to register at `unix_ms`, if a registration is due.
    pub fn due(&self, secret: &AdvSecret, unix_ms: u64) -> Option<AdvToken> {
        (unix_ms >= self.next_ms).then(|| secret.token_at(unix_ms))
    }

    /// The registration of the token due at `due_ms` succeeded (`ok`) or
    /// failed. The next one is due at the end of `due_ms`'s epoch (so a
    /// registration that completes after the boundary is redone at once).
    pub fn registered(&mut self, due_ms: u64, ok: bool) {
        let boundary = next_rotation_ms(due_ms);
        self.next_ms = if ok {
            boundary
        } else {
            due_ms.saturating_add(ADV_RETRY_MS).min(boundary)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rotate_and_differ_between_devices() {
        let a = AdvSecret::from_bytes([1; 32]);
        let b = AdvSecret::from_bytes([2; 32]);
        assert_eq!(a.token(7), a.token(7));
        assert_ne!(a.token(7), a.token(8));
        assert_ne!(a.token(7), b.token(7));
        let t = 10 * ADV_ROTATION_MS + 5;
        assert_eq!(a.token_at(t), a.token(10));
        assert_eq!(next_rotation_ms(t), 11 * ADV_ROTATION_MS);
        assert_eq!(format!("{a:?}"), "AdvSecret(<redacted>)");
        assert_eq!(AdvToken::from_bytes(&[0; 5]), None);
    }
}
