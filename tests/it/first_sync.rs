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

/// `status` of the daemon on `dir`, over its control socket.
fn control_status(dir: &std::path::Path) -> Value {
    use meshrelay::control::{self, OkData, Op, Request};
    let stream = control::connect(dir).expect("daemon socket");
    match control::call(dir, stream, &Request::new(Op::Status), |_| Ok(())) {
        Ok(OkData::Status { status }) => status,
        other => panic!("status: {other:?}"),
    }
}

#[test]
fn a_new_member_invited_before_the_history_syncs_at_link_speed() {
    first_sync(false);
}

#[test]
fn a_new_member_invited_after_the_history_syncs_at_link_speed() {
    first_sync(true);
}

/// The same through a carrier: C is no member of the room; it links to A
/// and carries the whole history (A's events skip C's per-key stranger
/// budgets once C verified A's membership, `wire.md` "Carried rooms");
/// then A goes away and B, which never meets A, links to C.
#[test]
fn a_new_member_syncs_through_a_carrier_at_link_speed() {
    first_sync_via(false, true);
}

/// Initialises A and B; A creates a room of `n` messages of about 700
/// characters and invites B before or after them.
fn room_with_history(
    a: &std::path::Path,
    b: &std::path::Path,
    n: usize,
    invite_last: bool,
) -> meshrelay::event::RoomId {
    ok(a, &["init", "--name", "Ana"]);
    ok(b, &["init", "--name", "Bo"]);
    let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
    let t0 = now_ms() - 3_600_000;
    let mut dev = Device::open(a, t0).unwrap();
    let room = dev.room_create("ops", t0, &mut rng).unwrap();
    if !invite_last {
        dev.room_invite(&room, &card(b), t0 + 1, &mut rng).unwrap();
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
        dev.room_invite(&room, &card(b), t0 + 20 + n as u64, &mut rng)
            .unwrap();
    }
    room
}

fn first_sync(invite_last: bool) {
    first_sync_via(invite_last, false);
}

