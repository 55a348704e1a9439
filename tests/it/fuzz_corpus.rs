//! Replays the committed fuzz corpora (`fuzz/corpus/*`) through the same
//! library entry points the fuzz targets call.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

#[test]
fn event_decode_corpus_replays() {
    let inputs = corpus("event_decode");
    assert!(inputs.len() >= 10, "seed corpus is missing");
    let mut accepted = 0;
    for (_path, bytes) in &inputs {
        meshrelay::event::fuzz_decode(bytes);
        if meshrelay::event::Event::decode(bytes).is_ok() {
            accepted += 1;
        }
    }
    // The seed corpus holds valid events as well as invalid ones.
    assert!(accepted >= 3, "only {accepted} valid events in the corpus");
}

#[test]
fn ble_session_corpus_replays() {
    let inputs = corpus("ble_session");
    assert!(inputs.len() >= 10, "seed corpus is missing");
    let mut delivered = 0;
    for (_path, bytes) in &inputs {
        delivered += meshrelay::transport::ble::session::fuzz_session(bytes);
    }
    // The seeds hold the vectors' sealed datagram (fixed keys) at MTU 23,
    // 185 and 512: each opens in the fuzz target's established session.
    assert!(delivered >= 3, "only {delivered} datagrams opened");
}

/// The decoder targets added for issue 15, with the minimum number of seeds
/// each corpus must hold and of them the decoder must accept.
type Entry = fn(&[u8]) -> bool;

/// (target, entry point, seeds that must be accepted).
const DECODER_TARGETS: &[(&str, Entry, usize)] = &[
    ("bundle", meshrelay::fuzz::bundle, 2),
    ("membership_content", meshrelay::fuzz::membership_content, 6),
    ("key_share", meshrelay::fuzz::key_share, 3),
    ("room_keys", meshrelay::fuzz::room_keys, 2),
    ("homeserver_bundle", meshrelay::fuzz::homeserver_bundle, 1),
    ("card", meshrelay::fuzz::card, 2),
];

#[test]
fn decoder_corpora_replay() {
    for (target, entry, min_ok) in DECODER_TARGETS {
        let inputs = corpus(target);
        assert!(inputs.len() >= 5, "{target}: seed corpus is missing");
        let accepted = inputs.iter().filter(|(_, b)| entry(b)).count();
        assert!(
            accepted >= *min_ok,
            "{target}: only {accepted} seeds accepted"
        );
        assert!(accepted < inputs.len(), "{target}: no invalid seeds");
    }
}

