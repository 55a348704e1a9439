//! Identity and key material: device keys, contact cards, fingerprints and
//! the domain-separation prefixes of every signature
//! (`protocol-spec/identity.md`).

pub mod card;
pub mod domain;
pub mod fingerprint;
pub mod identity;
pub mod key_cache;
pub mod key_share;
pub mod keys;
pub mod padding;
pub mod roster;
pub mod sender_chain;

pub use card::{CardError, ContactCard};
pub use fingerprint::fingerprint;
pub use identity::{Identity, Prekey};
pub use key_cache::KeyCache;
pub use keys::{AgreementKey, DeviceId, KeyError};
