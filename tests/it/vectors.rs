//! Test vectors (`protocol-spec/vectors/*.json`): generation and checking.
//!
//! Normal runs regenerate every vector in memory, require the committed
//! files to be identical (so the files can never drift from the code), and
//! then check every vector *from the file*, recomputing what can be
//! recomputed independently (HKDF, SHA-2, ed25519/x25519 straight from the
//! dalek crates, and CBOR through ciborium).
//!
//! `MESHRELAY_REGEN_VECTORS=1 cargo test --test it vectors` rewrites the files.

use std::path::PathBuf;

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use meshrelay::cbor::{self, Writer};
use meshrelay::crypto::domain;
use meshrelay::crypto::{AgreementKey, ContactCard, DeviceId, Identity, fingerprint};
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::limits::{MAX_CBOR_DEPTH, MAX_EVENT_BYTES, MAX_PAYLOAD_BYTES};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-spec/vectors")
}

pub fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

pub fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex field is a string")).expect("valid hex")
}

fn u(v: &Value) -> u64 {
    v.as_u64().expect("unsigned integer field")
}

/// Seeds of the identity vectors (fixed forever).
const SEEDS: [[u8; 32]; 3] = [[0x00; 32], [0x01; 32], [0xa5; 32]];
const SEEDED_SALT: &[u8] = b"meshrelay/v1/seeded-identity";

fn hkdf32(seed: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(SEEDED_SALT), seed);
    let mut out = [0u8; 32];
    hk.expand(label, &mut out).unwrap();
    out
}

// ---------------------------------------------------------------- generate

fn gen_identity() -> Value {
    let names = ["Ana", "Ben Okafor", "Zoë 🚑"];
    let created = [1_700_000_000_000u64, 1_750_000_000_123, 0];
    let vectors: Vec<Value> = SEEDS
        .iter()
        .zip(names)
        .zip(created)
        .map(|((seed, name), created_ms)| {
            let id = Identity::from_seed(seed);
            let card = ContactCard::create(&id, name, created_ms).unwrap();
            json!({
                "seed": hex(seed),
                "ed25519_secret": hex(&hkdf32(seed, b"ed25519")),
                "x25519_secret": hex(&hkdf32(seed, b"x25519")),
                "prekey_secret": hex(&hkdf32(seed, b"prekey-1")),
                "device_id": hex(id.device_id().as_bytes()),
                "device_id_text": id.device_id().to_string(),
                "fingerprint": fingerprint(&id.device_id()),
                "kx_key": hex(id.agreement_key().as_bytes()),
                "kx_binding_sig": hex(&id.kx_binding()),
                "prekey_id": id.prekey().id,
                "prekey": hex(id.prekey().public().as_bytes()),
                "name": name,
                "created_ms": created_ms,
                "card_signed_cbor": hex(&card.signed_bytes()),
                "card_sig": hex(&card.card_sig),
                "card_cbor": hex(&card.to_cbor()),
                "card_text": card.to_text(),
            })
        })
        .collect();
    json!({
        "description": "Seeded identities (protocol-spec/identity.md): seed -> HKDF-SHA256 secrets -> public keys -> device ID text, fingerprint -> signed contact card (CBOR, signature, MRC1: text).",
        "hkdf_salt": String::from_utf8_lossy(SEEDED_SALT),
        "vectors": vectors,
    })
}

struct EventSpec {
    description: &'static str,
    seed: [u8; 32],
    room: [u8; 16],
    seq: u64,
    prev: Vec<[u8; 32]>,
    origin_ts_ms: u64,
    expires_ms: u64,
    kind: u64,
    payload: Vec<u8>,
}

