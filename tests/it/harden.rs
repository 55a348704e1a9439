//! Issue 15 through the real binary: `room repair` (CLI and control API),
//! forks shown in `messages` whatever the arrival order, and a backward
//! jump of the wall clock under a running daemon (libfaketime).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{BIN, Daemon, card, create_room, mr, ok, texts, wait_until};

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Ana's room with `members` invited (by card), the invites exported to
/// each member and imported there. Returns the room ID.
fn room_with(base: &Path, ana: &Path, members: &[&Path]) -> String {
    ok(ana, &["init", "--name", "Ana"]);
    for (i, m) in members.iter().enumerate() {
        ok(m, &["init", "--name", &format!("Member{i}")]);
    }
    let room = create_room(ana, "ops");
    for m in members {
        ok(ana, &["room", "invite", &room, &card(m)]);
    }
    let stick = base.join("invites.bundle");
    let stick = stick.to_str().unwrap();
    ok(ana, &["export", "--room", &room, stick]);
    for m in members {
        ok(m, &["import", stick]);
    }
    room
}

fn carry(base: &Path, from: &Path, to: &Path, room: &str) {
    let stick = base.join("carry.bundle");
    let stick = stick.to_str().unwrap();
    ok(from, &["export", "--room", room, stick]);
    ok(to, &["import", stick]);
}

