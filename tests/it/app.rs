//! The application layer end to end: three devices A, B and C, each with
//! its own data directory (identity files and a real redb store), exchanging
//! contact cards and bundle bytes (`src/app`, issue 4's six scenarios).
//!
//! Every operation opens the data directory and drops the device again, so
//! every step is also a reopen: whatever a later step sees survived a
//! restart. Some steps additionally check the state explicitly after
//! reopening.

use std::cell::Cell;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshrelay::app::{self, Device, ImportSummary, MessageLine, RoomInfo};
use meshrelay::bundle::{self, BUNDLE_MAGIC, BUNDLE_VERSION};
use meshrelay::cbor::Writer;
use meshrelay::crypto::DeviceId;
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::room::keys::decrypt_message;
use meshrelay::room::{Membership, RoomKeys};
use meshrelay::store::redb_backend::STORE_FILE_NAME;
use meshrelay::store::{EventStore, MetaStore, Priority, RedbStore, SecretStore, StoreConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;

const T0: u64 = 1_750_000_000_000;

/// One device's data directory plus a clock and an RNG.
struct Dev {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    rng: StdRng,
    clock: u64,
    id: DeviceId,
}

impl Dev {
    fn new(seed: u64, name: &str) -> Dev {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut rng = StdRng::seed_from_u64(seed);
        let id = app::init(&dir, name, T0, &mut rng).unwrap();
        Dev {
            _tmp: tmp,
            dir,
            rng,
            clock: T0,
            id,
        }
    }

    fn now(&mut self) -> u64 {
        self.clock += 1000;
        self.clock
    }

    fn open(&mut self) -> Device {
        let now = self.now();
        Device::open(&self.dir, now).unwrap()
    }

    fn card(&mut self) -> String {
        self.open().card().to_text()
    }

    fn create(&mut self, name: &str) -> RoomId {
        let (now, mut d) = (self.now(), self.open());
        d.room_create(name, now, &mut self.rng).unwrap()
    }

    fn invite(&mut self, room: &RoomId, contact: &str) -> EventId {
        let (now, mut d) = (self.now(), self.open());
        d.room_invite(room, contact, now, &mut self.rng).unwrap()
    }

    fn remove(&mut self, room: &RoomId, who: &DeviceId) -> EventId {
        let (now, mut d) = (self.now(), self.open());
        d.room_remove(room, who, now, &mut self.rng).unwrap()
    }

    fn promote(&mut self, room: &RoomId, who: &DeviceId) -> EventId {
        let (now, mut d) = (self.now(), self.open());
        d.room_promote(room, who, now, &mut self.rng).unwrap()
    }

    fn send(&mut self, room: &RoomId, text: &str) -> EventId {
        let (now, mut d) = (self.now(), self.open());
        d.send(room, text, now, &mut self.rng).unwrap()
    }

    fn export(&mut self, room: &RoomId) -> Vec<u8> {
        let now = self.now();
        self.open().export(Some(room), now).unwrap()
    }

    fn import(&mut self, bytes: &[u8]) -> ImportSummary {
        let (now, mut d) = (self.now(), self.open());
        d.import(bytes, now).unwrap()
    }

    fn rooms(&mut self) -> Vec<RoomInfo> {
        self.open().rooms().unwrap()
    }

    fn messages(&mut self, room: &RoomId) -> Vec<MessageLine> {
        self.open().messages(room).unwrap()
    }

    fn texts(&mut self, room: &RoomId) -> Vec<String> {
        self.messages(room)
            .into_iter()
            .filter_map(|l| match l {
                MessageLine::Text { text, .. } => Some(text),
                _ => None,
            })
            .collect()
    }

    fn undecryptable(&mut self, room: &RoomId) -> Vec<String> {
        self.messages(room)
            .into_iter()
            .filter_map(|l| match l {
                MessageLine::Undecryptable { event_id, .. } => Some(event_id),
                _ => None,
            })
            .collect()
    }

    /// Current members of `room` as (device ID, admin), sorted.
    fn members(&mut self, room: &RoomId) -> Vec<(String, bool)> {
        let rooms = self.rooms();
        let r = rooms
            .iter()
            .find(|r| r.room_id == room.to_string())
            .expect("room listed");
        r.members
            .iter()
            .map(|m| (m.device_id.clone(), m.admin))
            .collect()
    }

    /// The raw store, as a forensic examiner of a seized device would read it.
    fn raw_store(&self) -> RedbStore {
        RedbStore::open(&self.dir.join(STORE_FILE_NAME), StoreConfig::default()).unwrap()
    }
}

fn abc() -> (Dev, Dev, Dev) {
    (Dev::new(1, "Ana"), Dev::new(2, "Bo"), Dev::new(3, "Cy"))
}

fn events_of(bundle_bytes: &[u8]) -> Vec<Event> {
    bundle::parse(bundle_bytes)
        .unwrap()
        .1
        .into_iter()
        .map(|b| Event::decode(b).unwrap())
        .collect()
}

fn raw_bundle(events: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer::new();
    w.array(4)
        .text(BUNDLE_MAGIC)
        .u64(BUNDLE_VERSION)
        .u64(T0)
        .array(events.len());
    for e in events {
        w.bytes(e);
    }
    w.into_bytes()
}

/// A room created by A with B invited (by stored contact) and synced to B.
fn room_with_b(a: &mut Dev, b: &mut Dev) -> RoomId {
    let room = a.create("field ops");
    let b_card = b.card();
    {
        let mut d = a.open();
        d.add_contact(&b_card).unwrap();
    }
    a.invite(&room, &b.id.to_string());
    let sum = b.import(&a.export(&room));
    assert_eq!(sum.rejected, 0, "{sum:?}");
    assert!(sum.unauthorized.is_empty(), "{sum:?}");
    room
}

/// `messages` with `last`: the lines of the room's last N messages, in
/// the same order as the whole view's end; the gap lines of what is left
/// out are not shown.
#[test]
fn the_last_messages_are_the_end_of_the_whole_view() {
    let (mut a, _b, _c) = abc();
    let room = a.create("north camp");
    for i in 0..12 {
        a.send(&room, &format!("message {i}"));
    }
    let all = a.messages(&room);
    let d = a.open();
    for n in [0, 1, 5, 12, 13, 100] {
        let tail = d.messages_last(&room, Some(n)).unwrap();
        let texts = tail
            .iter()
            .filter(|l| matches!(l, MessageLine::Text { .. }))
            .count();
        // 12 sent, after the room's name event (a message event that
        // shows no line of its own).
        assert_eq!(texts, n.min(12), "last {n}");
        assert_eq!(tail.len(), n.min(12), "last {n}: {tail:?}");
        assert_eq!(tail[..], all[all.len() - tail.len()..], "last {n}");
    }
    assert_eq!(d.messages_last(&room, None).unwrap(), all);
}

#[test]
fn invitee_reads_and_outsider_cannot() {
    let (mut a, mut b, mut c) = abc();
    let room = room_with_b(&mut a, &mut b);
    a.send(&room, "hello B");
    a.send(&room, "meet at the bridge");
    let bundle_bytes = a.export(&room);

    let sum = b.import(&bundle_bytes);
    assert_eq!((sum.imported, sum.rejected), (2, 0), "{sum:?}");
    assert_eq!(b.texts(&room), ["hello B", "meet at the bridge"]);
    // Only the room's first name event, sent before B joined, is unreadable
    // to B, and it is shown as such.
    let unreadable: Vec<MessageLine> = b
        .messages(&room)
        .into_iter()
        .filter(|l| matches!(l, MessageLine::Undecryptable { .. }))
        .collect();
    assert_eq!(unreadable.len(), 1);
    assert!(
        matches!(&unreadable[0], MessageLine::Undecryptable { reason, .. } if reason.contains("before"))
    );

    // B's view of the room, after reopening.
    let rooms = b.rooms();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].name, "field ops");
    let mut members = b.members(&room);
    members.sort();
    let mut expected = vec![(a.id.to_string(), true), (b.id.to_string(), false)];
    expected.sort();
    assert_eq!(members, expected);

    // B answers; A reads it.
    b.send(&room, "copy that");
    let sum = a.import(&b.export(&room));
    assert_eq!(sum.rejected, 0, "{sum:?}");
    assert_eq!(
        a.texts(&room),
        ["hello B", "meet at the bridge", "copy that"]
    );
    // A's later message reuses its persisted chain: B still reads it.
    a.send(&room, "after reopen");
    b.import(&a.export(&room));
    assert_eq!(b.texts(&room).last().unwrap(), "after reopen");

    // C, not a member, carries the events but reads nothing.
    let sum = c.import(&a.export(&room));
    assert!(sum.imported > 0 && sum.rejected == 0, "{sum:?}");
    assert!(c.rooms().is_empty(), "C is not in any room");
    let lines = c.messages(&room);
    assert!(!lines.is_empty());
    for l in &lines {
        match l {
            MessageLine::Undecryptable { undecryptable, .. } => assert!(*undecryptable),
            other => panic!("C must not read anything: {other:?}"),
        }
    }
    let json: Vec<String> = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap())
        .collect();
    assert!(json.iter().all(|j| !j.contains("hello")));
    assert!(json[0].contains("\"undecryptable\":true") && json[0].contains("\"reason\""));
}

