//! Runs the room and encryption test vectors in `protocol-spec/vectors/`
//! (`sender_chain.json`, `key_share.json`, `membership_resolution.json`).
//!
//! Each vector file holds inputs and expected outputs. The test reads the
//! inputs, recomputes every output and compares the whole file. To
//! regenerate after an intended protocol change, run with
//! `MESHRELAY_REGEN_VECTORS=1` and review the diff.

use std::convert::Infallible;

use meshrelay::crypto::key_share::{
    KeySharePayload, PrekeyRing, Recipient, derive_hpke_keypair, open_share, seal_one,
};
use meshrelay::crypto::sender_chain::{
    ChainId, ChainShare, InboundChain, MessagePayload, OutboundChain, message_aad, ratchet_step,
};
use meshrelay::crypto::{ContactCard, DeviceId, Identity};
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::room::{DagError, Inserted, Membership, RoomDag, derive_room_id};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/protocol-spec/vectors/");

/// An RNG that returns fixed bytes (then fails loudly): makes the chain ID,
/// chain key, nonce and HPKE ephemeral key of a vector exact.
pub(crate) struct FixedRng(pub(crate) Vec<u8>);

impl rand_core::TryRng for FixedRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        assert!(dst.len() <= self.0.len(), "fixed RNG exhausted");
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
        Ok(())
    }
}
impl rand_core::TryCryptoRng for FixedRng {}

pub(crate) fn h(b: &[u8]) -> String {
    hex::encode(b)
}