/// Issue 15, recovery: a member whose stored room-key state is damaged
/// (here: 900 KB of garbage in its `room-keys/` record, as a bloated or
/// corrupted state would be) cannot send; `room repair` rebuilds the state
/// from the stored events, reports it, and the member sends again on a new
/// chain that the others can read. Through the CLI without a daemon and
/// through the control API of a running daemon.
#[test]
fn repair_restores_a_damaged_key_state_and_the_member_sends_again() {
    use meshrelay::store::{EventStore, RedbStore, SecretStore, StoreConfig};
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let room = room_with(tmp.path(), &a, &[&b]);
    ok(&a, &["send", &room, "before the damage"]);
    carry(tmp.path(), &a, &b, &room);
    ok(&b, &["send", &room, "bo before"]);
    assert!(texts(&b, &room).contains(&"before the damage".to_owned()));

    // Damage Bo's key state.
    let garbage = vec![0xA5u8; 900_000];
    {
        let mut s = RedbStore::open(&b.join("store.redb"), StoreConfig::default()).unwrap();
        let mut k = b"room-keys/".to_vec();
        k.extend_from_slice(&hex::decode(&room).unwrap());
        s.put_secret(&k, &garbage).unwrap();
        s.commit().unwrap();
    }
    let o = mr(&b, &["send", &room, "while damaged"]);
    assert!(!o.status.success(), "a damaged key state refuses sends");

    let o = mr(&b, &["room", "repair", &room, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["room_id"], room.as_str());
    let events = r["events"].as_u64().unwrap();
    assert!(events >= 6, "{r}");
    assert_eq!(r["kept"].as_u64().unwrap(), events, "{r}");
    assert_eq!(r["dropped_count"], 0, "{r}");
    assert_eq!(r["dropped"], serde_json::json!([]), "{r}");
    assert_eq!(r["key_state"]["before_bytes"], garbage.len(), "{r}");
    let after = r["key_state"]["after_bytes"].as_u64().unwrap();
    assert!(after > 0 && after < 10_000, "{r}");
    // Exactly the documented keys, nothing more.
    let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "dropped",
            "dropped_count",
            "events",
            "kept",
            "key_state",
            "room_id"
        ]
    );

    // History read before the damage stays readable; Bo sends again and Ana
    // reads it (a new chain, shared with the current members).
    let shown = texts(&b, &room);
    assert!(shown.contains(&"before the damage".to_owned()), "{shown:?}");
    ok(&b, &["send", &room, "after the repair"]);
    carry(tmp.path(), &b, &a, &room);
    let shown = texts(&a, &room);
    assert!(shown.contains(&"after the repair".to_owned()), "{shown:?}");
    assert!(shown.contains(&"bo before".to_owned()), "{shown:?}");
    // Ana's later messages still reach Bo (Bo processes key shares).
    ok(&a, &["send", &room, "still here"]);
    carry(tmp.path(), &a, &b, &room);
    assert!(texts(&b, &room).contains(&"still here".to_owned()));

    // Human form.
    let human = ok(&b, &["room", "repair", &room]);
    assert!(human.starts_with(&format!("room {room}: ")), "{human}");
    assert!(human.contains("0 left out"), "{human}");

    // The control API of a running daemon: the same operation.
    let d = Daemon::start(&b, "Bo", &[]);
    let o = mr(&d.dir, &["room", "repair", &room, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let via: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(via["room_id"], room.as_str());
    assert_eq!(via["kept"], via["events"]);
    assert!(via["key_state"]["before_bytes"].as_u64().unwrap() > 0);
    ok(&d.dir, &["send", &room, "through the daemon"]);
    let o = mr(&d.dir, &["room", "repair", &"0".repeat(32)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown room"), "{}", stderr(&o));
}

/// `room repair` of a room this device holds nothing of: exit 2 and a
/// clear message; a malformed room ID too.
#[test]
fn repair_of_an_unknown_room_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    ok(&a, &["init", "--name", "Ana"]);
    let unknown = "ab".repeat(16);
    let o = mr(&a, &["room", "repair", &unknown, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(err.contains(&format!("unknown room {unknown}")), "{err}");
    let o = mr(&a, &["room", "repair", "not-a-room"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

/// Ana's events of `room` from her store, in bundle order.
fn events_of(dir: &Path, room: &str) -> Vec<meshrelay::event::Event> {
    let tmp = dir.with_extension("all.bundle");
    ok(dir, &["export", "--room", room, tmp.to_str().unwrap()]);
    let bytes = std::fs::read(&tmp).unwrap();
    let (_, raw) = meshrelay::bundle::parse(&bytes).unwrap();
    raw.iter()
        .map(|b| meshrelay::event::Event::decode(b).unwrap())
        .collect()
}

fn write_bundle(path: &Path, events: &[&meshrelay::event::Event]) -> String {
    std::fs::write(path, meshrelay::bundle::export(events.iter().copied(), 1)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Issue 15, forks: Ana signs two events at one sequence number (the
/// second message's ciphertext re-signed at the first one's position, as
/// a cloned device would). Two members import the two copies in opposite
/// orders: both show the same fork line, `{"fork":{"sender","seq",
/// "event_ids"}}` with the IDs ascending, and the same copy (the lowest
/// event ID, `rooms.md` §7.1) as the message at that position.
#[test]
fn a_fork_is_shown_the_same_whatever_the_arrival_order() {
    use meshrelay::event::{EventKind, UnsignedEvent};
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (a, b1, b2) = (base.join("a"), base.join("b1"), base.join("b2"));
    let room = room_with(base, &a, &[&b1, &b2]);
    let before = events_of(&a, &room).len();
    ok(&a, &["send", &room, "copy one"]);
    ok(&a, &["send", &room, "copy two"]);
    let all = events_of(&a, &room);
    let new: Vec<_> = all
        .iter()
        .filter(|e| e.kind() == EventKind::Message)
        .rev()
        .take(2)
        .collect();
    let (e1, e2) = (new[1], new[0]);
    assert_eq!(e2.seq(), e1.seq() + 1);
    let (identity, _) = meshrelay::app::load_identity(&a).unwrap();
    let fork = UnsignedEvent {
        room: e1.room(),
        sender: e1.sender(),
        seq: e1.seq(),
        prev: e1.prev().to_vec(),
        origin_ts_ms: e2.origin_ts_ms(),
        expires_ms: e2.expires_ms(),
        kind: EventKind::Message,
        payload: e2.payload().to_vec(),
    }
    .sign(&identity)
    .unwrap();
    assert_eq!(all.len(), before + 2, "no key share in between");
    // Everything before the forked position, then each copy alone.
    let base_events: Vec<_> = all
        .iter()
        .filter(|e| e.id() != e1.id() && e.id() != e2.id())
        .collect();
    let common = write_bundle(&base.join("common.bundle"), &base_events);
    let one = write_bundle(&base.join("one.bundle"), &[e1]);
    let other = write_bundle(&base.join("fork.bundle"), &[&fork]);
    for b in [&b1, &b2] {
        ok(b, &["import", &common]);
    }
    ok(&b1, &["import", &one]);
    ok(&b1, &["import", &other]);
    ok(&b2, &["import", &other]);
    ok(&b2, &["import", &one]);

    let mut ids = [e1.id().to_string(), fork.id().to_string()];
    ids.sort();
    let (counts, text) = if e1.id() < fork.id() {
        (e1.id().to_string(), "copy one")
    } else {
        (fork.id().to_string(), "copy two")
    };
    let mut seen = Vec::new();
    for b in [&b1, &b2] {
        let lines = json_lines(&ok(b, &["messages", &room, "--json"]));
        let forks: Vec<&Value> = lines.iter().filter(|l| l.get("fork").is_some()).collect();
        assert_eq!(forks.len(), 1, "{lines:?}");
        let f = &forks[0]["fork"];
        assert_eq!(f["sender"], e1.sender().to_string());
        assert_eq!(f["seq"], e1.seq());
        assert_eq!(f["event_ids"], serde_json::json!(ids));
        assert_eq!(forks[0].as_object().unwrap().len(), 1);
        let mut fk: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        fk.sort_unstable();
        assert_eq!(fk, ["event_ids", "sender", "seq"]);
        // The fork line comes right before the copy that counts.
        let at = lines.iter().position(|l| l.get("fork").is_some()).unwrap();
        assert_eq!(lines[at + 1]["event_id"], counts.as_str(), "{lines:?}");
        assert_eq!(lines[at + 1]["text"], text, "{lines:?}");
        let loser = if ids[0] == counts { &ids[1] } else { &ids[0] };
        assert!(
            !lines.iter().any(|l| l["event_id"] == loser.as_str()),
            "{lines:?}"
        );
        let human = ok(b, &["messages", &room]);
        let line = human
            .lines()
            .find(|l| l.trim_start().starts_with("fork: "))
            .unwrap_or_else(|| panic!("{human}"))
            .to_owned();
        assert!(line.contains(&format!("shown: {}", ids[0])), "{line}");
        seen.push((f.clone(), lines[at + 1].clone(), line));
    }
    assert_eq!(
        seen[0], seen[1],
        "the same fork line and copy in either order"
    );
    // Counted in the store's report too.
    let st: Value = serde_json::from_str(&ok(&b2, &["store", "check", "--json"])).unwrap();
    assert_eq!(st["stats"]["forks"], 1, "{st}");
}

/// The libfaketime preload library (installed by `scripts/test-deps.sh`).
fn libfaketime() -> PathBuf {
    crate::field::need("faketime");
    for dir in [
        "/usr/lib/x86_64-linux-gnu/faketime",
        "/usr/lib/aarch64-linux-gnu/faketime",
        "/usr/lib/faketime",
        "/usr/local/lib/faketime",
    ] {
        let p = Path::new(dir).join("libfaketime.so.1");
        if p.is_file() {
            return p;
        }
    }
    panic!("libfaketime.so.1 not found: install the faketime package");
}

/// Issue 15, clock: the wall clock of a RUNNING daemon jumps back one day
/// (libfaketime, its offset file rewritten while the daemon runs; the
/// monotonic clock is left alone). Messages sent before and after the jump
/// by both sides all arrive and are shown on both; the jumped daemon's
/// timestamps keep rising (`event.md`, "Clock floor").
#[test]
fn a_backward_clock_jump_of_a_day_loses_and_refuses_nothing() {
    let lib = libfaketime();
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let offset = tmp.path().join("b.faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let a = Daemon::start(&da, "Ana", &[]);
    ok(&db, &["init", "--name", "Bo"]);
    let envs = vec![
        ("LD_PRELOAD".to_owned(), lib.to_str().unwrap().to_owned()),
        (
            "FAKETIME_TIMESTAMP_FILE".to_owned(),
            offset.to_str().unwrap().to_owned(),
        ),
        ("FAKETIME_NO_CACHE".to_owned(), "1".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
        ("NO_FAKE_STAT".to_owned(), "1".to_owned()),
    ];
    let listen = "/ip4/127.0.0.1/tcp/0".to_owned();
    let args: Vec<String> = vec![
        "--data-dir".into(),
        db.to_str().unwrap().into(),
        "run".into(),
        "--no-mdns".into(),
        "--listen".into(),
        listen,
        "--peer".into(),
        a.tcp_addr(),
    ];
    let b = Daemon::spawn_env(BIN, &db, args, envs);
    wait_until("A and B linked", || a.peers() == 1 && b.peers() == 1);
    let room = create_room(&da, "camp");
    ok(&da, &["room", "invite", &room, &card(&db)]);
    let all_seen = |dir: &Path, want: &[&str]| {
        let t = texts(dir, &room);
        want.iter().all(|w| t.iter().any(|x| x == w))
    };
    wait_until("B joins", || {
        serde_json::from_str::<Value>(&ok(&db, &["rooms", "--json"]))
            .is_ok_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    });
    ok(&da, &["send", &room, "a before"]);
    ok(&db, &["send", &room, "b before"]);
    let before = ["a before", "b before"];
    wait_until("both see the messages before the jump", || {
        all_seen(&da, &before) && all_seen(&db, &before)
    });
    let ts_of = |dir: &Path, text: &str| -> u64 {
        json_lines(&ok(dir, &["messages", &room, "--json"]))
            .iter()
            .find(|l| l["text"] == text)
            .and_then(|l| l["ts"].as_u64())
            .unwrap()
    };
    let b_before = ts_of(&db, "b before");

    // B's wall clock jumps back a day while B runs.
    std::fs::write(&offset, "-1d\n").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    ok(&da, &["send", &room, "a after"]);
    ok(&db, &["send", &room, "b after"]);
    let after = ["a before", "b before", "a after", "b after"];
    wait_until("both see every message after the jump", || {
        all_seen(&da, &after) && all_seen(&db, &after)
    });
    let b_after = ts_of(&db, "b after");
    assert!(
        b_after >= b_before,
        "B's timestamps never run backwards: {b_before} then {b_after}"
    );
    assert!(
        b_after + 3_600_000 > ts_of(&da, "a after"),
        "B kept the time, not the jumped clock"
    );
    drop(b);
    drop(a);
}
