//! Crash test through the real store path: a child process (this test
//! binary, re-executed) signs events and stores them through [`RedbStore`]
//! with group commit, printing each event ID only after its batch is
//! committed. The parent SIGKILLs it at random moments and, after every
//! kill, reopens the store and checks that every acknowledged event is
//! present, the store opens and checks cleanly, nothing appears twice and
//! the high-water mark is consistent.
//!
//! `MESHRELAY_SOAK=N` runs N kills instead of 25; `MESHRELAY_SEED` fixes the
//! random schedule (the seed is printed).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::ops::Bound;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshrelay::crypto::identity::Identity;
use meshrelay::event::{EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::store::{
    EventStore, InsertMeta, InsertOutcome, MetaStore, Priority, RedbStore, Source, StoreConfig,
};

const CHILD_ENV: &str = "MESHRELAY_STORE_CRASH_CHILD";
const ROOM: RoomId = RoomId([0x42; 16]);
const T0: u64 = 1_800_000_000_000;
const DEFAULT_KILLS: usize = 25;

fn identity() -> Identity {
    Identity::from_seed(&[0x11; 32])
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The child: the send path, forever. Resumes at the stored high-water mark
/// (as `meshrelay send` does), chains each event to the room's heads.
fn child(path: &Path, seed: u64) {
    let me = identity();
    let mut store = RedbStore::open(path, StoreConfig::default()).expect("child: open store");
    let mut rng = SplitMix(seed);
    let mut out = std::io::stdout().lock();
    loop {
        let batch = 1 + rng.below(8);
        let mut acked = Vec::new();
        for _ in 0..batch {
            let seq = store.high_water(&ROOM, &me.device_id()).expect("hw") + 1;
            let prev = store.heads(&ROOM).expect("heads");
            let prev: Vec<EventId> = prev.into_iter().take(4).collect();
            let len = 16 + rng.below(3000) as usize;
            let e = UnsignedEvent {
                room: ROOM,
                sender: me.device_id(),
                seq,
                prev,
                origin_ts_ms: T0 + seq,
                expires_ms: T0 + seq + 86_400_000,
                kind: EventKind::Message,
                payload: vec![(seq % 251) as u8; len],
            }
            .sign(&me)
            .expect("sign");
            let meta = InsertMeta {
                priority: Priority::OwnUndelivered,
                source: Source::Local,
                received_ms: T0 + seq,
                carried: false,
            };
            assert_eq!(
                store.insert_event(&e, &meta).expect("insert"),
                InsertOutcome::Inserted
            );
            acked.push((seq, e.id()));
        }
        store.commit().expect("commit");
        // Acknowledge only after commit.
        for (seq, id) in acked {
            writeln!(out, "ack {seq} {id}").expect("stdout");
        }
        out.flush().expect("flush");
    }
}

#[test]
#[ignore = "child process of store_crash_kill9; runs only when re-executed"]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed = std::env::var("MESHRELAY_CHILD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    child(Path::new(&path), seed);
}

fn verify(path: &Path, acked: &BTreeSet<(u64, EventId)>, round: usize) {
    let me = identity().device_id();
    let mut store = RedbStore::open(path, StoreConfig::default())
        .unwrap_or_else(|e| panic!("round {round}: store does not open: {e}"));
    let report = store.check().expect("check");
    assert!(
        report.ok,
        "round {round}: check problems {:?}",
        report.problems
    );
    for (seq, id) in acked {
        assert!(
            store.has_event(id).unwrap(),
            "round {round}: acknowledged seq {seq} {id} lost"
        );
    }
    let hw = store.high_water(&ROOM, &me).unwrap();
    let max_acked = acked.iter().map(|(s, _)| *s).max().unwrap_or(0);
    assert!(
        hw >= max_acked,
        "round {round}: high-water {hw} below acknowledged {max_acked}"
    );
    assert!(
        store.gaps(&ROOM, &me, 10).unwrap().is_empty(),
        "round {round}: gaps"
    );
    // Nothing twice: exactly one event per sequence number, one item each.
    let stats = store.stats().unwrap();
    assert_eq!(stats.events, hw, "round {round}: events vs high-water");
    let items = store
        .room_items(&ROOM, (Bound::Unbounded, Bound::Unbounded), usize::MAX)
        .unwrap();
    let distinct: BTreeSet<_> = items.iter().map(|i| i.id).collect();
    assert_eq!(
        (items.len() as u64, distinct.len() as u64),
        (hw, hw),
        "round {round}"
    );
    for (seq, id) in acked {
        assert_eq!(
            store.event_at_seq(&ROOM, &me, *seq).unwrap(),
            Some(*id),
            "round {round}"
        );
    }
}

#[test]
fn store_crash_kill9() {
    let kills: usize = std::env::var("MESHRELAY_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_KILLS)
        .max(DEFAULT_KILLS);
    let seed: u64 = std::env::var("MESHRELAY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("store_crash_kill9: seed {seed} (MESHRELAY_SEED to reproduce), {kills} kills");
    let mut rng = SplitMix(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acked = BTreeSet::new();
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "store_crash::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .env("MESHRELAY_CHILD_SEED", rng.next().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut got = Vec::new();
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                // A line cut by the kill has no newline: not acknowledged.
                if line.last() != Some(&b'\n') {
                    break;
                }
                let text = String::from_utf8_lossy(&line);
                let mut parts = text.trim_end().split(' ');
                if parts.next() != Some("ack") {
                    continue;
                }
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                let id: EventId = parts.next().unwrap().parse().unwrap();
                got.push((seq, id));
            }
            got
        });
        // Some rounds kill during startup, most mid-stream.
        let wait = if rng.below(5) == 0 {
            rng.below(15)
        } else {
            20 + rng.below(250)
        };
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let got = reader.join().unwrap();
        for a in got {
            assert!(
                acked.insert(a),
                "round {round}: seq {} acknowledged twice",
                a.0
            );
        }
        verify(&path, &acked, round);
    }
    assert!(
        acked.len() > kills,
        "too few acknowledged events ({}) to mean anything",
        acked.len()
    );
    eprintln!(
        "store_crash_kill9: {} acknowledged events survived {kills} kills",
        acked.len()
    );
}
