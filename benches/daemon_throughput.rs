//! Throughput between two real daemons on loopback (`reports/daemon-throughput.md`).
//!
//! * **Floor:** decode + `verify_strict` of 1 KiB events on one core (the
//!   core issue's ingest benchmark), measured first in the same run.
//! * **Backlog:** A holds 10,000 encrypted 1 KiB messages of a room B is in
//!   (B holds the room's start: it was there when invited); B connects;
//!   time until B stores them all.
//! * **Steady state:** with A–B linked, a third member's 10,000 messages are
//!   imported into A in bundles of 500 (each acknowledged after A's
//!   commit); time from the first import until B stores them all.
//!
//! Each scenario runs with the default per-link intake budget (512 KiB/s,
//! sized for phones and BLE) and with `--link-budget-kib 65536` (a wired
//! LAN), so the report shows both the policy's ceiling and the machinery's.
//!
//! Run: `cargo bench --bench daemon_throughput` (`THROUGHPUT_EVENTS`
//! overrides 10,000; `THROUGHPUT_ONLY=lan` runs the wired-LAN budget only,
//! for profiling). Prints a Markdown report, and the time A's imports took
//! in each steady state.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshrelay::app::{self, Device};
use meshrelay::control::{self, OkData, Op, Request};
use meshrelay::crypto::Identity;
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meshrelay");
const BUNDLE: usize = 500;

fn now_ms() -> u64 {
    meshrelay::cli::rooms::now_ms()
}

/// Decode + verify events per second on one core, 1 KiB events.
fn ingest_floor() -> f64 {
    let id = Identity::from_seed(&[3; 32]);
    let evs: Vec<Vec<u8>> = (1..=2000u64)
        .map(|seq| {
            UnsignedEvent {
                room: RoomId([3; 16]),
                sender: id.device_id(),
                seq,
                prev: vec![],
                origin_ts_ms: now_ms(),
                expires_ms: now_ms() + 86_400_000,
                kind: EventKind::Message,
                payload: vec![seq as u8; 1024],
            }
            .sign(&id)
            .expect("sign")
            .bytes()
            .to_vec()
        })
        .collect();
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        for b in &evs {
            Event::decode(b).expect("valid");
        }
        best = best.max(evs.len() as f64 / t.elapsed().as_secs_f64());
    }
    best
}

struct Node {
    dir: PathBuf,
    child: Child,
}

