//! Runs the frame test vector `protocol-spec/vectors/frames.json`: one
//! canonical encoding per frame type (`protocol-spec/wire.md`), each
//! fragmented at a small MTU, and frames a decoder must reject.
//!
//! Set `MESHRELAY_REGEN_VECTORS=1` to regenerate the file after a deliberate
//! protocol change.

use std::path::Path;

use meshrelay::event::{EventId, RoomId};
use meshrelay::reconcile::riblt::Symbol;
use meshrelay::reconcile::{Message, Part};
use meshrelay::wire::{CloseReason, Fragmenter, Frame, RoomToken, device_token, room_token};

/// The two Hello nonces of the vectors' link: the initiator's (lower), the
/// responder's.
const NONCES: (u64, u64) = (0x0123_4567_89ab_cdef, 0x7edc_ba98_7654_3210);
use serde_json::{Value, json};

fn room(b: u8) -> RoomId {
    RoomId([b; 16])
}

fn id(b: u8) -> EventId {
    EventId([b; 32])
}

/// One frame of every type, named as in the spec's frame table.
fn frames() -> Vec<(&'static str, Frame)> {
    let (i, r) = NONCES;
    let t = |b: u8| room_token(&room(b), i, r);
    let mut held = vec![t(0x11), t(0x22), t(0x33)];
    held.sort();
    let recon = |msg| Frame::Reconcile { session: 5, msg };
    vec![
        (
            "Hello",
            Frame::Hello {
                max_frame_bytes: 65_536,
                features: 0,
                nonce: NONCES.0,
            },
        ),
        (
            "Close",
            Frame::Close {
                reason: CloseReason::OverBudget,
                detail: "intake budget exceeded".into(),
            },
        ),
        (
            "Members",
            Frame::Members {
                tokens: vec![t(0x22)],
            },
        ),
        (
            "Rooms",
            Frame::Rooms {
                held,
                members: vec![t(0x22)],
                spraying: vec![t(0x33)],
                device: Some(t(0x66)),
            },
        ),
        (
            "Offer",
            Frame::Offer {
                rooms: vec![room(0x44), room(0x55)],
            },
        ),
        (
            "Reconcile/Init",
            recon(Message::Init {
                room: room(0x22),
                part: Part::WHOLE,
                salt: *b"saltsalt",
                count: 1000,
                fingerprint: [0xf0; 16],
            }),
        ),
        (
            "Reconcile/Sketch",
            recon(Message::Sketch {
                count: 998,
                counters: (0..48u16).collect(),
            }),
        ),
        (
            "Reconcile/Symbols",
            recon(Message::Symbols {
                start: 0,
                symbols: vec![
                    Symbol {
                        key: 0x1111_2222_3333_4444,
                        check: 0x5555_6666,
                    },
                    Symbol { key: 0, check: 0 },
                ],
            }),
        ),
        ("Reconcile/More", recon(Message::More { count: 16 })),
        ("Reconcile/Equal", recon(Message::Equal)),
        (
            "Reconcile/Decoded",
            recon(Message::Decoded {
                you_lack: vec![0xaaaa_aaaa_aaaa_aaaa],
                i_lack: vec![0xbbbb_bbbb_bbbb_bbbb, 0xcccc_cccc_cccc_cccc],
            }),
        ),
        ("Reconcile/Failed", recon(Message::Failed { reason: 1 })),
        (
            "Reconcile/InitPart",
            recon(Message::Init {
                room: room(0x22),
                part: Part { bits: 2, prefix: 3 },
                salt: *b"saltsalt",
                count: 250,
                fingerprint: [0x0f; 16],
            }),
        ),
        (
            "Events",
            Frame::Events {
                room: room(0x22),
                events: vec![vec![0xa1, 0x01, 0x02]],
            },
        ),
        (
            "IHave",
            Frame::IHave {
                room: room(0x22),
                ids: vec![id(1), id(2)],
            },
        ),
        (
            "Want",
            Frame::Want {
                room: room(0x22),
                ids: vec![id(3)],
            },
        ),
        ("Prune", Frame::Prune { room: room(0x22) }),
        (
            "Graft",
            Frame::Graft {
                room: room(0x22),
                ids: vec![id(4)],
            },
        ),
        (
            "Spray",
            Frame::Spray {
                room: room(0x22),
                copies: vec![8],
                events: vec![vec![0xa1, 0x01, 0x02]],
            },
        ),
    ]
}

