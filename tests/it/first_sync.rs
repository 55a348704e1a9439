//! Issue 21, a new member's first sync: A holds a room of
//! `FIRST_SYNC_EVENTS` (default 4,000) messages of about 700 characters
//! and invited B while B was away; B starts empty and links to A over
//! loopback TCP with a wired-LAN link budget. Measured: when B becomes a
//! member, when it holds every event, and the bytes the link carried into
//! B against the bytes B stored (`reports/first-sync.md`).

use std::time::{Duration, Instant};

use meshrelay::app::Device;
use serde_json::Value;

use crate::daemon::{Daemon, card, ok};

/// What the debug test build must meet (see the assertions).
const MAX_FIRST_SYNC: Duration = Duration::from_secs(40);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn status(dir: &std::path::Path) -> Value {
    serde_json::from_str(&ok(dir, &["status", "--json"])).unwrap()
}

#[test]
fn a_new_member_invited_before_the_history_syncs_at_link_speed() {
    first_sync(false);
}

#[test]
fn a_new_member_invited_after_the_history_syncs_at_link_speed() {
    first_sync(true);
}

fn first_sync(invite_last: bool) {
    let n: usize = std::env::var("FIRST_SYNC_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&a, &["init", "--name", "Ana"]);
    ok(&b, &["init", "--name", "Bo"]);
    let room = {
        let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
        let t0 = now_ms() - 3_600_000;
        let mut dev = Device::open(&a, t0).unwrap();
        let room = dev.room_create("ops", t0, &mut rng).unwrap();
        if !invite_last {
            dev.room_invite(&room, &card(&b), t0 + 1, &mut rng).unwrap();
        }
        let mut i = 0;
        while i < n {
            let k = (n - i).min(200);
            let texts: Vec<String> = (i..i + k)
                .map(|j| format!("{j:05} {}", "y".repeat(694)))
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            dev.send_many(&room, &refs, t0 + 10 + i as u64, &mut rng)
                .unwrap();
            i += k;
        }
        if invite_last {
            dev.room_invite(&room, &card(&b), t0 + 20 + n as u64, &mut rng)
                .unwrap();
        }
        room
    };
    let held = status(&a)["store"]["events"].as_u64().unwrap();
    let budget = ["--link-budget-kib", "65536"];
    let da = Daemon::start_with(&a, "Ana", 0, &[], &budget);
    let addr = da.tcp_addr();
    let start = Instant::now();
    let db = Daemon::start_with(&b, "Bo", 0, &[addr], &budget);
    let mut member_at = None;
    let mut all_at = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let st = db.status();
        if member_at.is_none() && st["rooms"].as_u64().unwrap_or(0) >= 1 {
            member_at = Some(start.elapsed());
        }
        if all_at.is_none() && st["store"]["events"].as_u64().unwrap_or(0) >= held {
            all_at = Some(start.elapsed());
        }
        if member_at.is_some() && all_at.is_some() {
            last = st;
            break;
        }
        if std::env::var_os("FIRST_SYNC_KEEP").is_some() && last["store"] != st["store"] {
            eprintln!("{:?}: B holds {}", start.elapsed(), st["store"]["events"]);
        }
        last = st;
        std::thread::sleep(Duration::from_millis(100));
    }
    let peers: Value = serde_json::from_str(&ok(&b, &["peers", "--json"])).unwrap();
    let bytes_in: u64 = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes_in"].as_u64().unwrap_or(0))
        .sum();
    let stored = last["store"]["bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "first sync of {held} events (invite {}): member after {member_at:?}, all after {all_at:?}, \
         {bytes_in} bytes in, {stored} bytes stored ({:.2}x); B holds {}",
        if invite_last { "last" } else { "first" },
        bytes_in as f64 / stored.max(1) as f64,
        last["store"]["events"]
    );
    drop((da, db));
    if std::env::var_os("FIRST_SYNC_KEEP").is_some() {
        eprintln!("kept {}", tmp.keep().display());
    }
    // Before this fix B never became a member (10 minutes,
    // 13x the stored bytes on the link). The goals (member within
    // 2 s, every event within 5 s, at most 1.2x the bytes) are measured in
    // a release build (`reports/first-sync.md`); the debug build, which
    // processes the history about ten times slower, is held to these.
    let member_at = member_at.expect("B becomes a member");
    let all_at = all_at.expect("B holds every event");
    assert!(member_at <= MAX_FIRST_SYNC, "member after {member_at:?}");
    assert!(all_at <= MAX_FIRST_SYNC, "every event after {all_at:?}");
    assert!(
        bytes_in <= 3 * stored,
        "{bytes_in} bytes on the link for {stored} stored"
    );
    if !invite_last {
        // (Messages sent before B's invite were never shared with it.)
        // Slices of a reconciliation by event-ID prefix deliver the history
        // out of order, and a sender chain keeps at most `MAX_SKIPPED_KEYS`
        // skipped keys; messages waiting for their keys are therefore
        // decrypted in each sender's sequence order (3,599 of 4,000 were
        // readable when they were read in event-ID order).
        let texts = crate::daemon::texts(&b, &room.to_string());
        eprintln!("B reads {} of {n} messages", texts.len());
        assert!(texts.len() == n, "B reads {} of {n} messages", texts.len());
    }
}