#[test]
fn removed_member_cannot_read_later_messages_even_with_every_retained_key() {
    let (mut a, mut b, _c) = abc();
    let room = room_with_b(&mut a, &mut b);
    a.send(&room, "before removal");
    b.import(&a.export(&room));
    assert_eq!(b.texts(&room), ["before removal"]);

    a.remove(&room, &b.id);
    let after = a.send(&room, "after removal");
    assert_eq!(a.members(&room), vec![(a.id.to_string(), true)]);
    let bundle_bytes = a.export(&room);
    let sum = b.import(&bundle_bytes);
    assert_eq!(sum.rejected, 0, "{sum:?}");
    assert_eq!(b.texts(&room), ["before removal"]);
    assert_eq!(b.undecryptable(&room).last(), Some(&after.to_string()));
    assert_eq!(b.undecryptable(&room).len(), 2); // the pre-join name, and this
    // B is no longer a member and cannot send.
    {
        let now = b.now();
        let mut d = b.open();
        assert!(d.send(&room, "still here?", now, &mut b.rng).is_err());
    }

    // Crypto level: every room key B's store retains fails on the message.
    let ev = events_of(&bundle_bytes)
        .into_iter()
        .find(|e| e.id() == after)
        .unwrap();
    let store = b.raw_store();
    let secrets = store.secret_keys(b"room-keys/").unwrap();
    assert_eq!(secrets.len(), 1);
    for k in secrets {
        let bytes = store.get_secret(&k).unwrap().unwrap();
        let mut keys = RoomKeys::from_bytes(&bytes).unwrap();
        assert!(decrypt_message(&mut keys, &ev).is_err());
    }
    // And no plaintext of it was stored.
    let mut pt_key = b"pt/".to_vec();
    pt_key.extend_from_slice(after.as_bytes());
    assert!(store.get_secret(&pt_key).unwrap().is_none());
}

#[test]
fn forged_invite_by_non_admin_is_refused() {
    let (mut a, mut b, mut c) = abc();
    let room = room_with_b(&mut a, &mut b);
    // C holds the room's events as a courier and forges an invite of itself.
    c.import(&a.export(&room));
    let (c_identity, c_card) = app::load_identity(&c.dir).unwrap();
    let heads = {
        let store = c.raw_store();
        store.heads(&room).unwrap()
    };
    let now = c.now();
    let forged = UnsignedEvent {
        room,
        sender: c.id,
        seq: 1,
        prev: heads,
        origin_ts_ms: now,
        expires_ms: now + 86_400_000,
        kind: EventKind::Membership,
        payload: Membership::Invite { card: c_card }.to_bytes(),
    }
    .sign(&c_identity)
    .unwrap();
    // Admission refuses it before anything is stored: C is not a member
    // where its invite stands (`rooms.md`, "Admission").
    for d in [&mut a, &mut b] {
        let sum = d.import(&bundle::export([&forged], now));
        assert_eq!((sum.imported, sum.rejected), (0, 1), "{sum:?}");
        assert_eq!(sum.rejections[0].event_id, Some(forged.id().to_string()));
        assert!(sum.rejections[0].reason.contains("not a member"), "{sum:?}");
        assert!(!d.raw_store().has_event(&forged.id()).unwrap());
    }
    for d in [&mut a, &mut b] {
        let members = d.members(&room);
        assert!(members.iter().all(|(m, _)| *m != c.id.to_string()));
    }
    // A's next message is not readable by C.
    a.send(&room, "not for C");
    c.import(&a.export(&room));
    assert!(c.rooms().is_empty());
    assert!(!c.texts(&room).iter().any(|t| t == "not for C"));
    // C carried the room as a stranger's; once validly invited, the same
    // events are its own room's history and it reads what follows.
    let priorities = |d: &Dev| -> Vec<Priority> {
        let store = d.raw_store();
        store
            .room_items(&room, (Bound::Unbounded, Bound::Unbounded), 1000)
            .unwrap()
            .iter()
            .map(|it| store.event_info(&it.id).unwrap().unwrap().priority)
            .collect()
    };
    assert!(priorities(&c).iter().all(|p| *p == Priority::Stranger));
    let c_card = c.card();
    a.invite(&room, &c_card);
    a.send(&room, "now for C");
    c.import(&a.export(&room));
    assert_eq!(c.rooms().len(), 1);
    assert_eq!(c.texts(&room), ["now for C"]);
    assert!(priorities(&c).iter().all(|p| *p == Priority::OwnRoom));
}