fn event_specs() -> Vec<EventSpec> {
    vec![
        EventSpec {
            description: "first message in a room: no predecessors, short payload",
            seed: SEEDS[0],
            room: [0x11; 16],
            seq: 1,
            prev: vec![],
            origin_ts_ms: 1_700_000_000_000,
            expires_ms: 1_700_000_000_000 + 14 * 86_400_000,
            kind: 1,
            payload: b"opaque ciphertext".to_vec(),
        },
        EventSpec {
            description: "membership event with three predecessors (listed sorted) and an empty payload",
            seed: SEEDS[1],
            room: [0x22; 16],
            seq: 7,
            prev: vec![[0x03; 32], [0x01; 32], [0xfe; 32]],
            origin_ts_ms: 1_700_000_100_000,
            expires_ms: 1_700_000_100_000,
            kind: 2,
            payload: vec![],
        },
        EventSpec {
            description: "unknown kind 4096 is carried opaquely; 64-bit sequence and times",
            seed: SEEDS[2],
            room: *b"0123456789abcdef",
            seq: u32::MAX as u64 + 1,
            prev: vec![[0x77; 32]],
            origin_ts_ms: 5_000_000_000_000,
            expires_ms: 5_000_000_000_000 + 1000,
            kind: 4096,
            payload: (0..=255u8).collect(),
        },
        EventSpec {
            description: "largest allowed shape: 16 predecessors and a maximum-size payload",
            seed: SEEDS[0],
            room: [0x33; 16],
            seq: 2,
            prev: (0..16u8).map(|i| [i; 32]).collect(),
            origin_ts_ms: 1_700_000_000_000,
            expires_ms: 1_700_000_000_000 + 30 * 86_400_000,
            kind: 3,
            payload: (0..MAX_PAYLOAD_BYTES).map(|i| (i % 251) as u8).collect(),
        },
    ]
}

fn sign_spec(s: &EventSpec) -> Event {
    let id = Identity::from_seed(&s.seed);
    UnsignedEvent {
        room: RoomId(s.room),
        sender: id.device_id(),
        seq: s.seq,
        prev: s.prev.iter().map(|p| EventId(*p)).collect(),
        origin_ts_ms: s.origin_ts_ms,
        expires_ms: s.expires_ms,
        kind: EventKind::from_u64(s.kind),
        payload: s.payload.clone(),
    }
    .sign(&id)
    .unwrap()
}

fn digest_of(signed: &[u8]) -> [u8; 64] {
    Sha512::new()
        .chain_update(domain::EVENT_DIGEST)
        .chain_update(signed)
        .finalize()
        .into()
}

fn gen_events() -> Value {
    let vectors: Vec<Value> = event_specs()
        .iter()
        .map(|s| {
            let ev = sign_spec(s);
            let signed = ev.fields().signing_bytes();
            json!({
                "description": s.description,
                "sender_seed": hex(&s.seed),
                "room": hex(&s.room),
                "sender": hex(ev.sender().as_bytes()),
                "seq": s.seq,
                "prev": ev.prev().iter().map(|p| hex(p.as_bytes())).collect::<Vec<_>>(),
                "origin_ts_ms": s.origin_ts_ms,
                "expires_ms": s.expires_ms,
                "kind": s.kind,
                "payload": hex(&s.payload),
                "signed_cbor": hex(&signed),
                "digest": hex(&digest_of(&signed)),
                "signature": hex(ev.signature()),
                "cbor": hex(ev.bytes()),
                "event_id": hex(ev.id().as_bytes()),
            })
        })
        .collect();
    json!({
        "description": "Signed events (protocol-spec/event.md): fields -> signed CBOR (9-array) -> SHA-512 digest -> ed25519 signature -> event CBOR (10-array) -> event ID. Senders are the seeded identities of identity.json.",
        "vectors": vectors,
    })
}

/// Writes an event array with arbitrary (possibly invalid) field values.
fn raw_event(
    version: u64,
    sender: &[u8],
    prev: &[[u8; 32]],
    origin: u64,
    expires: u64,
    payload_len: usize,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(10)
        .u64(version)
        .bytes(&[0x11; 16])
        .bytes(sender)
        .u64(1)
        .array(prev.len());
    for p in prev {
        w.bytes(p);
    }
    w.u64(origin)
        .u64(expires)
        .u64(1)
        .bytes(&vec![0x5a; payload_len])
        .bytes(&[0; 64]);
    w.into_bytes()
}

fn small_order_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    k[0] = 1; // the identity point
    k
}

fn non_canonical_key() -> [u8; 32] {
    // y = p + 1, a non-canonical encoding of y = 1
    let mut k = [0xff; 32];
    k[0] = 0xee;
    k[31] = 0x7f;
    k
}