/// Waits until the daemon on `dir` holds `held` events; the time it took.
fn wait_for_events(dir: &std::path::Path, held: u64, start: Instant) -> Option<Duration> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if control_status(dir)["store"]["events"].as_u64().unwrap_or(0) >= held {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Bytes the links of the daemon on `dir` carried into it.
fn bytes_in(dir: &std::path::Path) -> u64 {
    let peers: Value = serde_json::from_str(&ok(dir, &["peers", "--json"])).unwrap();
    peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes_in"].as_u64().unwrap_or(0))
        .sum()
}

fn first_sync_via(invite_last: bool, via_carrier: bool) {
    let n: usize = std::env::var("FIRST_SYNC_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let room = room_with_history(&a, &b, n, invite_last);
    let held = status(&a)["store"]["events"].as_u64().unwrap();
    // Through a carrier: epidemic carrying (`--copy-budget 0`). Under the
    // default budget A's history, written while no daemon ran, carries one
    // copy and goes to members only (`protocol-spec/wire.md`, "Copy
    // budget").
    let budget: &[&str] = if via_carrier {
        &["--link-budget-kib", "65536", "--copy-budget", "0"]
    } else {
        &["--link-budget-kib", "65536"]
    };
    let mut da = Some(Daemon::start_with(&a, "Ana", 0, &[], budget));
    let mut dc = None;
    let mut addr = da.as_ref().unwrap().tcp_addr();
    if via_carrier {
        ok(&c, &["init", "--name", "Cy"]);
        let start = Instant::now();
        let carrier = Daemon::start_with(&c, "Cy", 0, &[addr], budget);
        let carried_at = wait_for_events(&c, held, start);
        let st = carrier.status();
        let (c_in, c_stored) = (bytes_in(&c), st["store"]["bytes"].as_u64().unwrap_or(0));
        eprintln!(
            "carrier C holds {} of {held} events after {carried_at:?}; refused {}; \
             {c_in} bytes in, {c_stored} bytes stored ({:.2}x)",
            st["store"]["events"],
            st["daemon"]["refused_events"],
            c_in as f64 / c_stored.max(1) as f64
        );
        let carried_at = carried_at.expect("the carrier holds the whole history");
        // Before carried rooms, C's per-key stranger budgets refused most
        // of A's history and it was sent again: 1.6x the bytes, ~70 s.
        // Idle, 0.85x. On a loaded machine the rooms layer verifies the
        // second member later, and its events wait once for that (1.23x
        // seen in a CI run, 1,823 refused): the bound catches a return to
        // refusing the history, not the load.
        assert!(
            c_in * 5 <= c_stored * 7,
            "{c_in} bytes into the carrier for {c_stored} stored"
        );
        assert!(carried_at <= MAX_FIRST_SYNC, "carried after {carried_at:?}");
        assert!(
            st["rooms"].as_u64() == Some(0),
            "the carrier is no member: {st}"
        );
        // A goes away: B never meets it.
        da = None;
        addr = carrier.tcp_addr();
        dc = Some(carrier);
    }
    let start = Instant::now();
    let db = Daemon::start_with(&b, "Bo", 0, &[addr], budget);
    let mut member_at = None;
    let mut all_at = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = Value::Null;
    let room_hex = room.to_string();
    while Instant::now() < deadline {
        // Straight over the control socket: polled often enough to time a
        // release build's two-second sync.
        let st = control_status(&b);
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
        std::thread::sleep(Duration::from_millis(20));
    }
    // Progress (see the test below) ends once B holds it all.
    let done = db.status();
    assert!(
        done["syncing"]
            .as_array()
            .is_some_and(|a| a.iter().all(|p| p["room_id"] != room_hex.as_str())),
        "still syncing after B holds every event: {done}"
    );
    let bytes_in = bytes_in(&b);
    let stored = last["store"]["bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "first sync of {held} events (invite {}{}): member after {member_at:?}, all after {all_at:?}, \
         {bytes_in} bytes in, {stored} bytes stored ({:.2}x); B holds {}",
        if invite_last { "last" } else { "first" },
        if via_carrier {
            ", through a carrier"
        } else {
            ""
        },
        bytes_in as f64 / stored.max(1) as f64,
        last["store"]["events"]
    );
    eprintln!("B's daemon counters: {}", last["daemon"]);
    drop((da, db, dc));
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
    // The goal: at most 1.2x the stored bytes on the link, frames
    // and reconciliation included (1.6x and 13x before).
    assert!(
        bytes_in * 5 <= stored * 6,
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

/// `syncing` progress: 1,000 messages (1.5 MB) over a 256 KiB/s link
/// budget take several seconds, during which `status --json` reports the
/// room with `have` rising towards A's count and `status` prints it; a
/// `messages --follow` on a terminal (a pseudo-terminal from `script`)
/// draws the progress bar on standard error.
#[test]
fn a_first_sync_shows_its_progress_in_status_and_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let room = room_with_history(&a, &b, 1000, false);
    let held = status(&a)["store"]["events"].as_u64().unwrap();
    let room_hex = room.to_string();
    let budget = ["--link-budget-kib", "256"];
    let da = Daemon::start_with(&a, "Ana", 0, &[], &budget);
    let addr = da.tcp_addr();
    let db = Daemon::start_with(&b, "Bo", 0, &[addr], &budget);
    // B's invite comes first (control events have their own budget).
    crate::daemon::wait_until("B a member", || status(&b)["rooms"] == 1);
    let follow_cmd = format!(
        "{} --data-dir {} messages {room_hex} --follow",
        crate::daemon::BIN,
        b.display()
    );
    let mut follower = std::process::Command::new("script")
        .args(["-qfec", &follow_cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("script (bsdutils) runs");
    // What the terminal shows, read as it comes.
    let term = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let term = term.clone();
        let mut stdout = follower.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stdout, &mut buf) {
                term.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let mut human = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let st = control_status(&b);
        let entry = st["syncing"].as_array().and_then(|a| {
            a.iter()
                .find(|p| p["room_id"] == room_hex.as_str())
                .cloned()
        });
        match entry {
            Some(p) => {
                seen.push((p["have"].as_u64().unwrap(), p["estimate"].as_u64().unwrap()));
                if human.is_empty() {
                    human = ok(&b, &["status"]);
                }
            }
            None if st["store"]["events"].as_u64().unwrap_or(0) >= held => break,
            None => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::daemon::wait_until("the follower shows the last message", || {
        String::from_utf8_lossy(&term.lock().unwrap()).contains("00999 yyy")
    });
    let _ = follower.kill();
    let _ = follower.wait();
    let _ = reader.join();
    let term = String::from_utf8_lossy(&term.lock().unwrap()).into_owned();
    drop((da, db));
    let count = format!("of {},{:03} events", held / 1000, held % 1000);
    eprintln!(
        "{} syncing entries, first {:?}, last {:?}",
        seen.len(),
        seen.first(),
        seen.last()
    );
    assert!(seen.len() >= 3, "progress seen {} times", seen.len());
    assert!(
        seen.iter().all(|(have, est)| have < est && *est == held),
        "entries below A's count of {held}: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0) && seen.first() < seen.last(),
        "have rises: {seen:?}"
    );
    assert!(
        human.contains(&format!("syncing:    room {room_hex} ")) && human.contains(&count),
        "status for people: {human}"
    );
    assert!(
        term.contains("syncing [") && term.contains(&count),
        "no progress bar on the terminal: {:?}",
        &term[..term.len().min(2000)]
    );
}