/// Frames that decode to nothing, with why.
fn invalid() -> Vec<(&'static str, Vec<u8>)> {
    // One held token, a member: `… 44 <token> 41 80 40 40`. The member
    // bitmap's byte becomes a bit past the held tokens, then a zero byte.
    let bitmap = |byte: u8| {
        let mut b = Frame::Rooms {
            held: vec![RoomToken([1; 4])],
            members: vec![RoomToken([1; 4])],
            spraying: vec![],
            device: None,
        }
        .encode();
        assert_eq!(b[8..10], [0x41, 0x80]);
        b[9] = byte;
        b
    };
    let descending = Frame::Rooms {
        held: vec![RoomToken([2; 4]), RoomToken([1; 4])],
        members: vec![],
        spraying: vec![],
        device: None,
    }
    .encode();
    // A device token of 3 bytes: the last field's head says 3, one byte
    // is dropped.
    let mut short_device = Frame::Rooms {
        held: vec![],
        members: vec![],
        spraying: vec![],
        device: Some(RoomToken([3; 4])),
    }
    .encode();
    let n = short_device.len();
    short_device[n - 5] = 0x43;
    short_device.pop();
    let empty_offer = Frame::Offer { rooms: vec![] }.encode();
    let spray = |copies: u8| {
        Frame::Spray {
            room: room(0x22),
            copies: vec![copies],
            events: vec![vec![0xa1, 0x01, 0x02]],
        }
        .encode()
    };
    let part = |bits: u8, prefix: u32| {
        Frame::Reconcile {
            session: 5,
            msg: Message::Init {
                room: room(0x22),
                part: Part { bits, prefix },
                salt: *b"saltsalt",
                count: 1,
                fingerprint: [0; 16],
            },
        }
        .encode()
    };
    let mut long_tag = Frame::Members {
        tokens: vec![RoomToken([0x22; 4])],
    }
    .encode();
    // Tag 2 in a two-byte head (0x18 0x02): not the shortest form.
    assert_eq!(long_tag[2], 0x02);
    long_tag.splice(2..3, [0x18, 0x02]);
    vec![
        (
            "a Rooms whose member bitmap sets a bit past the held tokens",
            bitmap(0x40),
        ),
        (
            "a Rooms whose member bitmap ends in a zero byte",
            bitmap(0x00),
        ),
        ("a Rooms whose tokens are not ascending", descending),
        ("a Rooms whose device token is 3 bytes", short_device),
        ("an Offer of no room", empty_offer),
        (
            "a version 1 Hello (room IDs in clear)",
            hex::decode("8601001a00010000001b0123456789abcdef5011111111111111111111111111111111")
                .unwrap(),
        ),
        ("a Spray handing over 0 copies", spray(0)),
        (
            "a Spray handing over more than MAX_COPY_BUDGET copies",
            spray(129),
        ),
        ("an InitPart of 9 bits", part(9, 0)),
        ("an InitPart whose prefix is 2^bits", part(2, 4)),
        ("a type tag in a non-shortest head", long_tag),
        ("an unknown type tag (5)", vec![0x82, 0x02, 0x05]),
        ("an empty byte string", vec![]),
    ]
}