fn invalid(name: &str, decoder: &str, input: &[u8], class: &str, description: &str) -> Value {
    json!({
        "name": name,
        "description": description,
        "decoder": decoder,
        "input": hex(input),
        "error_class": class,
    })
}

fn invalid_text(name: &str, input: &str, class: &str, description: &str) -> Value {
    json!({
        "name": name,
        "description": description,
        "decoder": "card_text",
        "input_text": input,
        "error_class": class,
    })
}

fn card_with(mutate: impl FnOnce(&mut ContactCard), version: u64) -> (ContactCard, Vec<u8>) {
    let id = Identity::from_seed(&SEEDS[0]);
    let mut card = ContactCard::create(&id, "Ana", 1_700_000_000_000).unwrap();
    mutate(&mut card);
    let mut bytes = card.to_cbor();
    // version is the second byte (after the array head 0x89)
    bytes[1] = version as u8;
    (card, bytes)
}

#[allow(clippy::vec_init_then_push)] // one push per vector reads best
fn gen_invalid() -> Value {
    let good = sign_spec(&event_specs()[0]);
    let gb = good.bytes().to_vec();
    let sender = *good.sender().as_bytes();
    let mut v = Vec::new();

    // --- generic CBOR (cbor::validate with max_depth MAX_CBOR_DEPTH)
    v.push(invalid(
        "cbor_non_minimal_int",
        "cbor",
        &[0x18, 0x05],
        "non_canonical",
        "5 encoded with a one-byte argument (0x18 0x05) instead of 0x05",
    ));
    v.push(invalid(
        "cbor_non_minimal_len",
        "cbor",
        &[0x59, 0x00, 0x01, 0x00],
        "non_canonical",
        "byte string of length 1 with a two-byte length",
    ));
    v.push(invalid(
        "cbor_map_key_order",
        "cbor",
        &[0xa2, 0x01, 0x00, 0x00, 0x00],
        "non_canonical",
        "map {1: 0, 0: 0}: keys not in increasing order",
    ));
    v.push(invalid(
        "cbor_map_key_repeated",
        "cbor",
        &[0xa2, 0x01, 0x00, 0x01, 0x00],
        "non_canonical",
        "map {1: 0, 1: 0}: repeated key",
    ));
    v.push(invalid(
        "cbor_trailing_bytes",
        "cbor",
        &[0x00, 0x00],
        "trailing_bytes",
        "two items where one is expected",
    ));
    v.push(invalid(
        "cbor_indefinite_array",
        "cbor",
        &[0x9f, 0xff],
        "unsupported",
        "indefinite-length array",
    ));
    v.push(invalid(
        "cbor_tag",
        "cbor",
        &[0xc0, 0x00],
        "unsupported",
        "tagged item",
    ));
    v.push(invalid(
        "cbor_float",
        "cbor",
        &[0xf9, 0x00, 0x00],
        "unsupported",
        "half-precision float",
    ));
    v.push(invalid(
        "cbor_negative_int",
        "cbor",
        &[0x20],
        "unsupported",
        "negative integer -1",
    ));
    v.push(invalid(
        "cbor_depth_bomb",
        "cbor",
        &[0x81; 64],
        "depth",
        "64 nested one-element arrays against a depth limit of MAX_CBOR_DEPTH (8)",
    ));
    v.push(invalid(
        "cbor_length_bomb",
        "cbor",
        &[0x9b, 0, 0, 0, 1, 0, 0, 0, 0],
        "length",
        "array header claiming 2^32 items in a 9-byte input",
    ));
    v.push(invalid(
        "cbor_truncated_head",
        "cbor",
        &[0x19, 0x01],
        "truncated",
        "head with a two-byte argument and only one byte present",
    ));
    v.push(invalid(
        "cbor_truncated_string",
        "cbor",
        &[0x43, 0x01, 0x02],
        "length",
        "3-byte string with only 2 bytes present: the declared length exceeds the input",
    ));
    v.push(invalid(
        "cbor_bad_utf8",
        "cbor",
        &[0x62, 0xc3, 0x28],
        "schema",
        "text string with invalid UTF-8",
    ));

    // --- events (Event::decode)
    let mut e = gb.clone();
    // seq (value 1) sits right after the sender: head 0x8a, version, room (17), sender (34)
    let seq_at = 1 + 1 + 17 + 34;
    assert_eq!(e[seq_at], 0x01);
    e.splice(seq_at..=seq_at, [0x18, 0x01]);
    v.push(invalid(
        "event_non_minimal_int",
        "event",
        &e,
        "non_canonical",
        "valid event with seq 1 re-encoded as 0x18 0x01",
    ));
    let mut e = gb.clone();
    e.push(0x00);
    v.push(invalid(
        "event_trailing_bytes",
        "event",
        &e,
        "trailing_bytes",
        "valid event followed by one 0x00 byte",
    ));
    let mut e = gb.clone();
    let last = e.len() - 1;
    e[last] ^= 0x01;
    v.push(invalid(
        "event_wrong_signature",
        "event",
        &e,
        "bad_signature",
        "last signature bit flipped",
    ));
    let mut e = gb.clone();
    let p = e.len() - 66 - 1;
    e[p] ^= 0x01;
    v.push(invalid(
        "event_altered_payload",
        "event",
        &e,
        "bad_signature",
        "last payload bit flipped",
    ));
    let mut e = gb.clone();
    let sender_at = 1 + 1 + 17 + 2;
    e[sender_at..sender_at + 32]
        .copy_from_slice(Identity::from_seed(&SEEDS[1]).device_id().as_bytes());
    v.push(invalid(
        "event_other_sender",
        "event",
        &e,
        "bad_signature",
        "sender replaced by another valid device key, signature kept",
    ));
    e[sender_at..sender_at + 32].copy_from_slice(&small_order_key());
    v.push(invalid(
        "event_small_order_sender",
        "event",
        &e,
        "bad_key",
        "sender replaced by the identity point (small order)",
    ));
    e[sender_at..sender_at + 32].copy_from_slice(&non_canonical_key());
    v.push(invalid(
        "event_non_canonical_sender",
        "event",
        &e,
        "bad_key",
        "sender replaced by y = p + 1 (non-canonical encoding)",
    ));
    let mut e = gb.clone();
    e[1] = 0x02;
    v.push(invalid(
        "event_unknown_version",
        "event",
        &e,
        "unknown_version",
        "envelope version 2",
    ));
    v.push(invalid(
        "event_truncated",
        "event",
        &gb[..gb.len() - 1],
        "length",
        "valid event minus its last byte: the signature's declared length exceeds the input",
    ));
    v.push(invalid(
        "event_truncated_in_head",
        "event",
        &gb[..gb.len() - 65],
        "truncated",
        "valid event cut inside the signature's two-byte head",
    ));
    let big = raw_event(1, &sender, &[], 0, 1, MAX_EVENT_BYTES);
    v.push(invalid(
        "event_oversize",
        "event",
        &big,
        "oversize",
        "event of more than MAX_EVENT_BYTES (16384) bytes",
    ));
    let big_payload = raw_event(1, &sender, &[], 0, 1, MAX_PAYLOAD_BYTES + 1);
    assert!(big_payload.len() <= MAX_EVENT_BYTES);
    v.push(invalid(
        "event_payload_oversize",
        "event",
        &big_payload,
        "oversize",
        "payload of MAX_PAYLOAD_BYTES + 1 bytes in an event under the size limit",
    ));
    let many_prev: Vec<[u8; 32]> = (0..17u8).map(|i| [i; 32]).collect();
    v.push(invalid(
        "event_too_many_prev",
        "event",
        &raw_event(1, &sender, &many_prev, 0, 1, 0),
        "schema",
        "17 predecessors (MAX_PREV_EVENTS is 16)",
    ));
    v.push(invalid(
        "event_unsorted_prev",
        "event",
        &raw_event(1, &sender, &[[2; 32], [1; 32]], 0, 1, 0),
        "schema",
        "predecessors not in increasing order",
    ));
    v.push(invalid(
        "event_expiry_before_origin",
        "event",
        &raw_event(1, &sender, &[], 10, 9, 0),
        "schema",
        "expires_ms earlier than origin_ts_ms",
    ));
    v.push(invalid(
        "event_lifetime_too_long",
        "event",
        &raw_event(
            1,
            &sender,
            &[],
            0,
            meshrelay::limits::MAX_EVENT_LIFETIME_MS + 1,
            0,
        ),
        "schema",
        "lifetime one millisecond over MAX_EVENT_LIFETIME_MS",
    ));
    v.push(invalid(
        "event_depth_bomb",
        "event",
        &[0x81; 1000],
        "depth",
        "1000 nested one-element arrays (events nest 2 deep)",
    ));
    v.push(invalid(
        "event_length_bomb",
        "event",
        &[0x9b, 0, 0, 0, 1, 0, 0, 0, 0],
        "length",
        "array header claiming 2^32 items in a 9-byte input",
    ));
    v.push(invalid(
        "event_empty",
        "event",
        &[],
        "truncated",
        "no bytes at all",
    ));

    // --- keys
    v.push(invalid(
        "device_id_small_order",
        "device_id",
        &small_order_key(),
        "bad_key",
        "ed25519 identity point (order 1)",
    ));
    let mut order2 = [0u8; 32];
    order2[0] = 0xec;
    order2[1..31].fill(0xff);
    order2[31] = 0x7f; // y = -1: the point of order 2
    v.push(invalid(
        "device_id_order_2",
        "device_id",
        &order2,
        "bad_key",
        "ed25519 point (0, -1) of order 2",
    ));
    v.push(invalid(
        "device_id_non_canonical",
        "device_id",
        &non_canonical_key(),
        "bad_key",
        "y = p + 1, a non-canonical encoding",
    ));
    v.push(invalid(
        "agreement_key_zero",
        "agreement_key",
        &[0u8; 32],
        "bad_key",
        "x25519 u = 0 (small order)",
    ));
    let mut one = [0u8; 32];
    one[0] = 1;
    v.push(invalid(
        "agreement_key_one",
        "agreement_key",
        &one,
        "bad_key",
        "x25519 u = 1 (small order)",
    ));
    let mut u_p = [0xff; 32];
    u_p[0] = 0xed;
    u_p[31] = 0x7f;
    v.push(invalid(
        "agreement_key_non_canonical",
        "agreement_key",
        &u_p,
        "bad_key",
        "x25519 u = p (not reduced)",
    ));

    // --- contact cards
    let (_, renamed) = card_with(|c| c.name = "Eve".into(), 1);
    v.push(invalid(
        "card_altered_name",
        "card",
        &renamed,
        "bad_signature",
        "valid card with the name changed from Ana to Eve, signature kept",
    ));
    let (_, later) = card_with(|c| c.created_ms += 1, 1);
    v.push(invalid(
        "card_altered_time",
        "card",
        &later,
        "bad_signature",
        "creation time changed by 1 ms",
    ));
    let (_, binding) = card_with(|c| c.kx_binding_sig[0] ^= 1, 1);
    v.push(invalid(
        "card_altered_binding",
        "card",
        &binding,
        "bad_signature",
        "key-agreement binding signature altered",
    ));
    let (_, other_kx) = card_with(
        |c| c.kx_key = Identity::from_seed(&SEEDS[1]).agreement_key(),
        1,
    );
    v.push(invalid(
        "card_swapped_kx_key",
        "card",
        &other_kx,
        "bad_signature",
        "x25519 key replaced by another device's key",
    ));
    let (_, v2) = card_with(|_| {}, 2);
    v.push(invalid(
        "card_unknown_version",
        "card",
        &v2,
        "unknown_version",
        "card format version 2",
    ));
    let good_card = card_with(|_| {}, 1).1;
    let mut weak = good_card.clone();
    // kx_key item follows the head (1), version (1) and device id (34): head 0x58 0x20 at 36
    weak[38..70].fill(0);
    v.push(invalid(
        "card_small_order_kx_key",
        "card",
        &weak,
        "bad_key",
        "x25519 key replaced by u = 0",
    ));
    let text = ContactCard::from_cbor(&good_card).unwrap().to_text();
    let renamed_text = format!("MRC1:{}", data_encoding::BASE32_NOPAD.encode(&renamed));
    v.push(invalid_text(
        "card_text_altered",
        &renamed_text,
        "bad_signature",
        "text form of the renamed card",
    ));
    v.push(invalid_text(
        "card_text_no_prefix",
        &text[5..],
        "bad_text",
        "card text without MRC1:",
    ));
    v.push(invalid_text(
        "card_text_bad_base32",
        &format!("{}0", &text[..text.len() - 1]),
        "bad_text",
        "last character replaced by '0', outside the base32 alphabet",
    ));
    let mut truncated_card = text.clone();
    truncated_card.truncate(text.len() - 8);
    v.push(invalid_text(
        "card_text_truncated",
        &truncated_card,
        "length",
        "last 8 characters (5 bytes) removed",
    ));

    json!({
        "description": "Inputs every decoder MUST reject, with the error class (protocol-spec/README.md, \"Error classes\"). decoder: cbor = generic validation with depth limit MAX_CBOR_DEPTH; event = event decode and verify; card = contact card CBOR; card_text = MRC1: text; device_id / agreement_key = 32-byte public key validation.",
        "vectors": v,
    })
}