#[test]
fn replayed_bundle_stores_nothing_new() {
    let (mut a, mut b, _c) = abc();
    let room = room_with_b(&mut a, &mut b);
    a.send(&room, "once");
    let bundle_bytes = a.export(&room);
    let first = b.import(&bundle_bytes);
    assert_eq!(first.imported, 1);
    let before = (b.messages(&room), b.raw_store().stats().unwrap().events);
    let again = b.import(&bundle_bytes);
    assert_eq!(again.imported, 0);
    assert_eq!(again.rejected, 0);
    assert_eq!(again.duplicates, events_of(&bundle_bytes).len());
    // A bundle with every event twice: nothing new either.
    let evs = events_of(&bundle_bytes);
    let doubled: Vec<Vec<u8>> = evs
        .iter()
        .chain(evs.iter())
        .map(|e| e.bytes().to_vec())
        .collect();
    let sum = b.import(&raw_bundle(&doubled));
    assert_eq!((sum.imported, sum.duplicates), (0, 2 * evs.len()));
    let after = (b.messages(&room), b.raw_store().stats().unwrap().events);
    assert_eq!(before, after);
    assert_eq!(b.texts(&room), ["once"]);
    // A importing its own events back: all duplicates.
    let own = a.import(&bundle_bytes);
    assert_eq!((own.imported, own.duplicates), (0, evs.len()));
}

#[test]
fn tampered_ciphertext_or_signature_is_rejected_and_not_stored() {
    let (mut a, mut b, _c) = abc();
    let room = room_with_b(&mut a, &mut b);
    let msg = a.send(&room, "integrity matters");
    let evs = events_of(&a.export(&room));
    let ev = evs.iter().find(|e| e.id() == msg).unwrap();
    let bytes = ev.bytes().to_vec();

    // Flip a ciphertext byte.
    let payload = ev.payload();
    let pos = bytes
        .windows(payload.len())
        .position(|w| w == payload)
        .unwrap()
        + payload.len() / 2;
    let mut bad_ct = bytes.clone();
    bad_ct[pos] ^= 0x01;
    // Flip a signature byte (the signature is the last 64 bytes).
    let mut bad_sig = bytes.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x80;

    let sum = b.import(&raw_bundle(&[bad_ct.clone(), bad_sig.clone()]));
    assert_eq!((sum.imported, sum.rejected), (0, 2), "{sum:?}");
    assert_eq!(sum.rejections.len(), 2);
    assert!(sum.rejections.iter().all(|r| !r.reason.is_empty()));
    assert_eq!((sum.rejections[0].index, sum.rejections[1].index), (0, 1));
    let store = b.raw_store();
    assert!(!store.has_event(&msg).unwrap());
    for t in [&bad_ct, &bad_sig] {
        if let Ok(e) = Event::decode_unverified(t) {
            assert!(!store.has_event(&e.id()).unwrap());
        }
    }
    drop(store);
    assert!(b.texts(&room).is_empty(), "nothing of the tampered message");
    // The genuine event still imports afterwards.
    let sum = b.import(&raw_bundle(&[bytes]));
    assert_eq!(sum.imported, 1);
    assert_eq!(b.texts(&room), ["integrity matters"]);
    let _ = b.undecryptable(&room);
}

#[test]
fn concurrent_invite_and_remove_converge_on_all_three() {
    let (mut a, mut b, mut c) = abc();
    let room = room_with_b(&mut a, &mut b);
    a.promote(&room, &b.id);
    b.import(&a.export(&room));
    assert_eq!(
        b.members(&room).iter().filter(|(_, admin)| *admin).count(),
        2
    );

    // Partition 1: A removes B. Partition 2: B invites C.
    a.remove(&room, &b.id);
    let c_card = c.card();
    let invite = b.invite(&room, &c_card);
    b.send(&room, "welcome C");
    let from_a = a.export(&room);
    let from_b = b.export(&room);

    // Merge, in different orders on each node.
    let sum = a.import(&from_b);
    assert!(
        sum.unauthorized
            .iter()
            .any(|u| u.event_id == invite.to_string()),
        "{sum:?}"
    );
    b.import(&from_a);
    c.import(&from_b);
    c.import(&from_a);

    let expected = vec![(a.id.to_string(), true)];
    assert_eq!(a.members(&room), expected);
    assert_eq!(b.rooms()[0].members.len(), 1);
    assert_eq!(b.members(&room), expected);
    // C's membership came from an invalid invite: it is not a member on
    // any node, C included, and reads nothing A sends.
    assert_eq!(c.members(&room), expected);
    a.send(&room, "A alone");
    c.import(&a.export(&room));
    b.import(&a.export(&room));
    assert!(!c.texts(&room).iter().any(|t| t == "A alone"));
    assert!(!b.texts(&room).iter().any(|t| t == "A alone"));
    // Every node shows the same lines in the same order (modulo readability).
    let order = |d: &mut Dev| -> Vec<String> {
        d.messages(&room)
            .into_iter()
            .map(|l| match l {
                MessageLine::Text { event_id, .. } => event_id,
                MessageLine::Undecryptable { event_id, .. }
                | MessageLine::Unauthorized { event_id, .. } => event_id,
                MessageLine::Gap { gap } => format!("gap {gap:?}"),
                MessageLine::Fork { fork } => format!("fork {fork:?}"),
            })
            .collect()
    };
    // (A hides its own readable name events; others show them as
    // unreadable: compare the order of the lines all three show.)
    let (oa, ob, oc) = (order(&mut a), order(&mut b), order(&mut c));
    let common = |o: &[String]| -> Vec<String> {
        o.iter()
            .filter(|i| oa.contains(i) && ob.contains(i) && oc.contains(i))
            .cloned()
            .collect()
    };
    assert!(common(&oa).len() >= 2, "{oa:?} {ob:?} {oc:?}");
    assert_eq!(common(&oa), common(&ob));
    assert_eq!(common(&oa), common(&oc));
    // B's message concurrent with its removal: A refused B's key share
    // (B was not a member at that position), so A cannot read it.
    assert!(!a.texts(&room).iter().any(|t| t == "welcome C"));
}

