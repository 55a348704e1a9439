//! Runs the reconciliation test vector `protocol-spec/vectors/reconcile.json`.
//!
//! Set `MESHRELAY_REGEN_VECTORS=1` to regenerate the file after a deliberate
//! protocol change.

use std::path::Path;

use meshrelay::event::{EventId, RoomId};
use meshrelay::reconcile::riblt::{Encoder, IndexGen};
use meshrelay::reconcile::{Item, Message, Part, Session, estimate, item_hash, set_fingerprint};
use meshrelay::wire::Frame;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn item(i: u64) -> Item {
    let id: [u8; 32] = Sha256::digest(format!("meshrelay reconcile vector item {i}")).into();
    Item {
        ts_ms: 1_780_000_000_000 + i * 1000,
        id: EventId(id),
    }
}

fn items_json(items: &[Item]) -> Value {
    items
        .iter()
        .map(|i| json!({"ts_ms": i.ts_ms, "id": hex::encode(i.id.0)}))
        .collect()
}

fn compute() -> Value {
    let common: Vec<Item> = (0..20).map(item).collect();
    let mut a = common.clone();
    a.extend((20..23).map(item));
    let mut b = common;
    b.extend((23..25).map(item));
    let salt = *b"vectors!";
    let room = RoomId([0x11; 16]);
    let hashes: Vec<_> = a.iter().map(|i| item_hash(&salt, i)).collect();
    let first_key = hashes[0].short;
    let mut g = IndexGen::new(first_key);
    let mut seq = vec![g.idx];
    for _ in 0..11 {
        g.advance();
        seq.push(g.idx);
    }
    let symbols = Encoder::new(hashes.iter().map(|h| h.short)).next_symbols(16);
    let sketch = estimate::sketch(&hashes);

    // The full session, as frames on the wire (session number 1).
    let mut transcript = Vec::new();
    let (mut ini, init) = Session::initiate(room, a.clone(), salt);
    let frame = |msg| hex::encode(Frame::Reconcile { session: 1, msg }.encode());
    transcript.push(json!({"from": "initiator", "frame": frame(init.clone())}));
    let (mut resp, mut msgs) = Session::respond(b.clone(), &init).unwrap();
    let mut to_ini = true;
    while !msgs.is_empty() {
        let mut next = Vec::new();
        for m in msgs {
            let from = if to_ini { "responder" } else { "initiator" };
            transcript.push(json!({"from": from, "frame": frame(m.clone())}));
            let s = if to_ini { &mut ini } else { &mut resp };
            next.extend(s.handle(m).unwrap());
        }
        msgs = next;
        to_ini = !to_ini;
    }
    let oa = ini.outcome().unwrap();
    let ob = resp.outcome().unwrap();

    // A session over a slice (`Reconcile/InitPart`, tag 23): the items of
    // set A whose event ID starts with the 3 bits 0b101.
    let part = Part { bits: 3, prefix: 5 };
    let in_part: Vec<Item> = a.iter().copied().filter(|i| part.contains(i)).collect();
    let (_, init_part) = Session::initiate_part(room, part, in_part.clone(), salt);
    let init_part_frame = Frame::Reconcile {
        session: 2,
        msg: init_part.clone(),
    }
    .encode();
    assert_eq!(
        Frame::decode(&init_part_frame).unwrap(),
        Frame::Reconcile {
            session: 2,
            msg: init_part
        }
    );
    // Slices out of range are malformed frames: 9 bits, and a prefix of
    // 2^bits.
    let bad = |part: Part| {
        let Message::Init {
            salt,
            count,
            fingerprint,
            ..
        } = Session::initiate_part(room, Part::WHOLE, in_part.clone(), *b"vectors!").1
        else {
            unreachable!()
        };
        let msg = Message::Init {
            room,
            part,
            salt,
            count,
            fingerprint,
        };
        hex::encode(Frame::Reconcile { session: 2, msg }.encode())
    };
    let invalid_parts = vec![
        bad(Part { bits: 9, prefix: 0 }),
        bad(Part { bits: 2, prefix: 4 }),
    ];

    json!({
        "description": "Reconciliation of two small sets (protocol-spec/reconcile.md). All byte strings are lowercase hex; frames are complete wire frames (protocol-spec/wire.md) without the packet header.",
        "salt": hex::encode(salt),
        "room": hex::encode(room.0),
        "set_a": items_json(&a),
        "set_b": items_json(&b),
        "fingerprint_a": hex::encode(set_fingerprint(&a)),
        "fingerprint_b": hex::encode(set_fingerprint(&b)),
        "item_hashes_a": hashes.iter().map(|h| json!({
            "short": format!("{:016x}", h.short),
            "signs": format!("{:016x}", h.signs),
        })).collect::<Vec<_>>(),
        "index_sequence_of_first_short": seq,
        "symbols_a_0_to_15": symbols.iter().map(|s| hex::encode(s.to_bytes())).collect::<Vec<_>>(),
        "sketch_a": sketch,
        "transcript": transcript,
        "initiator_peer_lacks": items_json(&oa.peer_lacks),
        "responder_peer_lacks": items_json(&ob.peer_lacks),
        "initiator_i_lack": oa.i_lack.iter().map(|s| format!("{s:016x}")).collect::<Vec<_>>(),
        "responder_i_lack": ob.i_lack.iter().map(|s| format!("{s:016x}")).collect::<Vec<_>>(),
        "init_part": {
            "description": "Init over the slice bits=3, prefix=0b101 of set_a (Reconcile/InitPart, tag 23, session 2); part on the wire = bits << 32 | prefix; count and fingerprint cover only the items in the slice",
            "bits": part.bits,
            "prefix": part.prefix,
            "wire_part": part.to_u64(),
            "items_in_part": items_json(&in_part),
            "fingerprint": hex::encode(set_fingerprint(&in_part)),
            "frame": hex::encode(&init_part_frame),
        },
        "init_part_invalid_frames": invalid_parts,
    })
}

#[test]
fn reconcile_vector() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-spec/vectors/reconcile.json");
    let got = compute();
    if std::env::var_os("MESHRELAY_REGEN_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in want.as_object().unwrap().keys() {
        assert_eq!(got[key], want[key], "vector field {key}");
    }
    assert_eq!(got, want);
    // The vector's sets differ in 3 + 2 items and each side learns its part.
    assert_eq!(want["initiator_peer_lacks"].as_array().unwrap().len(), 3);
    assert_eq!(want["responder_peer_lacks"].as_array().unwrap().len(), 2);
    // The slice vector decodes to an InitPart over the items of its slice,
    // and the out-of-range slices are rejected as malformed.
    let frame = hex::decode(want["init_part"]["frame"].as_str().unwrap()).unwrap();
    let Frame::Reconcile {
        msg: Message::Init { part, count, .. },
        ..
    } = Frame::decode(&frame).unwrap()
    else {
        panic!("the InitPart vector is not an Init");
    };
    assert_eq!(
        part.to_u64(),
        want["init_part"]["wire_part"].as_u64().unwrap()
    );
    assert_eq!(
        count as usize,
        want["init_part"]["items_in_part"].as_array().unwrap().len()
    );
    for bad in want["init_part_invalid_frames"].as_array().unwrap() {
        let bytes = hex::decode(bad.as_str().unwrap()).unwrap();
        assert!(Frame::decode(&bytes).is_err(), "accepted {bad}");
    }
}
