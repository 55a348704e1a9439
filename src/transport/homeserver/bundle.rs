//! The transport-room bundle: many signed envelopes in one Matrix event
//! (`protocol-spec/homeserver.md`, "Bundles").
//!
//! ```text
//! Matrix event type: org.meshrelay.envelopes.v1
//! content  = { "v": 1, "envelopes": base64(bundle) }     -- standard alphabet, no padding
//! bundle   = [ + bstr ]                                   -- canonical CBOR, each bstr one
//!                                                            signed event (crate::event::Event)
//! txn_id   = "mr1" || hex(SHA-256("meshrelay/v1/bundle-txn\0" || bundle))
//! ```
//!
//! A writer sorts the envelopes by event ID and drops repeats, so the bundle
//! bytes, and therefore the transaction ID, are a function of the *set* of
//! events it holds: a gateway that persists a bundle's composition and
//! retries it after a crash sends the same transaction ID, and the
//! homeserver returns the original Matrix event instead of storing a copy.
//!
//! The encoded bundle is at most [`MAX_BUNDLE_BYTES`] (45 KiB), which is
//! 61,440 characters of base64; with the Matrix event's own fields
//! (signatures, hashes, auth and prev events, room and sender IDs) the whole
//! event stays well under Synapse's 65,536-byte limit. The content holds no
//! floats and only the small integer `1`.
//!
//! Decoding is done by readers that trust nothing: sizes are checked before
//! anything is decoded or allocated, a structurally bad bundle is rejected
//! whole with a [`BundleError`], and each envelope is verified with
//! [`Event::decode`]; a bad envelope is reported and skipped while the rest
//! of the bundle is kept.

use std::collections::BTreeSet;

use data_encoding::{BASE64_NOPAD, HEXLOWER};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::crypto::domain;
use crate::event::{Event, EventError, EventId};
use crate::limits::MAX_EVENT_BYTES;

/// Matrix event type of a bundle in the transport room.
pub const BUNDLE_EVENT_TYPE: &str = "org.meshrelay.envelopes.v1";

/// Bundle format version, the `"v"` field of the content.
pub const BUNDLE_FORMAT_VERSION: u64 = 1;

/// Largest encoded bundle (the CBOR array), in bytes. Its base64 is
/// 61,440 characters, leaving about 4 KiB of the 65,536-byte Matrix event
/// limit for the JSON keys and the homeserver's own event fields.
pub const MAX_BUNDLE_BYTES: usize = 45 * 1024;

/// Longest `"envelopes"` string a reader accepts: the unpadded base64
/// length of [`MAX_BUNDLE_BYTES`].
pub const MAX_BUNDLE_BASE64_LEN: usize = MAX_BUNDLE_BYTES.div_ceil(3) * 4;

/// Most envelopes in one bundle. The smallest valid event is over 150
/// bytes, so a full bundle holds about 300; this bounds the per-bundle
/// bookkeeping of a reader regardless.
pub const MAX_BUNDLE_EVENTS: usize = 512;

/// Prefix of every bundle transaction ID (so IDs are recognisable in logs).
pub const TXN_ID_PREFIX: &str = "mr1";

/// Nesting depth of a bundle: one array of byte strings.
const BUNDLE_DEPTH: usize = 1;

/// Why a bundle was rejected as a whole.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The Matrix event content is not a JSON object with the bundle fields.
    #[error("bundle content is not an object with \"v\" and \"envelopes\"")]
    NotABundle,
    /// The `"v"` field names a version this node does not speak.
    #[error("unknown bundle version {0}")]
    UnknownVersion(u64),
    /// The base64 text is longer than [`MAX_BUNDLE_BASE64_LEN`].
    #[error("bundle text is {0} characters, over the {MAX_BUNDLE_BASE64_LEN}-character limit")]
    TooLarge(usize),
    /// The `"envelopes"` field is not valid unpadded standard base64.
    #[error("bundle text is not valid unpadded base64")]
    BadBase64,
    /// The decoded bundle is not a canonical CBOR array of byte strings.
    #[error("bundle encoding: {0}")]
    Cbor(#[from] CborError),
    /// The bundle holds no envelopes.
    #[error("bundle holds no envelopes")]
    Empty,
    /// The bundle holds more than [`MAX_BUNDLE_EVENTS`] envelopes.
    #[error("bundle holds {0} envelopes, over the {MAX_BUNDLE_EVENTS} limit")]
    TooManyEvents(usize),
    /// A writer was given one event too large to fit any bundle (cannot
    /// happen for events within `MAX_EVENT_BYTES`).
    #[error("event of {0} bytes does not fit a bundle")]
    EventTooLarge(usize),
}