#[test]
fn state_survives_reopen_and_follow_polls_without_holding_the_lock() {
    let (mut a, mut b, _c) = abc();
    let room = room_with_b(&mut a, &mut b);
    for i in 0..3 {
        a.send(&room, &format!("m{i}"));
    }
    b.import(&a.export(&room));
    let rooms_before = b.rooms();
    let lines_before = b.messages(&room);
    // Reopen twice more: identical.
    assert_eq!(b.rooms(), rooms_before);
    assert_eq!(b.messages(&room), lines_before);
    assert_eq!(b.texts(&room), ["m0", "m1", "m2"]);
    // Room keys and the prekey ring are in the secret table.
    {
        let store = b.raw_store();
        assert!(store.get_secret(b"prekey-ring").unwrap().is_some());
        assert_eq!(store.secret_keys(b"room-keys/").unwrap().len(), 1);
        assert_eq!(store.secret_keys(b"pt/").unwrap().len(), 4); // name + 3
    }

    // Follow: each poll opens and closes the store, so another open
    // succeeds from inside the callback.
    let polls = Cell::new(0);
    let mut seen = Vec::new();
    let dir: &Path = &b.dir;
    app::follow_messages(
        dir,
        &room,
        None,
        Duration::from_millis(1),
        || T0 + 100_000,
        |line| {
            seen.push(line.clone());
            let d = Device::open(dir, T0 + 100_000).expect("store not locked between polls");
            drop(d);
            Ok(())
        },
        || {
            polls.set(polls.get() + 1);
            polls.get() < 3
        },
    )
    .unwrap();
    assert_eq!(polls.get(), 3);
    assert_eq!(seen, lines_before, "each line once");
}

#[test]
fn remaining_members_rotate_after_a_removal_they_import() {
    let (mut a, mut b, mut c) = abc();
    let room = room_with_b(&mut a, &mut b);
    let c_card = c.card();
    a.invite(&room, &c_card);
    let all = a.export(&room);
    b.import(&all);
    c.import(&all);
    // B sends before the removal: C, invited by A, receives B's chain.
    b.send(&room, "B to everyone");
    let from_b = b.export(&room);
    c.import(&from_b);
    a.import(&from_b);
    assert_eq!(c.texts(&room), ["B to everyone"]);
    assert_eq!(a.texts(&room), ["B to everyone"]);

    // A removes C; B learns it from a bundle (and reopens in between).
    a.remove(&room, &c.id);
    b.import(&a.export(&room));
    let secret = b.send(&room, "B without C");
    let from_b = b.export(&room);
    a.import(&from_b);
    c.import(&from_b);
    assert_eq!(a.texts(&room), ["B to everyone", "B without C"]);
    assert_eq!(c.texts(&room), ["B to everyone"]);
    assert!(c.undecryptable(&room).contains(&secret.to_string()));
    // With every key C retained.
    let ev = events_of(&from_b)
        .into_iter()
        .find(|e| e.id() == secret)
        .unwrap();
    let store = c.raw_store();
    for k in store.secret_keys(b"room-keys/").unwrap() {
        let mut keys = RoomKeys::from_bytes(&store.get_secret(&k).unwrap().unwrap()).unwrap();
        assert!(decrypt_message(&mut keys, &ev).is_err());
    }
}