// ---------------------------------------------------------------- check

fn ciborium_round_trip(bytes: &[u8]) -> ciborium::Value {
    let value: ciborium::Value = ciborium::from_reader(bytes).expect("ciborium decodes");
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out).unwrap();
    assert_eq!(out, bytes, "ciborium re-encodes to different bytes");
    value
}

fn ci_u64(v: &ciborium::Value) -> u64 {
    match v {
        ciborium::Value::Integer(i) => u64::try_from(*i).expect("non-negative"),
        other => panic!("expected integer, got {other:?}"),
    }
}

fn ci_bytes(v: &ciborium::Value) -> &[u8] {
    match v {
        ciborium::Value::Bytes(b) => b,
        other => panic!("expected bytes, got {other:?}"),
    }
}

fn ci_array(v: &ciborium::Value) -> &[ciborium::Value] {
    match v {
        ciborium::Value::Array(a) => a,
        other => panic!("expected array, got {other:?}"),
    }
}

fn check_identity(file: &Value) {
    let salt = file["hkdf_salt"].as_str().unwrap();
    assert_eq!(salt.as_bytes(), SEEDED_SALT);
    for v in file["vectors"].as_array().unwrap() {
        let seed: [u8; 32] = unhex(&v["seed"]).try_into().unwrap();
        // Independent derivation with the dalek crates directly.
        let ed_secret: [u8; 32] = unhex(&v["ed25519_secret"]).try_into().unwrap();
        assert_eq!(ed_secret, hkdf32(&seed, b"ed25519"));
        let vk = SigningKey::from_bytes(&ed_secret).verifying_key();
        assert_eq!(hex(vk.as_bytes()), v["device_id"]);
        let x_secret: [u8; 32] = unhex(&v["x25519_secret"]).try_into().unwrap();
        assert_eq!(x_secret, hkdf32(&seed, b"x25519"));
        let xp = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(x_secret));
        assert_eq!(hex(xp.as_bytes()), v["kx_key"]);
        let pk_secret: [u8; 32] = unhex(&v["prekey_secret"]).try_into().unwrap();
        let pp = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(pk_secret));
        assert_eq!(hex(pp.as_bytes()), v["prekey"]);

        // Our implementation agrees.
        let id = Identity::from_seed(&seed);
        assert_eq!(hex(id.device_id().as_bytes()), v["device_id"]);
        assert_eq!(id.device_id().to_string(), v["device_id_text"]);
        let parsed: DeviceId = v["device_id_text"].as_str().unwrap().parse().unwrap();
        assert_eq!(parsed, id.device_id());
        assert_eq!(fingerprint(&id.device_id()), v["fingerprint"]);

        // Binding signature: ed25519 over domain || device_id || kx_key.
        let mut msg = domain::KX_BINDING.to_vec();
        msg.extend(unhex(&v["device_id"]));
        msg.extend(unhex(&v["kx_key"]));
        let sig = Signature::from_slice(&unhex(&v["kx_binding_sig"])).unwrap();
        vk.verify_strict(&msg, &sig).unwrap();
        assert_eq!(hex(&id.kx_binding()), v["kx_binding_sig"]);

        // Card signature over domain || signed CBOR.
        let mut msg = domain::CARD.to_vec();
        msg.extend(unhex(&v["card_signed_cbor"]));
        let sig = Signature::from_slice(&unhex(&v["card_sig"])).unwrap();
        vk.verify_strict(&msg, &sig).unwrap();

        // Card bytes: ours, ciborium's and the text form agree.
        let cbor_bytes = unhex(&v["card_cbor"]);
        let card = ContactCard::from_cbor(&cbor_bytes).unwrap();
        let made =
            ContactCard::create(&id, v["name"].as_str().unwrap(), u(&v["created_ms"])).unwrap();
        assert_eq!(made, card);
        assert_eq!(made.to_cbor(), cbor_bytes);
        assert_eq!(made.signed_bytes(), unhex(&v["card_signed_cbor"]));
        assert_eq!(made.to_text(), v["card_text"]);
        assert_eq!(
            ContactCard::from_text(v["card_text"].as_str().unwrap()).unwrap(),
            card
        );
        let value = ciborium_round_trip(&cbor_bytes);
        let a = ci_array(&value);
        assert_eq!(a.len(), 9);
        assert_eq!(ci_u64(&a[0]), 1);
        assert_eq!(ci_bytes(&a[1]), card.device_id.as_bytes());
        assert_eq!(ci_bytes(&a[2]), card.kx_key.as_bytes());
        assert_eq!(ci_bytes(&a[3]), card.kx_binding_sig);
        assert_eq!(a[4], ciborium::Value::Text(card.name.clone()));
        assert_eq!(ci_u64(&a[5]), card.created_ms);
        assert_eq!(ci_u64(&a[6]), card.prekey_id as u64);
        assert_eq!(ci_bytes(&a[7]), card.prekey.as_bytes());
        assert_eq!(ci_bytes(&a[8]), card.card_sig);
        // The signed array is the card array minus the signature, head 0x88.
        let signed_value = ciborium_round_trip(&unhex(&v["card_signed_cbor"]));
        assert_eq!(ci_array(&signed_value), &a[..8]);
    }
}