impl BundleError {
    /// Stable error-class name for logs and test vectors.
    pub fn class(&self) -> &'static str {
        match self {
            BundleError::NotABundle => "not_a_bundle",
            BundleError::UnknownVersion(_) => "unknown_version",
            BundleError::TooLarge(_) | BundleError::EventTooLarge(_) => "oversize",
            BundleError::BadBase64 => "bad_base64",
            BundleError::Cbor(e) => e.class(),
            BundleError::Empty | BundleError::TooManyEvents(_) => "schema",
        }
    }
}

/// Encoded length of a CBOR head carrying `n`.
fn head_len(n: usize) -> usize {
    match n {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Encoded size of a bundle of `count` envelopes whose byte strings
/// (heads included) take `items` bytes.
fn bundle_len(count: usize, items: usize) -> usize {
    head_len(count) + items
}

/// Encoded size of one envelope as a bundle item.
fn item_len(event: &Event) -> usize {
    head_len(event.bytes().len()) + event.bytes().len()
}

/// A bundle ready to upload: its envelopes (sorted by event ID, unique),
/// its canonical encoding and its transaction ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    events: Vec<Event>,
    encoded: Vec<u8>,
    txn_id: String,
}

impl Bundle {
    /// Builds a bundle from `events` (sorted and deduplicated here). Fails
    /// if there are none, too many, or they do not fit [`MAX_BUNDLE_BYTES`].
    pub fn new(mut events: Vec<Event>) -> Result<Bundle, BundleError> {
        events.sort_by_key(|e| e.id());
        events.dedup_by_key(|e| e.id());
        if events.is_empty() {
            return Err(BundleError::Empty);
        }
        if events.len() > MAX_BUNDLE_EVENTS {
            return Err(BundleError::TooManyEvents(events.len()));
        }
        let items: usize = events.iter().map(item_len).sum();
        let len = bundle_len(events.len(), items);
        if len > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(len.div_ceil(3) * 4));
        }
        let mut w = Writer::with_capacity(len);
        w.array(events.len());
        for e in &events {
            w.bytes(e.bytes());
        }
        let encoded = w.into_bytes();
        let txn_id = txn_id_for(&encoded);
        Ok(Bundle {
            events,
            encoded,
            txn_id,
        })
    }

    /// The envelopes, sorted by event ID.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The IDs of the envelopes, sorted. Persisting these is enough to
    /// rebuild the same bundle (and transaction ID) after a restart.
    pub fn event_ids(&self) -> Vec<EventId> {
        self.events.iter().map(|e| e.id()).collect()
    }

    /// The canonical CBOR encoding.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The Matrix transaction ID: `"mr1"` and the hex SHA-256 of the
    /// domain-prefixed encoding. Same events, same ID.
    pub fn txn_id(&self) -> &str {
        &self.txn_id
    }

    /// The Matrix event content to send under [`BUNDLE_EVENT_TYPE`].
    pub fn content(&self) -> Value {
        let mut m = Map::new();
        m.insert("v".into(), Value::from(BUNDLE_FORMAT_VERSION));
        m.insert(
            "envelopes".into(),
            Value::String(BASE64_NOPAD.encode(&self.encoded)),
        );
        Value::Object(m)
    }
}