/// The rooms CLI area through its library runner (the binary flattens
/// `RoomsCommand` into its own commands), checking the JSON contract.
mod cli {
    use super::*;
    use clap::Parser;
    use meshrelay::cli::rooms::{EXIT_BAD_INPUT, RoomsCommand, run};
    use serde_json::Value;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: RoomsCommand,
    }

    fn cli(dir: &Path, args: &[&str]) -> Result<String, u8> {
        let parsed = Cli::try_parse_from(std::iter::once("meshrelay").chain(args.iter().copied()))
            .map_err(|_| EXIT_BAD_INPUT)?;
        let mut out = Vec::new();
        run(
            &parsed.cmd,
            dir,
            meshrelay::cli::human::Style::PLAIN,
            &mut out,
        )
        .map_err(|e| e.code)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn json_contract() {
        let (mut a, mut b, _c) = abc();
        let (ad, bd) = (a.dir.clone(), b.dir.clone());
        let created: Value =
            serde_json::from_str(&cli(&ad, &["room", "create", "ops", "--json"]).unwrap()).unwrap();
        assert_eq!(keys(&created), ["room_id"]);
        let room = created["room_id"].as_str().unwrap().to_owned();
        let b_card = b.card();
        cli(&ad, &["room", "invite", &room, &b_card]).unwrap();
        let sent: Value =
            serde_json::from_str(&cli(&ad, &["send", &room, "hi from A", "--json"]).unwrap())
                .unwrap();
        assert_eq!(keys(&sent), ["event_id"]);

        let rooms: Value = serde_json::from_str(&cli(&ad, &["rooms", "--json"]).unwrap()).unwrap();
        let r = &rooms.as_array().unwrap()[0];
        assert_eq!(keys(r), ["members", "name", "room_id"]);
        assert_eq!(r["name"], "ops");
        assert_eq!(keys(&r["members"][0]), ["admin", "device_id", "name"]);

        let file = a._tmp.path().join("ops.bundle");
        let file = file.to_str().unwrap();
        let said = cli(&ad, &["export", "--room", &room, file]).unwrap();
        assert!(
            said.starts_with("Exported ")
                && said.ends_with(" of ops to {file}.\n".replace("{file}", file).as_str()),
            "{said}"
        );
        let imported: Value =
            serde_json::from_str(&cli(&bd, &["import", file, "--json"]).unwrap()).unwrap();
        for k in ["imported", "duplicates", "rejected"] {
            assert!(imported.get(k).is_some(), "{imported}");
        }
        assert!(imported["imported"].as_u64().unwrap() > 0);
        assert_eq!(imported["rejected"], 0);
        let again: Value =
            serde_json::from_str(&cli(&bd, &["import", file, "--json"]).unwrap()).unwrap();
        assert_eq!(again["imported"], 0);

        let lines = cli(&bd, &["messages", &room, "--json"]).unwrap();
        let lines: Vec<Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let text = lines.iter().find(|l| l.get("text").is_some()).unwrap();
        assert_eq!(
            keys(text),
            [
                "delivered_to",
                "event_id",
                "read_by",
                "sender",
                "text",
                "ts"
            ]
        );
        assert_eq!(text["text"], "hi from A");
        assert_eq!(text["event_id"], sent["event_id"]);
        let unreadable = lines
            .iter()
            .find(|l| l.get("undecryptable").is_some())
            .unwrap();
        assert_eq!(
            keys(unreadable),
            ["event_id", "reason", "sender", "ts", "undecryptable"]
        );

        // Bad input exits 2.
        assert_eq!(cli(&ad, &["send", "nothex", "x"]), Err(EXIT_BAD_INPUT));
        assert_eq!(
            cli(&ad, &["room", "invite", &room, "MRC1:forged"]),
            Err(EXIT_BAD_INPUT)
        );
        assert_eq!(
            cli(&ad, &["send", &"ab".repeat(16), "x"]),
            Err(EXIT_BAD_INPUT)
        );
        let _ = (&mut a, &mut b);
    }

    #[test]
    fn demo_shares_a_room_through_a_bundle() {
        let mut out = Vec::new();
        meshrelay::cli::rooms::demo(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Bo reads"), "{text}");
        assert!(text.contains("Water point at the north gate"), "{text}");
        assert!(text.contains("can read 0 of them"), "{text}");
        assert!(text.contains("0 new"), "{text}");
        assert!(text.contains("Bo sees"), "{text}");
        assert!(!text.contains("Moving to the south camp"), "{text}");
    }

    #[test]
    fn decode_describes_a_bundle_without_decrypting() {
        let (mut a, mut b, _c) = abc();
        let room = room_with_b(&mut a, &mut b);
        a.send(&room, "secret words");
        let bytes = a.export(&room);
        assert!(meshrelay::cli::rooms::is_bundle(&bytes));
        assert!(!meshrelay::cli::rooms::is_bundle(b"MRC1:xyz"));
        let v = meshrelay::cli::rooms::bundle_json(&bytes, a.now()).unwrap();
        let evs = v["bundle"]["events"].as_array().unwrap();
        assert_eq!(evs.len(), events_of(&bytes).len());
        assert!(
            evs.iter()
                .all(|e| e["valid"] == true && e["room"] == room.to_string())
        );
        assert!(evs.iter().any(|e| e["kind"] == "key_share"));
        assert!(!v.to_string().contains("secret words"));
    }

    #[test]
    fn gap_lines_have_the_contract_shape() {
        let line = MessageLine::Gap {
            gap: meshrelay::app::GapInfo {
                sender: "mr1x".into(),
                from_seq: 2,
                to_seq: 3,
            },
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"gap":{"sender":"mr1x","from_seq":2,"to_seq":3}}"#
        );
    }
}

#[test]
fn withheld_message_shows_a_gap_and_a_waiting_line_until_it_arrives() {
    let (mut a, mut b, _c) = abc();
    let room = room_with_b(&mut a, &mut b);
    a.send(&room, "one");
    let two = a.send(&room, "two");
    let three = a.send(&room, "three");
    let full = a.export(&room);
    let withheld: Vec<Vec<u8>> = events_of(&full)
        .iter()
        .filter(|e| e.id() != two)
        .map(|e| e.bytes().to_vec())
        .collect();
    let sum = b.import(&raw_bundle(&withheld));
    assert_eq!(sum.rejected, 0, "{sum:?}");
    let lines = b.messages(&room);
    let two_seq = events_of(&full)
        .iter()
        .find(|e| e.id() == two)
        .unwrap()
        .seq();
    assert!(
        lines.iter().any(|l| matches!(l, MessageLine::Gap { gap }
            if gap.sender == a.id.to_string() && gap.from_seq == two_seq && gap.to_seq == two_seq)),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(
            |l| matches!(l, MessageLine::Undecryptable { event_id, reason, .. }
            if *event_id == three.to_string() && reason.contains("waiting"))
        ),
        "{lines:#?}"
    );
    assert_eq!(b.texts(&room), ["one"]);
    // The withheld event arrives: everything reads, no gap remains.
    b.import(&full);
    assert_eq!(b.texts(&room), ["one", "two", "three"]);
    assert!(
        !b.messages(&room)
            .iter()
            .any(|l| matches!(l, MessageLine::Gap { .. }))
    );
}

#[test]
fn promote_demote_and_leave_are_durable() {
    let (mut a, mut b, _c) = abc();
    let room = room_with_b(&mut a, &mut b);
    let bid = b.id;
    let admin_of = |d: &mut Dev, who: &DeviceId| {
        d.members(&room)
            .into_iter()
            .find(|(m, _)| *m == who.to_string())
            .map(|(_, admin)| admin)
    };
    a.promote(&room, &b.id);
    assert_eq!(admin_of(&mut a, &b.id), Some(true));
    {
        let (now, mut d) = (a.now(), a.open());
        d.room_demote(&room, &b.id, now, &mut a.rng).unwrap();
    }
    assert_eq!(admin_of(&mut a, &b.id), Some(false));
    b.import(&a.export(&room));
    assert_eq!(admin_of(&mut b, &bid), Some(false));
    // A non-admin cannot remove anyone.
    {
        let (now, mut d) = (b.now(), b.open());
        assert!(d.room_remove(&room, &a.id, now, &mut b.rng).is_err());
    }
    {
        let (now, mut d) = (b.now(), b.open());
        d.room_leave(&room, now, &mut b.rng).unwrap();
    }
    assert_eq!(admin_of(&mut b, &bid), None);
    a.import(&b.export(&room));
    assert_eq!(a.members(&room), vec![(a.id.to_string(), true)]);
    // The room stays listed for B (it was a member), without B in it.
    assert_eq!(b.rooms().len(), 1);
    assert_eq!(b.rooms()[0].name, "field ops");
}