fn check_events(file: &Value) {
    for v in file["vectors"].as_array().unwrap() {
        let bytes = unhex(&v["cbor"]);
        let ev = Event::decode(&bytes).unwrap();
        assert_eq!(ev.bytes(), &bytes[..]);
        assert_eq!(hex(ev.id().as_bytes()), v["event_id"]);
        assert_eq!(hex(ev.room().as_bytes()), v["room"]);
        assert_eq!(hex(ev.sender().as_bytes()), v["sender"]);
        assert_eq!(ev.seq(), u(&v["seq"]));
        let prev: Vec<Value> = ev
            .prev()
            .iter()
            .map(|p| Value::from(hex(p.as_bytes())))
            .collect();
        assert_eq!(Value::from(prev), v["prev"]);
        assert_eq!(ev.origin_ts_ms(), u(&v["origin_ts_ms"]));
        assert_eq!(ev.expires_ms(), u(&v["expires_ms"]));
        assert_eq!(ev.kind().to_u64(), u(&v["kind"]));
        assert_eq!(hex(ev.payload()), v["payload"]);

        // Re-signing the fields reproduces the bytes (ed25519 is deterministic).
        let seed: [u8; 32] = unhex(&v["sender_seed"]).try_into().unwrap();
        let id = Identity::from_seed(&seed);
        let again = ev.fields().clone().sign(&id).unwrap();
        assert_eq!(again.bytes(), &bytes[..]);
        assert_eq!(again.fields().signing_bytes(), unhex(&v["signed_cbor"]));

        // Independent recomputation of digest, signature check and ID.
        let signed = unhex(&v["signed_cbor"]);
        let digest = digest_of(&signed);
        assert_eq!(hex(&digest), v["digest"]);
        let vk = VerifyingKey::from_bytes(&unhex(&v["sender"]).try_into().unwrap()).unwrap();
        let sig_bytes = unhex(&v["signature"]);
        let sig = Signature::from_slice(&sig_bytes).unwrap();
        let mut msg = domain::EVENT_SIG.to_vec();
        msg.extend_from_slice(&digest);
        vk.verify_strict(&msg, &sig).unwrap();
        let id_hash: [u8; 32] = Sha256::new()
            .chain_update(domain::EVENT_ID)
            .chain_update(digest)
            .chain_update(&sig_bytes)
            .finalize()
            .into();
        assert_eq!(hex(&id_hash), v["event_id"]);

        // ciborium: same bytes, same structure.
        let value = ciborium_round_trip(&bytes);
        let a = ci_array(&value);
        assert_eq!(a.len(), 10);
        assert_eq!(ci_u64(&a[0]), 1);
        assert_eq!(ci_bytes(&a[1]), ev.room().as_bytes());
        assert_eq!(ci_bytes(&a[2]), ev.sender().as_bytes());
        assert_eq!(ci_u64(&a[3]), ev.seq());
        let cprev: Vec<&[u8]> = ci_array(&a[4]).iter().map(ci_bytes).collect();
        let oprev: Vec<&[u8]> = ev.prev().iter().map(|p| &p.as_bytes()[..]).collect();
        assert_eq!(cprev, oprev);
        assert_eq!(ci_u64(&a[5]), ev.origin_ts_ms());
        assert_eq!(ci_u64(&a[6]), ev.expires_ms());
        assert_eq!(ci_u64(&a[7]), ev.kind().to_u64());
        assert_eq!(ci_bytes(&a[8]), ev.payload());
        assert_eq!(ci_bytes(&a[9]), ev.signature());
        let signed_value = ciborium_round_trip(&signed);
        assert_eq!(ci_array(&signed_value), &a[..9]);
    }
}