/// The transaction ID of a bundle encoding.
fn txn_id_for(encoded: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(domain::BUNDLE_TXN)
        .chain_update(encoded)
        .finalize();
    format!("{TXN_ID_PREFIX}{}", HEXLOWER.encode(&digest))
}

/// Packs `events`, in order, greedily into bundles of at most `max_bytes`
/// encoded bytes (capped at [`MAX_BUNDLE_BYTES`]) and at most
/// [`MAX_BUNDLE_EVENTS`] envelopes: each bundle takes events from the front
/// of the queue until the next one does not fit. Repeated event IDs are
/// packed once. Events larger than `MAX_EVENT_BYTES` cannot exist
/// (`Event` enforces it), so every event fits an empty bundle.
pub fn pack(events: impl IntoIterator<Item = Event>, max_bytes: usize) -> Vec<Bundle> {
    let max_bytes = max_bytes.clamp(bundle_len(1, MAX_EVENT_BYTES + 3), MAX_BUNDLE_BYTES);
    let mut seen = BTreeSet::new();
    let mut bundles = Vec::new();
    let mut current: Vec<Event> = Vec::new();
    let mut items = 0usize;
    for e in events {
        if !seen.insert(e.id()) {
            continue;
        }
        let add = item_len(&e);
        let fits = current.len() < MAX_BUNDLE_EVENTS
            && bundle_len(current.len() + 1, items + add) <= max_bytes;
        if !fits && !current.is_empty() {
            bundles.extend(Bundle::new(std::mem::take(&mut current)).ok());
            items = 0;
        }
        items += add;
        current.push(e);
    }
    if !current.is_empty() {
        bundles.extend(Bundle::new(current).ok());
    }
    bundles
}

/// An envelope of a bundle that failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEnvelope {
    /// Position of the envelope in the bundle.
    pub index: usize,
    /// Why it was rejected.
    pub error: EventError,
}

/// What a reader got out of one bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedBundle {
    /// Envelopes whose encoding and signature verify, in bundle order,
    /// without repeats.
    pub events: Vec<Event>,
    /// Envelopes that failed [`Event::decode`]; they are skipped.
    pub rejected: Vec<RejectedEnvelope>,
}

/// Decodes the content of a Matrix event of type [`BUNDLE_EVENT_TYPE`].
/// Structural problems reject the whole bundle; each envelope is then
/// verified on its own and bad ones are reported in
/// [`DecodedBundle::rejected`].
pub fn decode_content(content: &Value) -> Result<DecodedBundle, BundleError> {
    let obj = content.as_object().ok_or(BundleError::NotABundle)?;
    let version = obj
        .get("v")
        .and_then(Value::as_u64)
        .ok_or(BundleError::NotABundle)?;
    if version != BUNDLE_FORMAT_VERSION {
        return Err(BundleError::UnknownVersion(version));
    }
    let text = obj
        .get("envelopes")
        .and_then(Value::as_str)
        .ok_or(BundleError::NotABundle)?;
    if text.len() > MAX_BUNDLE_BASE64_LEN {
        return Err(BundleError::TooLarge(text.len()));
    }
    let bytes = BASE64_NOPAD
        .decode(text.as_bytes())
        .map_err(|_| BundleError::BadBase64)?;
    decode_bytes(&bytes)
}