#[test]
fn longest_text_is_sent_and_read_and_one_more_byte_is_refused() {
    let (mut a, mut b, _c) = abc();
    let room = room_with_b(&mut a, &mut b);
    let long = "x".repeat(app::MAX_TEXT_BYTES);
    a.send(&room, &long);
    {
        let (now, mut d) = (a.now(), a.open());
        let err = d
            .send(&room, &format!("{long}y"), now, &mut a.rng)
            .unwrap_err();
        assert!(matches!(err, app::AppError::BadInput(_)), "{err}");
    }
    b.import(&a.export(&room));
    assert_eq!(b.texts(&room), [long]);
}

/// Environment variable that turns [`crash_child`] into the sending child.
const CRASH_CHILD_ENV: &str = "MESHRELAY_APP_CRASH_CHILD";

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The child of [`send_survives_sigkill`]: sends messages through the
/// library path the CLI uses (open, send, drop) and prints each event ID
/// once `send` returned, i.e. once it is acknowledged. Does nothing in a
/// normal test run (hence ignored; the parent runs it with `--ignored`).
#[test]
#[ignore = "child process of send_survives_sigkill"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let room: RoomId = std::env::var("MESHRELAY_APP_CRASH_ROOM")
        .unwrap()
        .parse()
        .unwrap();
    let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let now = wall_ms();
        let mut d = Device::open(Path::new(&dir), now).unwrap();
        let id = d.send(&room, &format!("msg {i}"), now, &mut rng).unwrap();
        drop(d);
        use std::io::Write;
        writeln!(out, "ACK {id}").unwrap();
        out.flush().unwrap();
    }
}

/// kill -9 at random moments of the send path loses no acknowledged
/// message, never corrupts the store, and never reuses a chain position
/// (the other member reads every acknowledged message).
#[test]
fn send_survives_sigkill() {
    use rand::RngExt;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut a = Dev::new(11, "Ana");
    let mut b = Dev::new(12, "Bo");
    a.clock = wall_ms();
    b.clock = wall_ms();
    let room = a.create("crash");
    let b_card = b.card();
    a.invite(&room, &b_card);
    let rounds: usize = std::env::var("MESHRELAY_APP_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let mut rng = StdRng::seed_from_u64(0xC4A5);
    let mut acked: Vec<String> = Vec::new();
    for _ in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "app::crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_ENV, &a.dir)
            .env("MESHRELAY_APP_CRASH_ROOM", room.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("ACK ") {
                    let _ = tx.send(id.to_owned());
                }
            }
        });
        // Kill at a random moment once the child is sending.
        let first = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("child sends");
        acked.push(first);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        acked.extend(rx.try_iter());
        // The store opens cleanly and holds every acknowledged message,
        // readable, exactly once.
        a.clock = wall_ms();
        let lines = a.messages(&room);
        for id in &acked {
            let n = lines
                .iter()
                .filter(|l| matches!(l, MessageLine::Text { event_id, .. } if event_id == id))
                .count();
            assert_eq!(n, 1, "acknowledged {id} must be stored and readable once");
        }
    }
    assert!(!acked.is_empty(), "the child acknowledged nothing");
    eprintln!("{} rounds, {} acknowledged sends", rounds, acked.len());
    b.clock = wall_ms();
    let sum = b.import(&a.export(&room));
    assert_eq!(sum.rejected, 0, "{sum:?}");
    let b_lines = b.messages(&room);
    for id in &acked {
        assert!(
            b_lines
                .iter()
                .any(|l| matches!(l, MessageLine::Text { event_id, .. } if event_id == id)),
            "B cannot read acknowledged {id}: a chain position was lost or reused"
        );
    }
}

/// The binary flattens the rooms commands into its own enum; this is the
/// shape the lead hooks in, parsed the way the binary parses it.
mod hook {
    use clap::{Parser, Subcommand};
    use meshrelay::cli::rooms::{RoomAction, RoomsCommand};

    #[derive(Parser)]
    struct Cli {
        #[arg(long, global = true)]
        data_dir: Option<std::path::PathBuf>,
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        Init,
        #[command(flatten)]
        Rooms(RoomsCommand),
    }

    #[test]
    fn rooms_commands_flatten_into_the_binary() {
        let p = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
        assert!(matches!(p(&["m", "init"]), Ok(Command::Init)));
        assert!(matches!(
            p(&["m", "--data-dir", "/x", "room", "create", "ops", "--json"]),
            Ok(Command::Rooms(RoomsCommand::Room {
                action: RoomAction::Create { json: true, .. }
            }))
        ));
        assert!(matches!(
            p(&["m", "messages", "ab", "--follow", "--json"]),
            Ok(Command::Rooms(RoomsCommand::Messages {
                follow: true,
                json: true,
                ..
            }))
        ));
        assert!(matches!(
            p(&["m", "export", "--room", "ab", "-"]),
            Ok(Command::Rooms(RoomsCommand::Export { .. }))
        ));
        assert!(matches!(
            p(&["m", "import", "-"]),
            Ok(Command::Rooms(RoomsCommand::Import { .. }))
        ));
        assert!(matches!(
            p(&["m", "rooms"]),
            Ok(Command::Rooms(RoomsCommand::Rooms { json: false }))
        ));
        assert!(p(&["m", "room", "remove", "ab"]).is_err());
    }
}

