//! proptest round trips for every wire type: CBOR items, events, contact
//! cards, device IDs, room and event IDs, and the identity file.

use meshrelay::cbor::{self, Reader, Writer};
use meshrelay::crypto::{ContactCard, DeviceId, Identity};
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::limits::{
    MAX_CBOR_DEPTH, MAX_EVENT_BYTES, MAX_EVENT_LIFETIME_MS, MAX_NAME_BYTES, MAX_PAYLOAD_BYTES,
    MAX_PREV_EVENTS,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

/// A CBOR item within the deterministic subset.
#[derive(Debug, Clone)]
enum Item {
    Uint(u64),
    Bytes(Vec<u8>),
    Text(String),
    Bool(bool),
    Null,
    Array(Vec<Item>),
    Map(Vec<(u64, Item)>),
}

fn item() -> impl Strategy<Value = Item> {
    let leaf = prop_oneof![
        any::<u64>().prop_map(Item::Uint),
        (0u64..300).prop_map(Item::Uint),
        vec(any::<u8>(), 0..300).prop_map(Item::Bytes),
        ".{0,40}".prop_map(Item::Text),
        any::<bool>().prop_map(Item::Bool),
        Just(Item::Null),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Item::Array),
            btree_map(any::<u64>(), inner, 0..6).prop_map(|m| Item::Map(m.into_iter().collect())),
        ]
    })
}

fn write(w: &mut Writer, it: &Item) {
    match it {
        Item::Uint(v) => {
            w.u64(*v);
        }
        Item::Bytes(b) => {
            w.bytes(b);
        }
        Item::Text(s) => {
            w.text(s);
        }
        Item::Bool(b) => {
            w.bool(*b);
        }
        Item::Null => {
            w.null();
        }
        Item::Array(a) => {
            w.array(a.len());
            for x in a {
                write(w, x);
            }
        }
        Item::Map(m) => {
            w.map(m.len());
            for (k, x) in m {
                w.u64(*k);
                write(w, x);
            }
        }
    }
}

/// Reads `it`'s shape back and checks every value.
fn read_back(r: &mut Reader<'_>, it: &Item) {
    match it {
        Item::Uint(v) => assert_eq!(r.u64().unwrap(), *v),
        Item::Bytes(b) => assert_eq!(r.bytes().unwrap(), &b[..]),
        Item::Text(s) => assert_eq!(r.text().unwrap(), s),
        Item::Bool(b) => assert_eq!(r.bool().unwrap(), *b),
        Item::Null => assert!(r.null().unwrap()),
        Item::Array(a) => {
            assert_eq!(r.array().unwrap(), a.len());
            for x in a {
                read_back(r, x);
            }
        }
        Item::Map(m) => {
            assert_eq!(r.map().unwrap(), m.len());
            for (k, x) in m {
                assert_eq!(r.u64().unwrap(), *k);
                read_back(r, x);
            }
        }
    }
}

fn depth(it: &Item) -> usize {
    match it {
        Item::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Item::Map(m) => 1 + m.iter().map(|(_, x)| depth(x)).max().unwrap_or(0),
        _ => 0,
    }
}