impl Node {
    fn start(dir: &Path, port: u16, peer: Option<u16>, budget: Option<u64>) -> Node {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir")
            .arg(dir)
            .args(["run", "--no-mdns", "--listen"])
            .arg(format!("/ip4/127.0.0.1/tcp/{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = peer {
            cmd.arg("--peer").arg(format!("/ip4/127.0.0.1/tcp/{p}"));
        }
        if let Some(k) = budget {
            cmd.arg("--link-budget-kib").arg(k.to_string());
        }
        let child = cmd.spawn().expect("start daemon");
        let n = Node {
            dir: dir.to_owned(),
            child,
        };
        wait(Duration::from_secs(30), || control::connect(dir).is_some());
        n
    }

    fn call(&self, op: Op) -> OkData {
        let s = control::connect(&self.dir).expect("daemon up");
        control::call(&self.dir, s, &Request::new(op), |_| Ok(())).expect("control call")
    }

    fn events(&self) -> u64 {
        let OkData::Status { status } = self.call(Op::Status) else {
            panic!("not a status reply");
        };
        let v: Value = status;
        v["store"]["events"].as_u64().expect("events")
    }

    fn stop(mut self) {
        let _ = self.call(Op::Shutdown);
        let _ = self.child.wait();
    }
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A with a room that B and W are in; A holds `n` messages of its own;
/// W's `n` messages are returned as bundles for the steady-state phase.
fn setup(base: &Path, n: usize) -> (PathBuf, PathBuf, Vec<Vec<u8>>) {
    let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
    let (da, db, dw) = (base.join("a"), base.join("b"), base.join("w"));
    let now = now_ms();
    for (d, name) in [(&da, "A"), (&db, "B"), (&dw, "W")] {
        app::init(d, name, now, &mut rng).expect("init");
    }
    let card = |d: &Path| app::load_identity(d).expect("identity").1.to_text();
    let text = "x".repeat(1000);
    let mut a = Device::open(&da, now).expect("open a");
    let room = a.room_create("bench", now, &mut rng).expect("room");
    a.room_invite(&room, &card(&db), now, &mut rng)
        .expect("invite b");
    a.room_invite(&room, &card(&dw), now, &mut rng)
        .expect("invite w");
    // B was there when invited (it holds the room's start); the backlog is
    // what A sent while B was away.
    let start = a.export(Some(&room), now_ms()).expect("export start");
    Device::open(&db, now)
        .expect("open b")
        .import(&start, now_ms())
        .expect("b joins");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let texts: Vec<&str> = chunk.iter().map(|_| text.as_str()).collect();
        a.send_many(&room, &texts, now_ms(), &mut rng)
            .expect("send backlog");
    }
    let invite = a.export(Some(&room), now_ms()).expect("export");
    drop(a);
    let mut w = Device::open(&dw, now).expect("open w");
    w.import(&invite, now_ms()).expect("w joins");
    let mut bundles = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(BUNDLE) {
        let texts: Vec<&str> = chunk.iter().map(|_| text.as_str()).collect();
        let ids = w
            .send_many(&room, &texts, now_ms(), &mut rng)
            .expect("w sends");
        let evs: Vec<Event> = ids
            .iter()
            .map(|id| {
                let b = meshrelay::store::EventStore::get_event(w.store(), id)
                    .expect("get")
                    .expect("held");
                Event::decode_unverified(&b).expect("stored event")
            })
            .collect();
        // Key shares and chain starts precede the messages that need them.
        let mut all = Vec::new();
        for e in room_events_not_in(&w, &room, &evs) {
            all.push(e);
        }
        all.extend(evs);
        bundles.push(meshrelay::bundle::export(&all, now_ms()));
    }
    (da, db, bundles)
}

/// W's non-message events (key shares) of the room, so each bundle is
/// self-contained for a receiver that joined already.
fn room_events_not_in<S: meshrelay::store::Store>(
    w: &Device<S>,
    room: &RoomId,
    msgs: &[Event],
) -> Vec<Event> {
    use std::ops::Bound;
    let mine = w.device_id();
    let ids: std::collections::BTreeSet<_> = msgs.iter().map(Event::id).collect();
    let items = w
        .store()
        .room_items(room, (Bound::Unbounded, Bound::Unbounded), 65_536)
        .expect("items");
    items
        .iter()
        .filter(|it| !ids.contains(&it.id))
        .filter_map(|it| w.store().get_event(&it.id).ok().flatten())
        .filter_map(|b| Event::decode_unverified(&b).ok())
        .filter(|e| e.sender() == mine && e.kind() != EventKind::Message)
        .collect()
}

fn run(n: usize, budget: Option<u64>) -> (f64, f64) {
    let tmp = tempfile::tempdir().expect("tmp");
    let (da, db, bundles) = setup(tmp.path(), n);
    let (pa, pb) = (free_port(), free_port());
    let a = Node::start(&da, pa, None, budget);
    let a_events = a.events();
    // Backlog: B connects and catches up.
    let t = Instant::now();
    let b = Node::start(&db, pb, Some(pa), budget);
    let b_before = b.events();
    wait(Duration::from_secs(900), || b.events() >= a_events);
    let backlog = (a_events - b_before) as f64 / t.elapsed().as_secs_f64();
    // Steady state: W's messages enter A in acknowledged bundles.
    let before = b.events();
    let t = Instant::now();
    for bundle in &bundles {
        a.call(Op::Import {
            bundle: data_encoding::BASE64.encode(bundle),
        });
    }
    let imported = t.elapsed();
    wait(Duration::from_secs(900), || b.events() >= before + n as u64);
    let steady = n as f64 / t.elapsed().as_secs_f64();
    if std::env::var("THROUGHPUT_STATUS").is_ok() {
        for (who, d) in [("A", &a), ("B", &b)] {
            let OkData::Status { status } = d.call(Op::Status) else {
                panic!("not a status reply");
            };
            eprintln!("{who}: {status}");
        }
    }
    eprintln!(
        "budget {budget:?}: A's {} imports took {:.1} s of the steady state's {:.1} s",
        bundles.len(),
        imported.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    a.stop();
    b.stop();
    (backlog, steady)
}

fn main() {
    let n: usize = std::env::var("THROUGHPUT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let floor = ingest_floor();
    let lan_only = std::env::var("THROUGHPUT_ONLY").is_ok_and(|v| v == "lan");
    let (db_backlog, db_steady) = if lan_only {
        (f64::NAN, f64::NAN)
    } else {
        run(n, None)
    };
    let (lan_backlog, lan_steady) = run(n, Some(65_536));
    println!("# Daemon throughput on loopback ({n} encrypted 1 KiB messages)\n");
    println!("Ingest floor (decode + verify_strict, one core, same run): {floor:.0} events/s\n");
    println!("| link budget | scenario | events/s | ratio to floor |");
    println!("|---|---|---:|---:|");
    for (budget, scen, v) in [
        ("512 KiB/s (default)", "backlog catch-up", db_backlog),
        ("512 KiB/s (default)", "steady state", db_steady),
        ("64 MiB/s (wired LAN)", "backlog catch-up", lan_backlog),
        ("64 MiB/s (wired LAN)", "steady state", lan_steady),
    ] {
        println!("| {budget} | {scen} | {v:.0} | {:.3} |", v / floor);
    }
}