/// Runs one invalid vector through its decoder and returns the error class.
pub fn invalid_class(v: &Value) -> String {
    let decoder = v["decoder"].as_str().unwrap();
    if decoder == "card_text" {
        return ContactCard::from_text(v["input_text"].as_str().unwrap())
            .expect_err("vector must be rejected")
            .class()
            .to_owned();
    }
    let input = unhex(&v["input"]);
    let key = || -> [u8; 32] { input.clone().try_into().unwrap() };
    match decoder {
        "cbor" => cbor::validate(&input, MAX_CBOR_DEPTH).unwrap_err().class(),
        "event" => Event::decode(&input).unwrap_err().class(),
        "card" => ContactCard::from_cbor(&input).unwrap_err().class(),
        "device_id" => DeviceId::from_bytes(&key()).unwrap_err().class(),
        "agreement_key" => AgreementKey::from_bytes(&key()).unwrap_err().class(),
        other => panic!("unknown decoder {other}"),
    }
    .to_owned()
}

fn check_invalid(file: &Value) {
    let list = file["vectors"].as_array().unwrap();
    assert!(list.len() >= 30);
    for v in list {
        assert_eq!(
            invalid_class(v),
            v["error_class"].as_str().unwrap(),
            "vector {}",
            v["name"]
        );
    }
    // ciborium reads the non-minimal integer leniently; re-encoding shows it
    // was not canonical, which is why our reader must reject it.
    let value: ciborium::Value = ciborium::from_reader(&[0x18u8, 0x05][..]).unwrap();
    let mut out = Vec::new();
    ciborium::into_writer(&value, &mut out).unwrap();
    assert_eq!(out, [0x05]);
}