/// Writes the seed corpora of [`DECODER_TARGETS`] from the test vectors and
/// fixed seeds: `cargo test --test it write_decoder_seed_corpora -- --ignored`.
#[test]
#[ignore = "regenerates fuzz/corpus/*; run by hand"]
fn write_decoder_seed_corpora() {
    use meshrelay::crypto::key_share::{PrekeyRing, PrekeyUpdate, Recipient, seal_shares};
    use meshrelay::crypto::sender_chain::{InboundChain, OutboundChain};
    use meshrelay::crypto::{ContactCard, Identity};
    use meshrelay::event::{Event, RoomId};
    use meshrelay::room::{Content, Membership, RoomKeys};
    use rand::SeedableRng;

    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let events: Vec<Event> = crate::vectors::load_event_bytes()
        .iter()
        .filter_map(|b| Event::decode(b).ok())
        .collect();
    assert!(events.len() >= 2);
    let t0 = 1_750_000_000_000;
    let ana = Identity::from_seed(&[1; 32]);
    let bo = Identity::from_seed(&[2; 32]);
    let ana_card = ContactCard::create(&ana, "Ana", t0).unwrap();
    let bo_card = ContactCard::create(&bo, "Bo", t0).unwrap();
    let room = RoomId([7; 16]);
    let junk = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 37 + 11) as u8).collect() };
    let truncated = |b: &[u8]| b[..b.len() / 2].to_vec();

    let bundle_all = meshrelay::bundle::export(events.iter(), t0);
    let bundle_one = meshrelay::bundle::export(events.iter().take(1), t0);
    let bundle_none = meshrelay::bundle::export(std::iter::empty(), t0);
    let mut bundle_bad_magic = bundle_one.clone();
    bundle_bad_magic[3] ^= 0x20;

    let m_create = Membership::Create {
        card: ana_card.clone(),
        nonce: [3; 16],
    }
    .to_bytes();
    let m_invite = Membership::Invite {
        card: bo_card.clone(),
    }
    .to_bytes();
    let m_remove = Membership::Remove {
        target: bo.device_id(),
    }
    .to_bytes();
    let m_promote = Membership::Promote {
        target: bo.device_id(),
    }
    .to_bytes();
    let m_leave = Membership::Leave.to_bytes();
    let secret = meshrelay::crypto::roster::RosterSecret::generate(&mut rng);
    let sealed = |card: &ContactCard, rng: &mut rand::rngs::StdRng| {
        meshrelay::crypto::roster::SealedCard::seal(&secret, &room, card, rng).unwrap()
    };
    let m_create_sealed = Membership::CreateSealed {
        creator: ana.device_id(),
        nonce: [3; 16],
        card: sealed(&ana_card, &mut rng),
    }
    .to_bytes();
    let m_invite_sealed = Membership::InviteSealed {
        invitee: bo.device_id(),
        card: sealed(&bo_card, &mut rng),
        secret: meshrelay::crypto::roster::SealedSecret::seal(
            std::slice::from_ref(&secret),
            &room,
            &ana.device_id(),
            &Recipient {
                device: bo.device_id(),
                prekey_id: bo_card.prekey_id,
                prekey: bo_card.prekey,
            },
            &mut rng,
        )
        .unwrap(),
    }
    .to_bytes();
    let c_text = Content::Text("hello".into()).to_bytes();
    let c_name = Content::RoomName("ops".into()).to_bytes();

    let chain = OutboundChain::new(room, t0, &mut rng);
    let ring = PrekeyRing::from_identity(&bo, t0);
    let to = [Recipient {
        device: bo.device_id(),
        prekey_id: bo_card.prekey_id,
        prekey: bo_card.prekey,
    }];
    let sealed = seal_shares(&room, &ana.device_id(), &chain.share(), &to, &mut rng).unwrap();
    let ks = sealed[0].to_bytes();
    let upd = PrekeyUpdate {
        prekey_id: ring.current_id() + 1,
        prekey: bo_card.prekey,
    }
    .to_bytes();
    let share = chain.share().to_bytes().to_vec();

    let mut keys = RoomKeys::new(room);
    let empty_keys = keys.to_bytes().to_vec();
    keys.outbound = Some(OutboundChain::new(room, t0, &mut rng));
    keys.install(InboundChain::from_share(
        room,
        bo.device_id(),
        &chain.share(),
    ));
    let full_keys = keys.to_bytes().to_vec();

    let hs = meshrelay::transport::homeserver::bundle::Bundle::new(events.clone()).unwrap();
    let hs_bytes = hs.encoded().to_vec();
    let hs_text = serde_json::to_value(hs.content()).unwrap()["envelopes"]
        .as_str()
        .unwrap()
        .as_bytes()
        .to_vec();

    let card_cbor = ana_card.to_cbor();
    let card_text = ana_card.to_text().into_bytes();
    let mut card_bad_sig = card_cbor.clone();
    let last = card_bad_sig.len() - 1;
    card_bad_sig[last] ^= 1;

    let sets: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "bundle",
            vec![
                bundle_all.clone(),
                bundle_one,
                bundle_none,
                bundle_bad_magic,
                truncated(&bundle_all),
                junk(64),
            ],
        ),
        (
            "membership_content",
            vec![
                m_create.clone(),
                m_invite,
                m_remove,
                m_promote,
                m_leave,
                c_text,
                c_name,
                truncated(&m_create),
                junk(40),
                m_create_sealed.clone(),
                m_invite_sealed.clone(),
                truncated(&m_invite_sealed),
            ],
        ),
        (
            "key_share",
            vec![
                ks.clone(),
                upd,
                share.clone(),
                truncated(&ks),
                truncated(&share),
                junk(48),
            ],
        ),
        (
            "room_keys",
            vec![
                empty_keys,
                full_keys.clone(),
                truncated(&full_keys),
                junk(80),
                vec![0x85, 0x02],
            ],
        ),
        (
            "homeserver_bundle",
            vec![
                hs_bytes.clone(),
                hs_text,
                truncated(&hs_bytes),
                junk(32),
                bundle_all,
            ],
        ),
        (
            "card",
            vec![
                card_cbor,
                card_text,
                card_bad_sig,
                b"MRC1:AAAA".to_vec(),
                junk(100),
            ],
        ),
    ];
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, seeds) in sets {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
        }
        assert_eq!(corpus(target).len(), seeds.len(), "{target}");
    }
}