pub(crate) fn unh(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

pub(crate) fn arr<const N: usize>(v: &Value) -> [u8; N] {
    unh(v).try_into().expect("right length")
}

/// Reads the vector file (or, when regenerating, the default inputs),
/// recomputes it with `f`, and compares or writes.
pub(crate) fn run(name: &str, default_inputs: Value, f: impl Fn(&Value) -> Value) {
    let path = format!("{DIR}{name}");
    if std::env::var_os("MESHRELAY_REGEN_VECTORS").is_some() {
        let out = f(&default_inputs);
        std::fs::create_dir_all(DIR).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap() + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file: Value = serde_json::from_str(&text).unwrap();
    let recomputed = f(&file);
    assert_eq!(
        recomputed, file,
        "{name}: recomputed vectors differ from the file"
    );
}

pub(crate) fn seeded(v: &Value) -> Identity {
    Identity::from_seed(&arr::<32>(v))
}

#[test]
fn sender_chain_vectors() {
    let defaults = json!({
        "description": "Sender-chain ratchet (protocol-spec/encryption.md): HKDF-SHA256 steps from a fixed chain key, then one XChaCha20-Poly1305 message at index 0.",
        "chain_key": h(&(0u8..32).collect::<Vec<_>>()),
        "chain_id": h(&[0xc1; 16]),
        "room": h(&[0x52; 16]),
        "sender_seed": h(&[1; 32]),
        "nonce": h(&[0x4e; 24]),
        "plaintext": "hello mesh",
        "steps": 4,
    });
    run("sender_chain.json", defaults, |v| {
        let mut ck: [u8; 32] = arr(&v["chain_key"]);
        let mut steps = Vec::new();
        for i in 0..v["steps"].as_u64().unwrap() {
            let (mk, next) = ratchet_step(&ck);
            steps.push(json!({"index": i, "message_key": h(&*mk), "next_chain_key": h(&*next)}));
            ck = *next;
        }
        let room = RoomId(arr(&v["room"]));
        let sender = seeded(&v["sender_seed"]).device_id();
        let chain_id: [u8; 16] = arr(&v["chain_id"]);
        let mut init = chain_id.to_vec();
        init.extend(unh(&v["chain_key"]));
        let chain = OutboundChain::new(room, 0, &mut FixedRng(init));
        assert_eq!(chain.chain_id(), ChainId(chain_id));
        let pending = chain
            .encrypt(
                &sender,
                v["plaintext"].as_str().unwrap().as_bytes(),
                &mut FixedRng(unh(&v["nonce"])),
            )
            .unwrap();
        assert_eq!(pending.next_state().index(), 1);
        let (_, payload) = pending.release();
        // Decrypt through the receiving side.
        let mut inb = InboundChain::from_share(room, sender, &chain.share());
        let back = inb
            .decrypt(&MessagePayload::from_bytes(&payload.to_bytes()).unwrap())
            .unwrap();
        assert_eq!(&*back, v["plaintext"].as_str().unwrap().as_bytes());
        let mut out = v.clone();
        out["sender"] = json!(sender.to_string());
        out["ratchet"] = json!(steps);
        out["aad"] = json!(h(&message_aad(&room, &sender, &ChainId(chain_id), 0)));
        out["ciphertext"] = json!(h(&payload.ciphertext));
        out["message_payload_cbor"] = json!(h(&payload.to_bytes()));
        out
    });
}

#[test]
fn key_share_vectors() {
    let defaults = json!({
        "description": "Key share sealed with HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305 (protocol-spec/encryption.md). The ephemeral key is DeriveKeyPair(eph_ikm); the recipient prekey is the seeded identity's prekey 1.",
        "room": h(&[0x52; 16]),
        "sender_seed": h(&[1; 32]),
        "recipient_seed": h(&[2; 32]),
        "share": {"chain_id": h(&[0xc1; 16]), "index": 5, "chain_key": h(&[0x33; 32])},
        "eph_ikm": h(&[0xe7; 32]),
    });
    run("key_share.json", defaults, |v| {
        let room = RoomId(arr(&v["room"]));
        let sender = seeded(&v["sender_seed"]);
        let recip = seeded(&v["recipient_seed"]);
        let share = ChainShare {
            chain_id: ChainId(arr(&v["share"]["chain_id"])),
            index: v["share"]["index"].as_u64().unwrap() as u32,
            chain_key: Zeroizing::new(arr(&v["share"]["chain_key"])),
            roster: None,
        };
        let to = Recipient {
            device: recip.device_id(),
            prekey_id: recip.prekey().id,
            prekey: recip.prekey().public(),
        };
        let sealed = seal_one(
            &room,
            &sender.device_id(),
            &share,
            &to,
            &mut FixedRng(unh(&v["eph_ikm"])),
        )
        .unwrap();
        let (_, eph_pub) = derive_hpke_keypair(&unh(&v["eph_ikm"]));
        assert_eq!(sealed.enc, eph_pub);
        let payload = KeySharePayload {
            chain_id: share.chain_id,
            shares: vec![sealed.clone()],
        };
        let ring = PrekeyRing::from_identity(&recip, 0);
        let opened = open_share(
            &room,
            &sender.device_id(),
            &KeySharePayload::from_bytes(&payload.to_bytes()).unwrap(),
            &recip.device_id(),
            &ring,
        )
        .unwrap();
        assert_eq!(opened, share);
        let mut info = meshrelay::crypto::domain::KEY_SHARE_INFO.to_vec();
        info.extend_from_slice(room.as_bytes());
        info.extend_from_slice(sender.device_id().as_bytes());
        info.extend_from_slice(recip.device_id().as_bytes());
        info.extend_from_slice(&to.prekey_id.to_be_bytes());
        let mut out = v.clone();
        out["sender"] = json!(sender.device_id().to_string());
        out["recipient"] = json!(recip.device_id().to_string());
        out["recipient_prekey_id"] = json!(to.prekey_id);
        out["recipient_prekey_secret"] = json!(h(&recip.prekey().secret().to_bytes()));
        out["recipient_prekey_public"] = json!(h(to.prekey.as_bytes()));
        out["info"] = json!(h(&info));
        out["aad"] = json!(h(&share.chain_id.0));
        out["plaintext"] = json!(h(&share.to_bytes()));
        out["enc"] = json!(h(&sealed.enc));
        out["ct"] = json!(h(&sealed.ct));
        out["key_share_payload_cbor"] = json!(h(&payload.to_bytes()));
        out
    });
}

/// Builds the signed events of the resolution cases.
struct Case {
    room: RoomId,
    events: Vec<Event>,
    ts: u64,
}

const T0: u64 = 1_750_000_000_000;

impl Case {
    fn new(a: &Identity) -> (Self, Event) {
        let nonce = [7; 16];
        let room = derive_room_id(&a.device_id(), &nonce);
        let mut c = Case {
            room,
            events: Vec::new(),
            ts: T0,
        };
        let card = ContactCard::create(a, "A", T0).unwrap();
        let e = c.ev(a, &[], Membership::Create { card, nonce });
        (c, e)
    }

    fn ev(&mut self, who: &Identity, prev: &[&Event], m: Membership) -> Event {
        self.ts += 1000;
        let seq = self
            .events
            .iter()
            .filter(|e| e.sender() == who.device_id())
            .count() as u64
            + 1;
        let e = UnsignedEvent {
            room: self.room,
            sender: who.device_id(),
            seq,
            prev: prev.iter().map(|p| p.id()).collect(),
            origin_ts_ms: self.ts,
            expires_ms: self.ts + 86_400_000,
            kind: EventKind::Membership,
            payload: m.to_bytes(),
        }
        .sign(who)
        .unwrap();
        self.events.push(e.clone());
        e
    }
}

fn card(i: &Identity, name: &str) -> ContactCard {
    ContactCard::create(i, name, T0).unwrap()
}

fn cases() -> Vec<(String, String, Vec<Event>)> {
    let a = Identity::from_seed(&[1; 32]);
    let b = Identity::from_seed(&[2; 32]);
    let c = Identity::from_seed(&[3; 32]);
    let s = Identity::from_seed(&[0xee; 32]);
    let mut out = Vec::new();

    {
        let (mut k, cr) = Case::new(&a);
        let ib = k.ev(
            &a,
            &[&cr],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        k.ev(
            &b,
            &[&ib],
            Membership::Invite {
                card: card(&c, "C"),
            },
        );
        out.push((
            "non_admin_invite".into(),
            "B is a member but not an admin; its invite of C is invalid".into(),
            k.events,
        ));
    }
    {
        let (mut k, cr) = Case::new(&a);
        let ib = k.ev(
            &a,
            &[&cr],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        k.ev(
            &s,
            &[&ib],
            Membership::Invite {
                card: card(&s, "S"),
            },
        );
        k.ev(
            &s,
            &[],
            Membership::Create {
                card: card(&s, "S"),
                nonce: [7; 16],
            },
        );
        out.push((
            "homeserver_injection".into(),
            "a server key invites itself and writes its own create: both invalid".into(),
            k.events,
        ));
    }
    {
        let (mut k, cr) = Case::new(&a);
        let ib = k.ev(
            &a,
            &[&cr],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        let pb = k.ev(
            &a,
            &[&ib],
            Membership::Promote {
                target: b.device_id(),
            },
        );
        k.ev(
            &a,
            &[&pb],
            Membership::Remove {
                target: b.device_id(),
            },
        );
        k.ev(
            &b,
            &[&pb],
            Membership::Invite {
                card: card(&c, "C"),
            },
        );
        out.push(("invite_by_concurrently_removed_admin".into(), "A removes admin B while B, in another partition, invites C: B's invite is invalid, C is not a member".into(), k.events));
    }
    {
        let (mut k, cr) = Case::new(&a);
        let ib = k.ev(
            &a,
            &[&cr],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        let pb = k.ev(
            &a,
            &[&ib],
            Membership::Promote {
                target: b.device_id(),
            },
        );
        let rm = k.ev(
            &a,
            &[&pb],
            Membership::Remove {
                target: b.device_id(),
            },
        );
        k.ev(
            &b,
            &[&rm],
            Membership::Invite {
                card: card(&c, "C"),
            },
        );
        out.push((
            "invite_after_own_removal".into(),
            "B signs an invite after (descending from) its removal: invalid".into(),
            k.events,
        ));
    }
    {
        let (mut k, cr) = Case::new(&a);
        let ib = k.ev(
            &a,
            &[&cr],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        let pb = k.ev(
            &a,
            &[&ib],
            Membership::Promote {
                target: b.device_id(),
            },
        );
        let ic = k.ev(
            &a,
            &[&pb],
            Membership::Invite {
                card: card(&c, "C"),
            },
        );
        k.ev(
            &a,
            &[&ic],
            Membership::Remove {
                target: b.device_id(),
            },
        );
        k.ev(
            &b,
            &[&ic],
            Membership::Remove {
                target: a.device_id(),
            },
        );
        out.push((
            "mutual_removal".into(),
            "admins A and B remove each other concurrently: the removal earlier in order T wins"
                .into(),
            k.events,
        ));
    }
    {
        let (mut k, cr) = Case::new(&a);
        let ib = k.ev(
            &a,
            &[&cr],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        let ic = k.ev(
            &a,
            &[&ib],
            Membership::Invite {
                card: card(&c, "C"),
            },
        );
        let pc = k.ev(
            &a,
            &[&ic],
            Membership::Promote {
                target: c.device_id(),
            },
        );
        let r1 = k.ev(
            &a,
            &[&pc],
            Membership::Remove {
                target: b.device_id(),
            },
        );
        k.ev(
            &a,
            &[&r1],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        k.ev(
            &c,
            &[&pc],
            Membership::Remove {
                target: b.device_id(),
            },
        );
        out.push(("remove_wins_over_concurrent_reinvite".into(), "A removes and re-invites B while admin C concurrently removes B: removal wins, B is out".into(), k.events));
    }
    {
        let (mut k, cr) = Case::new(&a);
        let ib = k.ev(
            &a,
            &[&cr],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        let ic = k.ev(
            &a,
            &[&ib],
            Membership::Invite {
                card: card(&c, "C"),
            },
        );
        let pc = k.ev(
            &a,
            &[&ic],
            Membership::Promote {
                target: c.device_id(),
            },
        );
        k.ev(
            &a,
            &[&pc],
            Membership::Promote {
                target: b.device_id(),
            },
        );
        k.ev(
            &c,
            &[&pc],
            Membership::Demote {
                target: a.device_id(),
            },
        );
        out.push((
            "demote_beats_concurrent_action".into(),
            "C demotes A while A promotes B: A's concurrent promote is invalid".into(),
            k.events,
        ));
    }
    {
        let (mut k, cr) = Case::new(&a);
        let ib = k.ev(
            &a,
            &[&cr],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        let lv = k.ev(&b, &[&ib], Membership::Leave);
        k.ev(
            &a,
            &[&lv],
            Membership::Invite {
                card: card(&b, "B"),
            },
        );
        k.ev(&b, &[&ib], Membership::Leave);
        out.push((
            "leave_and_rejoin".into(),
            "B leaves and is re-invited; a second, concurrent leave by B removes it again".into(),
            k.events,
        ));
    }
    out
}

/// Inserts `events` in the given order, each once (a refused event is not
/// offered again, an event waiting for predecessors stays pending).
fn admitted_dag(room: RoomId, events: &[Event]) -> RoomDag {
    let mut dag = RoomDag::new(room);
    for e in events {
        match dag.insert(e) {
            Ok(i) => assert!(!matches!(i, Inserted::Duplicate)),
            Err(DagError::NotAuthorized(_)) => {}
            Err(err) => panic!("{err}"),
        }
    }
    dag
}

fn outcome(room: RoomId, events: &[Event]) -> Value {
    let mut dag = admitted_dag(room, events);
    let res = dag.resolve().clone();
    let index_of = |id: &EventId| events.iter().position(|e| e.id() == *id).unwrap();
    // Admission refuses an event whose signer is not a member in its own
    // causal past (`rooms.md`, "Admission"): it never reaches resolution.
    let verdicts: Vec<Value> = events
        .iter()
        .map(|e| match res.verdicts.get(&e.id()) {
            Some(Ok(())) => json!("ok"),
            Some(Err(err)) => json!(err.class()),
            // Refused at once, or when released from waiting.
            None if !dag.is_pending(&e.id()) => json!("not_admitted"),
            None => json!("pending"),
        })
        .collect();
    let members: Vec<Value> = res
        .state
        .members
        .values()
        .map(|m| json!({"device_id": m.device.to_string(), "admin": m.admin}))
        .collect();
    json!({
        "order": res.order.iter().map(index_of).collect::<Vec<_>>(),
        "verdicts": verdicts,
        "members": members,
    })
}

#[test]
fn membership_resolution_vectors() {
    let defaults = json!({
        "description": "Membership resolution cases (protocol-spec/rooms.md, \"Admission\" and \"Resolution rule\"). Each case lists signed events (hex); inserting them in any order must give these verdicts (by event index; \"not_admitted\": refused by admission, never part of the room), order T (event indices) and members.",
        "cases": cases().into_iter().map(|(name, what, evs)| json!({
            "name": name,
            "description": what,
            "room": h(evs[0].room().as_bytes()),
            "events": evs.iter().map(|e| h(e.bytes())).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    run("membership_resolution.json", defaults, |v| {
        let mut out = v.clone();
        for (i, case) in v["cases"].as_array().unwrap().iter().enumerate() {
            let room = RoomId(arr(&case["room"]));
            let events: Vec<Event> = case["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| Event::decode(&unh(e)).unwrap())
                .collect();
            let forward = outcome(room, &events);
            // Any arrival order gives the same answer (reverse: every event
            // waits for its predecessors; rotations: mixed).
            let mut rev = events.clone();
            rev.reverse();
            let mut reversed = outcome(room, &rev);
            let remap = |v: &mut Value, perm: &dyn Fn(usize) -> usize| {
                let order: Vec<usize> = v["order"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| perm(x.as_u64().unwrap() as usize))
                    .collect();
                v["order"] = json!(order);
            };
            let n = events.len();
            remap(&mut reversed, &|x| n - 1 - x);
            let mut rv: Vec<Value> = reversed["verdicts"].as_array().unwrap().clone();
            rv.reverse();
            reversed["verdicts"] = json!(rv);
            assert_eq!(forward, reversed, "case {}", case["name"]);
            for k in 1..n {
                let mut rot = events.clone();
                rot.rotate_left(k);
                let mut dag = admitted_dag(room, &rot);
                let members: Vec<DeviceId> = dag.members().members.keys().copied().collect();
                let expect: Vec<String> = forward["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["device_id"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(
                    members.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                    expect
                );
            }
            out["cases"][i]["expected"] = forward;
        }
        out
    });
}

#[test]
fn attachment_vectors() {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use chacha20poly1305::{ChaCha20Poly1305, Nonce};
    use meshrelay::cbor::Writer;
    use meshrelay::room::attachment::{
        Announcement, CHUNK_AAD_DOMAIN, CHUNK_BYTES, ChunkBody, FileKey, open_file, seal_chunks,
    };
    use sha2::{Digest, Sha256};
    let defaults = json!({
        "description": "protocol-spec/attachments.md: a 30,000-byte file (byte i = i*7 mod 251) \
                        announced by event `file_id`, its announcement's inner array and its \
                        three chunks (data = ChaCha20-Poly1305 under `key`)",
        "size": 30_000,
        "name": "map.png",
        "media_type": "image/png",
        "key": h(&[0x42; 32]),
        "file_id": h(&[0x11; 32]),
    });
    run("attachment.json", defaults, |v| {
        let size = v["size"].as_u64().unwrap();
        let file: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let key: [u8; 32] = arr(&v["key"]);
        let file_id = EventId(arr(&v["file_id"]));
        let a = Announcement {
            name: v["name"].as_str().unwrap().to_owned(),
            media_type: v["media_type"].as_str().unwrap().to_owned(),
            size,
            sha256: Sha256::digest(&file).into(),
            key: FileKey(Zeroizing::new(key)),
        };
        let mut w = Writer::new();
        w.array(6);
        a.write(&mut w);
        w.text("");
        let chunks = seal_chunks(&a, &file_id, &file).unwrap();
        let mut out_chunks = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            // Independently: the chunk straight from the AEAD crate.
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
            let mut aad = CHUNK_AAD_DOMAIN.to_vec();
            aad.extend_from_slice(file_id.as_bytes());
            aad.extend_from_slice(&size.to_be_bytes());
            aad.extend_from_slice(&(i as u64).to_be_bytes());
            let end = ((i + 1) * CHUNK_BYTES).min(file.len());
            let data = ChaCha20Poly1305::new(&key.into())
                .encrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: &file[i * CHUNK_BYTES..end],
                        aad: &aad,
                    },
                )
                .unwrap();
            assert_eq!(data, c.data);
            let body = c.to_bytes();
            assert_eq!(ChunkBody::from_bytes(&body).unwrap(), *c);
            out_chunks.push(json!({
                "index": i,
                "aad": h(&aad),
                "data_len": data.len(),
                "data_head": h(&data[..32]),
                "data_sha256": h(&Sha256::digest(&data)),
                "payload_sha256": h(&Sha256::digest(&body)),
            }));
        }
        assert_eq!(&*open_file(&a, &file_id, &chunks).unwrap(), &file);
        let mut out = v.clone();
        out["sha256"] = json!(h(&a.sha256));
        out["announcement_inner"] = json!(h(&w.into_bytes()));
        out["chunks"] = json!(out_chunks);
        out
    });
}