/// Decodes an encoded bundle (the CBOR array). See [`decode_content`].
pub fn decode_bytes(bytes: &[u8]) -> Result<DecodedBundle, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(bytes.len().div_ceil(3) * 4));
    }
    cbor::validate(bytes, BUNDLE_DEPTH)?;
    let mut r = Reader::new(bytes);
    let n = r.array()?;
    if n == 0 {
        return Err(BundleError::Empty);
    }
    if n > MAX_BUNDLE_EVENTS {
        return Err(BundleError::TooManyEvents(n));
    }
    // Read every item first, so a non-bstr item rejects the bundle whole.
    let mut raw = Vec::with_capacity(n);
    for _ in 0..n {
        raw.push(r.bytes()?);
    }
    r.finish()?;
    let mut out = DecodedBundle::default();
    let mut seen = BTreeSet::new();
    for (index, item) in raw.into_iter().enumerate() {
        match Event::decode(item) {
            Ok(e) => {
                if seen.insert(e.id()) {
                    out.events.push(e);
                }
            }
            Err(error) => out.rejected.push(RejectedEnvelope { index, error }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::event::{EventKind, RoomId, UnsignedEvent};
    use proptest::prelude::*;

    fn event(id: &Identity, seq: u64, payload_len: usize) -> Event {
        UnsignedEvent {
            room: RoomId([7; 16]),
            sender: id.device_id(),
            seq,
            prev: vec![],
            origin_ts_ms: 1_700_000_000_000,
            expires_ms: 1_700_000_000_000 + 1000,
            kind: EventKind::Message,
            payload: vec![(seq % 251) as u8; payload_len],
        }
        .sign(id)
        .expect("sign")
    }

    fn ident() -> Identity {
        Identity::from_seed(&[1; 32])
    }

    #[test]
    fn round_trip_and_txn_id_depends_only_on_the_set() {
        let id = ident();
        let evs: Vec<Event> = (1..=20).map(|s| event(&id, s, 100)).collect();
        let a = Bundle::new(evs.clone()).expect("bundle");
        let mut rev = evs.clone();
        rev.reverse();
        rev.push(evs[3].clone());
        let b = Bundle::new(rev).expect("bundle");
        assert_eq!(a.txn_id(), b.txn_id());
        assert_eq!(a.encoded(), b.encoded());
        assert!(a.txn_id().starts_with(TXN_ID_PREFIX));
        assert_eq!(a.txn_id().len(), 3 + 64);
        let c = Bundle::new(evs[1..].to_vec()).expect("bundle");
        assert_ne!(a.txn_id(), c.txn_id());

        let d = decode_content(&a.content()).expect("decode");
        assert!(d.rejected.is_empty());
        assert_eq!(d.events, a.events());
    }

    #[test]
    fn packer_fills_greedily_under_the_limit() {
        let id = ident();
        let evs: Vec<Event> = (1..=300).map(|s| event(&id, s, 1024)).collect();
        let bundles = pack(evs.clone(), MAX_BUNDLE_BYTES);
        let total: usize = bundles.iter().map(|b| b.events().len()).sum();
        assert_eq!(total, 300);
        for (i, b) in bundles.iter().enumerate() {
            assert!(b.encoded().len() <= MAX_BUNDLE_BYTES);
            let text = b.content()["envelopes"].as_str().expect("str").len();
            assert!(text <= MAX_BUNDLE_BASE64_LEN);
            // Greedy: every bundle but the last had no room for one more.
            if i + 1 < bundles.len() {
                assert!(b.encoded().len() + item_len(&evs[0]) > MAX_BUNDLE_BYTES);
            }
        }
        // ~1.2 KB events: about 37 per bundle.
        assert_eq!(bundles.len(), 300usize.div_ceil(bundles[0].events().len()));
        // Queue order is kept across bundles.
        let first_ids: BTreeSet<_> = evs[..bundles[0].events().len()]
            .iter()
            .map(|e| e.id())
            .collect();
        let got: BTreeSet<_> = bundles[0].event_ids().into_iter().collect();
        assert_eq!(first_ids, got);
    }

    #[test]
    fn packer_with_largest_events() {
        let id = ident();
        let evs: Vec<Event> = (1..=7)
            .map(|s| event(&id, s, crate::limits::MAX_PAYLOAD_BYTES))
            .collect();
        let bundles = pack(evs, 1);
        assert_eq!(bundles.len(), 7, "a tiny max still takes one event each");
        let id2 = ident();
        let evs: Vec<Event> = (1..=7)
            .map(|s| event(&id2, s, crate::limits::MAX_PAYLOAD_BYTES))
            .collect();
        let bundles = pack(evs, usize::MAX);
        assert!(
            bundles
                .iter()
                .all(|b| b.encoded().len() <= MAX_BUNDLE_BYTES)
        );
        // Two maximum-size events (~15.5 KB each) per 45 KiB bundle.
        assert_eq!(bundles.len(), 4);
    }

    #[test]
    fn bad_envelopes_are_skipped_rest_kept() {
        let id = ident();
        let good = event(&id, 1, 50);
        let mut forged = event(&id, 2, 50).bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1; // corrupt the signature
        let mut w = Writer::new();
        w.array(3).bytes(&forged).bytes(good.bytes()).bytes(b"junk");
        let d = decode_bytes(&w.into_bytes()).expect("structurally fine");
        assert_eq!(d.events, vec![good]);
        assert_eq!(d.rejected.len(), 2);
        assert_eq!(d.rejected[0].index, 0);
        assert_eq!(d.rejected[0].error, EventError::BadSignature);
        assert_eq!(d.rejected[1].index, 2);
    }

    #[test]
    fn structural_errors_reject_the_bundle() {
        let cases: Vec<(Value, &str)> = vec![
            (Value::Null, "not_a_bundle"),
            (serde_json::json!({"v": 1}), "not_a_bundle"),
            (
                serde_json::json!({"v": 2, "envelopes": ""}),
                "unknown_version",
            ),
            (
                serde_json::json!({"v": 1.0, "envelopes": ""}),
                "not_a_bundle",
            ),
            (
                serde_json::json!({"v": 1, "envelopes": "!!!"}),
                "bad_base64",
            ),
            (
                serde_json::json!({"v": 1, "envelopes": "gA=="}),
                "bad_base64",
            ),
            (serde_json::json!({"v": 1, "envelopes": "gA"}), "schema"),
            (
                serde_json::json!({"v": 1, "envelopes": "A".repeat(MAX_BUNDLE_BASE64_LEN + 1)}),
                "oversize",
            ),
            // [ 1 ]: an item that is not a byte string.
            (serde_json::json!({"v": 1, "envelopes": "gQE"}), "schema"),
            // array claiming 1000 items in 3 bytes.
            (
                serde_json::json!({"v": 1, "envelopes": BASE64_NOPAD.encode(&[0x99, 0x03, 0xe8])}),
                "length",
            ),
            // nested array: too deep.
            (
                serde_json::json!({"v": 1, "envelopes": BASE64_NOPAD.encode(&[0x81, 0x80])}),
                "depth",
            ),
        ];
        for (content, class) in cases {
            let err = decode_content(&content).expect_err("must reject");
            assert_eq!(err.class(), class, "{content}: {err}");
        }
    }

    /// Path of the bundle test vectors (`protocol-spec/homeserver.md`).
    const VECTORS: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/protocol-spec/vectors/homeserver-bundle.json"
    );

    /// The vector file's content, computed from fixed seeds.
    fn vectors() -> Value {
        let id = Identity::from_seed(&[0x42; 32]);
        let evs: Vec<Event> = (1..=3).map(|s| event(&id, s, 16 * s as usize)).collect();
        let b = Bundle::new(evs.clone()).expect("bundle");
        let hex = |b: &[u8]| HEXLOWER.encode(b);
        let mut forged = evs[0].bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let mut w = Writer::new();
        w.array(2).bytes(&forged).bytes(evs[1].bytes());
        let mixed = BASE64_NOPAD.encode(&w.into_bytes());
        serde_json::json!({
            "description": "org.meshrelay.envelopes.v1 bundles: valid bundles with their transaction IDs, bundles with bad envelopes, and bundles rejected whole with an error class",
            "valid": [{
                "events": evs.iter().map(|e| hex(e.bytes())).collect::<Vec<_>>(),
                "content": b.content(),
                "txn_id": b.txn_id(),
                "event_ids": b.event_ids().iter().map(|i| hex(&i.0)).collect::<Vec<_>>(),
            }],
            "partial": [{
                "content": {"v": 1, "envelopes": mixed},
                "kept_event_ids": [hex(&evs[1].id().0)],
                "rejected": [{"index": 0, "error": "bad_signature"}],
            }],
            "invalid": [
                {"content": {"v": 1}, "error": "not_a_bundle"},
                {"content": {"v": 2, "envelopes": ""}, "error": "unknown_version"},
                {"content": {"v": 1, "envelopes": "gA=="}, "error": "bad_base64"},
                {"content": {"v": 1, "envelopes": "gA"}, "error": "schema"},
                {"content": {"v": 1, "envelopes": "gQE"}, "error": "schema"},
                {"content": {"v": 1, "envelopes": "mQPo"}, "error": "length"},
                {"content": {"v": 1, "envelopes": "gYA"}, "error": "depth"},
                {"content": {"v": 1, "envelopes": "gUAA"}, "error": "trailing_bytes"},
            ],
        })
    }

    /// Rewrites the vector file: `MESHRELAY_REGEN=1 cargo test --lib bundle_vectors`.
    #[test]
    fn bundle_vectors() {
        let want = vectors();
        if std::env::var("MESHRELAY_REGEN").is_ok() {
            let text = serde_json::to_string_pretty(&want).expect("json") + "\n";
            std::fs::write(VECTORS, text).expect("write vectors");
        }
        let file: Value =
            serde_json::from_str(&std::fs::read_to_string(VECTORS).expect("vector file"))
                .expect("vector json");
        assert_eq!(file, want, "vectors are stale: regenerate");
        for v in file["valid"].as_array().expect("valid") {
            let d = decode_content(&v["content"]).expect("valid bundle");
            let ids: Vec<String> = d
                .events
                .iter()
                .map(|e| HEXLOWER.encode(&e.id().0))
                .collect();
            assert_eq!(Value::from(ids), v["event_ids"]);
            let evs: Vec<Event> = v["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|h| {
                    let bytes = HEXLOWER
                        .decode(h.as_str().expect("hex").as_bytes())
                        .expect("hex");
                    Event::decode(&bytes).expect("event")
                })
                .collect();
            let b = Bundle::new(evs).expect("bundle");
            assert_eq!(b.txn_id(), v["txn_id"]);
            assert_eq!(b.content(), v["content"]);
        }
        for v in file["partial"].as_array().expect("partial") {
            let d = decode_content(&v["content"]).expect("partial bundle");
            let ids: Vec<String> = d
                .events
                .iter()
                .map(|e| HEXLOWER.encode(&e.id().0))
                .collect();
            assert_eq!(Value::from(ids), v["kept_event_ids"]);
            let rejected: Vec<Value> = d
                .rejected
                .iter()
                .map(|r| serde_json::json!({"index": r.index, "error": r.error.class()}))
                .collect();
            assert_eq!(Value::from(rejected), v["rejected"]);
        }
        for v in file["invalid"].as_array().expect("invalid") {
            let err = decode_content(&v["content"]).expect_err("invalid bundle");
            assert_eq!(err.class(), v["error"], "{}", v["content"]);
        }
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_bytes(&bytes);
            let _ = decode_content(&serde_json::json!({"v": 1, "envelopes": BASE64_NOPAD.encode(&bytes)}));
        }

        #[test]
        fn pack_then_decode_is_lossless(sizes in proptest::collection::vec(0usize..4000, 1..40)) {
            let id = ident();
            let evs: Vec<Event> = sizes.iter().enumerate().map(|(i, &n)| event(&id, i as u64 + 1, n)).collect();
            let bundles = pack(evs.clone(), MAX_BUNDLE_BYTES);
            let mut got = BTreeSet::new();
            for b in &bundles {
                prop_assert!(b.encoded().len() <= MAX_BUNDLE_BYTES);
                let d = decode_content(&b.content()).expect("decode");
                prop_assert!(d.rejected.is_empty());
                for e in d.events { prop_assert!(got.insert(e.id())); }
            }
            let want: BTreeSet<_> = evs.iter().map(|e| e.id()).collect();
            prop_assert_eq!(got, want);
        }
    }
}
