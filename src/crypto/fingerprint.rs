//! Human-comparable safety numbers (`protocol-spec/identity.md`,
//! "Fingerprint").
//!
//! Two people compare a device's fingerprint in person (read aloud or side by
//! side) to be sure a contact card is genuine. It is 30 decimal digits in six
//! groups of five, derived from the device ID by iterated SHA-512 so that
//! grinding keys for a look-alike fingerprint costs 5,200 hashes per try.

use sha2::{Digest, Sha512};

use crate::crypto::domain;
use crate::crypto::keys::DeviceId;

/// SHA-512 iterations in the fingerprint derivation.
pub const FINGERPRINT_ITERATIONS: usize = 5200;

/// The fingerprint of `device`: `"12345 67890 12345 67890 12345 67890"`.
pub fn fingerprint(device: &DeviceId) -> String {
    let mut h: [u8; 64] = Sha512::new()
        .chain_update(domain::FINGERPRINT)
        .chain_update(device.as_bytes())
        .finalize()
        .into();
    for _ in 1..FINGERPRINT_ITERATIONS {
        h = Sha512::new()
            .chain_update(h)
            .chain_update(device.as_bytes())
            .finalize()
            .into();
    }
    h.chunks_exact(5)
        .take(6)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
            format!("{:05}", v % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}