fn file_for(name: &str, generated: &Value) -> Value {
    let path = vectors_dir().join(name);
    if std::env::var_os("MESHRELAY_REGEN_VECTORS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(vectors_dir()).unwrap();
        let mut text = serde_json::to_string_pretty(generated).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with MESHRELAY_REGEN_VECTORS=1)",
            path.display()
        )
    });
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        &file, generated,
        "{name} differs from what the code generates (regenerate with MESHRELAY_REGEN_VECTORS=1 and review the diff)"
    );
    file
}

#[test]
fn identity_vectors() {
    check_identity(&file_for("identity.json", &gen_identity()));
}

#[test]
fn event_vectors() {
    check_events(&file_for("events.json", &gen_events()));
}

#[test]
fn invalid_vectors() {
    check_invalid(&file_for("invalid.json", &gen_invalid()));
}

/// Loads the committed invalid vectors (used by the CLI tests).
pub fn load_invalid() -> Vec<Value> {
    let text = std::fs::read_to_string(vectors_dir().join("invalid.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    file["vectors"].as_array().unwrap().clone()
}

/// Loads the committed valid event vectors' CBOR (used by the CLI tests).
pub fn load_event_bytes() -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(vectors_dir().join("events.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    file["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| unhex(&v["cbor"]))
        .collect()
}