fn seed() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn unsigned_event() -> impl Strategy<Value = ([u8; 32], UnsignedEvent)> {
    (
        seed(),
        any::<[u8; 16]>(),
        any::<u64>(),
        vec(any::<[u8; 32]>(), 0..=MAX_PREV_EVENTS),
        0u64..u64::MAX / 2,
        0..=MAX_EVENT_LIFETIME_MS,
        any::<u64>(),
        prop_oneof![
            vec(any::<u8>(), 0..512),
            vec(any::<u8>(), MAX_PAYLOAD_BYTES - 8..=MAX_PAYLOAD_BYTES)
        ],
    )
        .prop_map(|(s, room, seq, prev, origin, life, kind, payload)| {
            let id = Identity::from_seed(&s);
            let ev = UnsignedEvent {
                room: RoomId(room),
                sender: id.device_id(),
                seq,
                prev: prev.into_iter().map(EventId).collect(),
                origin_ts_ms: origin,
                expires_ms: origin + life,
                // Other(v) for any v, including values of named kinds
                kind: if kind % 2 == 0 {
                    EventKind::Other(kind % 8)
                } else {
                    EventKind::from_u64(kind)
                },
                payload,
            };
            (s, ev)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn cbor_items_round_trip_and_agree_with_ciborium(it in item()) {
        let mut w = Writer::new();
        write(&mut w, &it);
        let bytes = w.into_bytes();
        cbor::validate(&bytes, depth(&it)).unwrap();
        if depth(&it) > 0 {
            prop_assert!(cbor::validate(&bytes, depth(&it) - 1).is_err());
        }
        let mut r = Reader::new(&bytes);
        read_back(&mut r, &it);
        r.finish().unwrap();
        let v: ciborium::Value = ciborium::from_reader(&bytes[..]).unwrap();
        let mut again = Vec::new();
        ciborium::into_writer(&v, &mut again).unwrap();
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn whatever_validates_is_canonical_for_ciborium(bytes in vec(any::<u8>(), 0..64)) {
        if cbor::validate(&bytes, MAX_CBOR_DEPTH).is_ok() {
            let v: ciborium::Value = ciborium::from_reader(&bytes[..]).unwrap();
            let mut again = Vec::new();
            ciborium::into_writer(&v, &mut again).unwrap();
            prop_assert_eq!(again, bytes);
        }
    }

    #[test]
    fn events_round_trip((s, ev) in unsigned_event()) {
        let id = Identity::from_seed(&s);
        let signed = ev.clone().sign(&id).unwrap();
        prop_assert!(signed.bytes().len() <= MAX_EVENT_BYTES);
        let back = Event::decode(signed.bytes()).unwrap();
        prop_assert_eq!(&back, &signed);
        prop_assert_eq!(back.id(), signed.id());
        let mut prev = ev.prev.clone();
        prev.sort();
        prev.dedup();
        prop_assert_eq!(back.prev(), &prev[..]);
        prop_assert_eq!(back.payload(), &ev.payload[..]);
        prop_assert_eq!(back.kind(), EventKind::from_u64(ev.kind.to_u64()));
        // Every proper prefix is rejected.
        for cut in [0, 1, signed.bytes().len() / 2, signed.bytes().len() - 1] {
            prop_assert!(Event::decode(&signed.bytes()[..cut]).is_err());
        }
    }

    #[test]
    fn cards_round_trip(s in seed(), name in "\\PC{0,20}", created in any::<u64>()) {
        prop_assume!(name.len() <= MAX_NAME_BYTES);
        let id = Identity::from_seed(&s);
        let card = ContactCard::create(&id, &name, created).unwrap();
        prop_assert_eq!(&ContactCard::from_cbor(&card.to_cbor()).unwrap(), &card);
        prop_assert_eq!(&ContactCard::from_text(&card.to_text()).unwrap(), &card);
        prop_assert_eq!(&ContactCard::from_text(&card.to_text().to_lowercase()).unwrap(), &card);
    }

    #[test]
    fn ids_round_trip_through_text(s in seed(), room in any::<[u8; 16]>(), eid in any::<[u8; 32]>()) {
        let id = Identity::from_seed(&s);
        let text = id.device_id().to_string();
        prop_assert!(text.starts_with("mr1"));
        prop_assert_eq!(text.parse::<DeviceId>().unwrap(), id.device_id());
        prop_assert!(text.to_uppercase().parse::<DeviceId>().is_err());
        prop_assert_eq!(RoomId(room).to_string().parse::<RoomId>().unwrap(), RoomId(room));
        prop_assert_eq!(EventId(eid).to_string().parse::<EventId>().unwrap(), EventId(eid));
    }

    #[test]
    fn device_key_validation_matches_recompression(bytes in any::<[u8; 32]>()) {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let reference = CompressedEdwardsY(bytes)
            .decompress()
            .is_some_and(|p| p.compress().to_bytes() == bytes && !p.is_small_order());
        prop_assert_eq!(DeviceId::from_bytes(&bytes).is_ok(), reference);
    }

    #[test]
    fn identity_file_round_trips(s in seed()) {
        let id = Identity::from_seed(&s);
        let back = Identity::from_secret_bytes(&id.to_secret_bytes()).unwrap();
        prop_assert_eq!(back.device_id(), id.device_id());
        prop_assert_eq!(back.agreement_key(), id.agreement_key());
        prop_assert_eq!(back.prekey().public(), id.prekey().public());
        prop_assert_eq!(back.kx_binding(), id.kx_binding());
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in vec(any::<u8>(), 0..600)) {
        let _ = Event::decode(&bytes);
        let _ = ContactCard::from_cbor(&bytes);
        let _ = Identity::from_secret_bytes(&bytes);
        let _ = meshrelay::inspect::inspect(&bytes);
        meshrelay::event::fuzz_decode(&bytes);
    }
}
