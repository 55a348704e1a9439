//! Entry points for the fuzz targets in `fuzz/` (and the corpus replay
//! test). They feed arbitrary bytes to the decoders and check the
//! invariants that must hold for every accepted input.

use crate::crypto::KeyCache;
use crate::event::{Event, timeliness};

/// Decodes `data` as an event. For every accepted input, checks that the
/// decoder is canonical (the stored bytes are the input), that the ID is a
/// function of the bytes, and that re-signing the decoded fields would give
/// the same signed prefix.
///
/// # Panics
///
/// Only if one of those invariants is broken, which is what the fuzzer looks
/// for. Rejected inputs never panic.
pub fn fuzz_decode(data: &[u8]) {
    let mut cache = KeyCache::with_capacity(1);
    assert_eq!(
        Event::decode_cached(data, &mut cache),
        Event::decode(data),
        "the key cache changed a verdict"
    );
    let Ok(unverified) = Event::decode_unverified(data) else {
        assert!(
            Event::decode(data).is_err(),
            "decode accepted what decode_unverified refused"
        );
        return;
    };
    assert_eq!(
        unverified.bytes(),
        data,
        "decoder accepted a non-canonical encoding"
    );
    let signed = unverified.fields().signing_bytes();
    assert_eq!(
        signed.get(1..),
        data.get(1..data.len().saturating_sub(66)),
        "signed fields do not re-encode to the received prefix"
    );
    if let Ok(ev) = Event::decode(data) {
        assert_eq!(
            ev.id(),
            unverified.id(),
            "event ID depends on more than the bytes"
        );
        let _ = timeliness(&ev, ev.origin_ts_ms());
    }
}