fn compute() -> Value {
    let mut fragmenter = Fragmenter::new();
    let valid: Vec<Value> = frames()
        .into_iter()
        .map(|(name, f)| {
            let bytes = f.encode();
            let packets = fragmenter
                .fragment(&bytes, 23)
                .expect("fragments at MTU 23");
            json!({
                "name": name,
                "frame": hex::encode(&bytes),
                "packets_at_mtu_23": packets.iter().map(hex::encode).collect::<Vec<_>>(),
            })
        })
        .collect();
    let invalid: Vec<Value> = invalid()
        .into_iter()
        .map(|(why, bytes)| json!({"why": why, "frame": hex::encode(bytes)}))
        .collect();
    let tokens: Vec<Value> = [(0x11, NONCES), (0x11, (NONCES.1, NONCES.0)), (0x22, NONCES)]
        .into_iter()
        .map(|(b, (i, r))| {
            json!({
                "room": hex::encode(room(b).0),
                "initiator_nonce": format!("{i:016x}"),
                "responder_nonce": format!("{r:016x}"),
                "token": hex::encode(room_token(&room(b), i, r).0),
            })
        })
        .collect();
    let device = meshrelay::crypto::Identity::from_seed(&[1; 32]).device_id();
    let device_tokens: Vec<Value> = [NONCES, (NONCES.1, NONCES.0)]
        .into_iter()
        .map(|(i, r)| {
            json!({
                "device": hex::encode(device.as_bytes()),
                "initiator_nonce": format!("{i:016x}"),
                "responder_nonce": format!("{r:016x}"),
                "token": hex::encode(device_token(&device, i, r).0),
            })
        })
        .collect();
    json!({
        "description": "One canonical encoding per frame type (protocol-spec/wire.md, frame table), with the packets a fresh Fragmenter makes of it at MTU 23 (fragment IDs count up across the list), and frames every decoder must reject. Hex, lowercase. room_tokens: SipHash-2-4 room tokens (wire.md, \"Room tokens\"), nonces as 8-byte big-endian hex, tokens as the first 4 of the 64-bit SipHash output's little-endian bytes. device_tokens: the same keyed by the device ID's first half, its second half after the device-token label (wire.md, \"Invitees\").",
        "frames": valid,
        "invalid": invalid,
        "room_tokens": tokens,
        "device_tokens": device_tokens,
    })
}

#[test]
fn frame_vectors() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-spec/vectors/frames.json");
    let got = compute();
    if std::env::var_os("MESHRELAY_REGEN_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(got, want);
    // Every valid frame decodes and re-encodes to the same bytes; every
    // invalid one is rejected; every frame type appears.
    let decode = |v: &Value| hex::decode(v["frame"].as_str().unwrap()).unwrap();
    for v in want["frames"].as_array().unwrap() {
        let bytes = decode(v);
        let f = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", v["name"]));
        assert_eq!(f.encode(), bytes, "{}", v["name"]);
    }
    for v in want["invalid"].as_array().unwrap() {
        assert!(Frame::decode(&decode(v)).is_err(), "accepted: {}", v["why"]);
    }
    assert_eq!(want["frames"].as_array().unwrap().len(), 19);
    for v in want["room_tokens"].as_array().unwrap() {
        let hex16 = |k: &str| u64::from_str_radix(v[k].as_str().unwrap(), 16).unwrap();
        let room = RoomId(
            hex::decode(v["room"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
        );
        let token = room_token(&room, hex16("initiator_nonce"), hex16("responder_nonce"));
        assert_eq!(hex::encode(token.0), v["token"].as_str().unwrap());
    }
    // Straight from the SipHash crate, as the spec writes it: the first half
    // of the device ID keys it, the label and the second half come first.
    for v in want["device_tokens"].as_array().unwrap() {
        use std::hash::Hasher;
        let id = hex::decode(v["device"].as_str().unwrap()).unwrap();
        let key: [u8; 16] = id[..16].try_into().unwrap();
        let mut h = siphasher::sip::SipHasher24::new_with_key(&key);
        h.write(meshrelay::crypto::domain::DEVICE_TOKEN);
        h.write(&id[16..]);
        for k in ["initiator_nonce", "responder_nonce"] {
            h.write(&hex::decode(v[k].as_str().unwrap()).unwrap());
        }
        assert_eq!(
            hex::encode(&h.finish().to_le_bytes()[..4]),
            v["token"].as_str().unwrap()
        );
    }
}