#[test]
fn invite_by_device_id_from_the_contact_book_file() {
    let (mut a, mut b, _c) = abc();
    let room = a.create("book");
    // The contact book `meshrelay contact add` writes.
    let book_dir = meshrelay::datadir::DataDir::new(&a.dir);
    let mut book = meshrelay::contacts::ContactBook::load(&book_dir).unwrap();
    book.add_text(&b.card()).unwrap();
    book.save(&book_dir).unwrap();
    a.invite(&room, &b.id.to_string());
    b.import(&a.export(&room));
    assert_eq!(b.rooms()[0].name, "book");
    // An unknown device ID is refused with a clear error.
    let (now, mut d) = (a.now(), a.open());
    let stranger = Dev::new(99, "Zed").id;
    let err = d
        .room_invite(&room, &stranger.to_string(), now, &mut a.rng)
        .unwrap_err();
    assert!(err.to_string().contains("no stored contact"), "{err}");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Devices A and B, their room, and A's bundle of it.
    type Fixture = (Dev, Dev, RoomId, Vec<u8>);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Damaged bundles never panic the importer, never store an event
        /// that does not verify, and leave the room readable.
        #[test]
        fn damaged_bundles_are_handled(flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
                                       cut in proptest::option::of(any::<prop::sample::Index>())) {
            thread_local! {
                static FIXTURE: std::cell::RefCell<Option<Fixture>> = const { std::cell::RefCell::new(None) };
            }
            FIXTURE.with(|f| {
                let mut f = f.borrow_mut();
                let (a, b, room, bytes) = f.get_or_insert_with(|| {
                    let (mut a, mut b, _c) = abc();
                    let room = a.create("fuzz");
                    let b_card = b.card();
                    a.invite(&room, &b_card);
                    a.send(&room, "payload");
                    let bytes = a.export(&room);
                    (a, b, room, bytes)
                });
                let mut bad = bytes.clone();
                for (i, x) in &flips {
                    let i = i.index(bad.len());
                    bad[i] ^= x;
                }
                if let Some(c) = cut {
                    bad.truncate(c.index(bad.len()));
                }
                let now = b.now();
                let mut d = Device::open(&b.dir, now).unwrap();
                if let Ok(sum) = d.import(&bad, now) {
                    prop_assert_eq!(sum.rejected, sum.rejections.len());
                }
                drop(d);
                // Everything stored verifies.
                let store = b.raw_store();
                for r in store.rooms().unwrap() {
                    for it in store.room_items(&r.room, (Bound::Unbounded, Bound::Unbounded), 10_000).unwrap() {
                        let ev = store.get_event(&it.id).unwrap().unwrap();
                        prop_assert!(Event::decode(&ev).is_ok());
                    }
                }
                drop(store);
                let _ = b.open().messages(room);
                let _ = a;
                Ok(())
            })?;
        }
    }
}

#[test]
fn rotated_prekey_is_published_used_by_senders_and_the_old_one_deleted() {
    use meshrelay::app::PREKEY_GRACE_MS;
    use meshrelay::crypto::ContactCard;
    let (mut a, mut b, mut c) = (Dev::new(71, "A"), Dev::new(72, "B"), Dev::new(73, "C"));
    let room = a.create("r");
    let (bc, cc) = (b.card(), c.card());
    a.invite(&room, &bc);
    a.invite(&room, &cc);
    a.send(&room, "before");
    let x = a.export(&room);
    b.import(&x);
    assert_eq!(b.texts(&room), ["before"]);

    // B rotates: the ring, the update event and then the card.
    let now = b.now();
    let mut d = b.open();
    let r = d.rotate_prekey(now, &mut b.rng).unwrap();
    drop(d);
    assert_eq!((r.prekey_id, r.rooms, r.pruned), (2, 1, 0));
    let card_text = std::fs::read_to_string(b.dir.join("card.txt")).unwrap();
    let card = ContactCard::from_text(card_text.trim()).unwrap();
    assert_eq!(card.prekey_id, 2, "card.txt publishes the new prekey");
    assert_eq!(b.open().card().prekey_id, 2, "and reopens consistently");
    // A learns B's new prekey from the room.
    let x = b.export(&room);
    let sum = a.import(&x);
    assert!(sum.unauthorized.is_empty(), "{sum:?}");

    // Past the grace period B deletes prekey 1 on its next rotation.
    for dev in [&mut a, &mut b, &mut c] {
        dev.clock += PREKEY_GRACE_MS + 60_000;
    }
    let now = b.now();
    let mut d = b.open();
    let r = d.rotate_prekey(now, &mut b.rng).unwrap();
    drop(d);
    assert_eq!((r.prekey_id, r.pruned), (3, 1), "prekey 1 is gone");

    // A removes C and starts a new chain for B: B can open its share only
    // if A sealed it to the rotated prekey (2), since 1 no longer exists.
    let c_id = c.id;
    a.remove(&room, &c_id);
    a.send(&room, "after the rotation");
    let x = a.export(&room);
    b.import(&x);
    let texts = b.texts(&room);
    assert!(
        texts.iter().any(|t| t == "after the rotation"),
        "{texts:?} / {:?}",
        b.undecryptable(&room)
    );
}

/// An expired message does not outlive its expiry in readable form: after
/// the store drops the expired events, pruning deletes their decrypted
/// contents from the secret table, as a forensic read of the store shows.
#[test]
fn expired_messages_leave_no_plaintext_behind() {
    let (mut a, mut b, _) = abc();
    let room = room_with_b(&mut a, &mut b);
    let sent = a.send(&room, "burn after reading");
    assert_eq!(a.texts(&room), vec!["burn after reading".to_string()]);
    let pt_key = |id: &EventId| [app::PLAINTEXT_PREFIX, id.as_bytes()].concat();
    assert!(a.raw_store().get_secret(&pt_key(&sent)).unwrap().is_some());
    // Long past every event's lifetime and grace.
    let later = a.clock
        + meshrelay::limits::DEFAULT_EVENT_LIFETIME_MS
        + meshrelay::limits::EXPIRY_GRACE_MS
        + 60_000;
    let mut dev = Device::open(&a.dir, later).unwrap();
    assert!(dev.store_mut().expire(later).unwrap() > 0);
    let pruned = dev.prune_orphaned_plaintexts().unwrap();
    assert!(pruned >= 1, "pruned {pruned}");
    dev.store_mut().commit().unwrap();
    // Nothing left to prune, and the plaintext is gone from the store.
    assert_eq!(dev.prune_orphaned_plaintexts().unwrap(), 0);
    drop(dev);
    assert!(a.raw_store().get_secret(&pt_key(&sent)).unwrap().is_none());
}

