//! Entry points of the decoder fuzz targets in `fuzz/fuzz_targets/` that
//! have no home module of their own (`fuzz/README.md`), and of the corpus
//! replay test (`tests/it/fuzz_corpus.rs`). Each feeds arbitrary bytes to
//! one decoder, checks that an accepted value decodes again to itself from
//! its own encoding, and returns whether the input was accepted.
//!
//! # Panics
//!
//! Only if such an invariant is broken, which is what the fuzzer looks for.
//! Rejected inputs never panic.

use crate::bundle;
use crate::crypto::ContactCard;
use crate::crypto::key_share::{KeySharePayload, PrekeyUpdate};
use crate::crypto::sender_chain::ChainShare;
use crate::room::attachment::ChunkBody;
use crate::room::{Content, Membership, RoomKeys};
use crate::transport::homeserver::bundle as hs_bundle;

/// A fixed receiver clock for the bundle target (2025-06-15).
const FUZZ_NOW_MS: u64 = 1_750_000_000_000;

/// Sneakernet bundles (`src/bundle.rs`): parse, then verify and import
/// with nothing held.
pub fn bundle(data: &[u8]) -> bool {
    let parsed = bundle::parse(data);
    let imported = bundle::import(data, FUZZ_NOW_MS, None, |_| false);
    assert_eq!(
        parsed.is_ok(),
        imported.is_ok(),
        "parse and import disagree"
    );
    if let Ok(r) = &imported {
        let events = parsed.map(|(_, e)| e.len()).unwrap_or(0);
        assert!(r.imported.len() + r.rejected.len() + r.duplicates <= events);
    }
    imported.is_ok()
}

/// Membership content (`src/room/membership.rs`), message content
/// (`src/room/content.rs`) and an attachment chunk's framing
/// (`src/room/attachment.rs`): the same bytes are tried as each.
pub fn membership_content(data: &[u8]) -> bool {
    let k = ChunkBody::from_bytes(data);
    if let Ok(k) = &k {
        assert_eq!(ChunkBody::from_bytes(&k.to_bytes()).as_ref(), Ok(k));
    }
    let m = Membership::from_bytes(data);
    if let Ok(m) = &m {
        assert_eq!(Membership::from_bytes(&m.to_bytes()).as_ref(), Ok(m));
    }
    let c = Content::from_bytes(data);
    if let Ok(c) = &c {
        assert_eq!(Content::from_bytes(&c.to_bytes()).as_ref(), Ok(c));
    }
    m.is_ok() || c.is_ok() || k.is_ok()
}

/// Key shares (`src/crypto/key_share.rs`): the sealed payload, a prekey
/// update and the chain share inside a sealed box.
pub fn key_share(data: &[u8]) -> bool {
    let p = KeySharePayload::from_bytes(data);
    if let Ok(p) = &p {
        assert_eq!(KeySharePayload::from_bytes(&p.to_bytes()).as_ref(), Ok(p));
    }
    let u = PrekeyUpdate::from_bytes(data);
    if let Ok(u) = &u {
        assert_eq!(PrekeyUpdate::from_bytes(&u.to_bytes()).as_ref(), Ok(u));
    }
    let s = ChainShare::from_bytes(data);
    if let Ok(s) = &s {
        assert_eq!(ChainShare::from_bytes(&s.to_bytes()).as_ref(), Ok(s));
    }
    p.is_ok() || u.is_ok() || s.is_ok()
}

/// A room's persisted key state (`RoomKeys::from_bytes`): whatever is
/// accepted is within the caps and re-encodes within the worst-case bound.
pub fn room_keys(data: &[u8]) -> bool {
    let Ok(k) = RoomKeys::from_bytes(data) else {
        return false;
    };
    let again = k.to_bytes();
    assert!(again.len() <= crate::room::keys::MAX_ROOM_KEYS_BYTES);
    assert!(k.skipped_len() <= crate::room::keys::MAX_ROOM_SKIPPED_KEYS);
    assert_eq!(RoomKeys::from_bytes(&again).as_ref(), Ok(&k));
    true
}

/// Homeserver bundles (`src/transport/homeserver/bundle.rs`): the CBOR
/// form, and the same bytes as the base64 text of an event's content.
pub fn homeserver_bundle(data: &[u8]) -> bool {
    let b = hs_bundle::decode_bytes(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = hs_bundle::decode_content(&serde_json::json!({ "envelopes": text }));
    }
    b.is_ok()
}

/// Contact cards (`src/crypto/card.rs`): the signed CBOR form and the
/// `MRC1:` text form.
pub fn card(data: &[u8]) -> bool {
    let c = ContactCard::from_cbor(data);
    if let Ok(c) = &c {
        assert_eq!(ContactCard::from_text(&c.to_text()).as_ref(), Ok(c));
    }
    let t = std::str::from_utf8(data).map(ContactCard::from_text);
    if let Ok(Ok(t)) = &t {
        assert_eq!(ContactCard::from_text(&t.to_text()).as_ref(), Ok(t));
    }
    c.is_ok() || matches!(t, Ok(Ok(_)))
}