/// Issue 15, bounded key state: a member opens 13 chains and jumps each
/// `MAX_SKIP` ahead (26,000 skipped keys offered, over 1 MiB of key state
/// before the per-room cap). The victim keeps sending, keeps processing
/// membership changes and key shares, and keeps reading later messages.
#[test]
fn member_skipping_far_ahead_on_many_chains_cannot_jam_the_room() {
    use meshrelay::crypto::key_share::seal_shares;
    use meshrelay::crypto::sender_chain::{MAX_SKIP, OutboundChain, ratchet_step};
    use meshrelay::room::RoomDag;
    use meshrelay::room::keys::{MAX_ROOM_KEYS_BYTES, MAX_ROOM_SKIPPED_KEYS, recipients};
    use std::collections::BTreeMap;

    let (mut a, mut m, mut b) = abc();
    let room = room_with_b(&mut a, &mut m);
    let b_card = b.card();
    a.open().add_contact(&b_card).unwrap();
    a.invite(&room, &b.id.to_string());
    let history = a.export(&room);
    assert_eq!(b.import(&history).rejected, 0);
    assert_eq!(m.import(&history).rejected, 0);

    // The attacker's own implementation: its identity, a DAG of the room,
    // and hand-made chains.
    let (ident, _) = app::load_identity(&m.dir).unwrap();
    let me = ident.device_id();
    let mut dag = RoomDag::new(room);
    // As a member, it reads the roster (its room keys hold the secret).
    let m_keys = {
        let store = m.raw_store();
        let k = store.secret_keys(b"room-keys/").unwrap();
        RoomKeys::from_bytes(&store.get_secret(&k[0]).unwrap().unwrap()).unwrap()
    };
    assert!(
        !m_keys.roster.is_empty(),
        "a member holds the roster secret"
    );
    dag.preset_roster_secrets(m_keys.roster.clone());
    for ev in events_of(&history) {
        dag.insert(&ev).unwrap();
    }
    let mut forged: Vec<Vec<u8>> = Vec::new();
    let mut emit = |dag: &mut RoomDag, kind: EventKind, payload: Vec<u8>, now: u64| {
        let ev = UnsignedEvent {
            room,
            sender: me,
            seq: dag.max_seq(&me) + 1,
            prev: dag.heads(),
            origin_ts_ms: now,
            expires_ms: now + 86_400_000,
            kind,
            payload,
        }
        .sign(&ident)
        .unwrap();
        dag.insert(&ev).unwrap();
        forged.push(ev.bytes().to_vec());
    };
    for _ in 0..13 {
        let now = m.now();
        let out = OutboundChain::new(room, now, &mut m.rng);
        let to = recipients(&dag.members(), &me, &BTreeMap::new());
        for p in seal_shares(&room, &me, &out.share(), &to, &mut m.rng).unwrap() {
            emit(&mut dag, EventKind::KeyShare, p.to_bytes(), now);
        }
        // The chain state at index MAX_SKIP, in the persisted format.
        let mut ck = out.share().chain_key;
        for _ in 0..MAX_SKIP {
            ck = ratchet_step(&ck).1;
        }
        let mut w = Writer::new();
        w.array(6)
            .u64(1)
            .bytes(room.as_bytes())
            .bytes(&out.chain_id().0)
            .u64(MAX_SKIP as u64)
            .bytes(ck.as_ref())
            .u64(now);
        let far = OutboundChain::from_bytes(&w.into_bytes()).unwrap();
        let (_, payload) = far
            .encrypt(
                &me,
                &meshrelay::room::Content::Text("far ahead".into()).to_bytes(),
                &mut m.rng,
            )
            .unwrap()
            .release();
        emit(&mut dag, EventKind::Message, payload.to_bytes(), now);
    }
    let sum = a.import(&raw_bundle(&forged));
    assert_eq!(sum.rejected, 0, "{sum:?}");
    assert_eq!(
        a.texts(&room).iter().filter(|t| *t == "far ahead").count(),
        13
    );

    // The victim's key state is within the caps and the storage limit.
    let keys_bytes = {
        let store = a.raw_store();
        let k = store.secret_keys(b"room-keys/").unwrap();
        store.get_secret(&k[0]).unwrap().unwrap()
    };
    assert!(keys_bytes.len() <= MAX_ROOM_KEYS_BYTES);
    let keys = RoomKeys::from_bytes(&keys_bytes).unwrap();
    assert!(keys.skipped_len() <= MAX_ROOM_SKIPPED_KEYS);

    // The victim keeps sending ...
    a.send(&room, "still here");
    assert_eq!(b.import(&a.export(&room)).rejected, 0);
    assert_eq!(b.texts(&room).last().unwrap(), "still here");
    // ... processes a new member's key share and reads its messages ...
    b.send(&room, "B after the attack");
    assert_eq!(a.import(&b.export(&room)).rejected, 0);
    assert_eq!(a.texts(&room).last().unwrap(), "B after the attack");
    // ... and a membership change with its new epoch.
    a.remove(&room, &m.id);
    a.send(&room, "without M");
    assert_eq!(b.import(&a.export(&room)).rejected, 0);
    assert_eq!(b.texts(&room).last().unwrap(), "without M");
    assert!(!a.members(&room).iter().any(|(d, _)| *d == m.id.to_string()));
}

fn export_all(d: &mut Dev) -> Vec<u8> {
    let now = d.now();
    d.open().export(None, now).unwrap()
}

/// Issue 15: a bundle's rooms are imported independently. One room that
/// cannot be processed (here: its stored key state is corrupt) is rolled
/// back and listed in `failed_rooms`; the other room's events are stored
/// and read. A normal import's JSON has no `failed_rooms`.
#[test]
fn one_failing_room_does_not_reject_the_other_rooms_of_a_bundle() {
    let (mut a, mut b, _) = abc();
    let good = room_with_b(&mut a, &mut b);
    let bad = a.create("second");
    a.invite(&bad, &b.id.to_string());
    let sum = b.import(&export_all(&mut a));
    assert!(sum.failed_rooms.is_empty(), "{sum:?}");
    let json = serde_json::to_string(&sum).unwrap();
    assert!(!json.contains("failed_rooms"), "{json}");

    // Corrupt B's key state of one room.
    {
        let mut store = b.raw_store();
        let mut key = b"room-keys/".to_vec();
        key.extend_from_slice(bad.as_bytes());
        assert!(store.get_secret(&key).unwrap().is_some());
        store.put_secret(&key, b"\xff not room keys").unwrap();
        store.commit().unwrap();
    }
    a.send(&good, "good room still works");
    a.send(&bad, "into the broken room");
    let sum = b.import(&export_all(&mut a));
    assert_eq!(sum.failed_rooms.len(), 1, "{sum:?}");
    assert_eq!(sum.failed_rooms[0].room_id, bad.to_string());
    assert!(sum.failed_rooms[0].reason.contains("room keys"), "{sum:?}");
    assert_eq!((sum.imported, sum.rejected), (1, 0), "{sum:?}");
    let json = serde_json::to_string(&sum).unwrap();
    assert!(json.contains(r#""failed_rooms":[{"room_id":""#), "{json}");
    assert_eq!(b.texts(&good).last().unwrap(), "good room still works");
    // Nothing of the failed room was stored: importing again retries it,
    // and when every room of an import fails, the import fails as before.
    let bundle_bytes = export_all(&mut a);
    let now = b.now();
    let err = b.open().import(&bundle_bytes, now).unwrap_err();
    assert!(err.to_string().contains("room keys"), "{err}");
}
