//! Store benchmark behind `reports/store.md`. Run in release mode:
//!
//! ```text
//! cargo run --release --example store_rss            # both measurements
//! cargo run --release --example store_rss -- 100000 5000   # events, throughput events
//! ```
//!
//! 1. Throughput: the same pre-signed events stored through `RedbStore` with
//!    group commit (one commit per 100 events) and with one commit per
//!    event, in the same run, on the same disk; reported as a ratio.
//! 2. Memory: a child process (this binary re-executed) opens a store
//!    holding 100,000 events of 1 KiB and reads every one of them through
//!    the reconciliation index (`room_items`) and `get_event`; it reports its
//!    peak RSS (`VmHWM` from `/proc/self/status`). The store is filled by a
//!    separate process so the fill does not count.
//! 3. Page cache (`--cache PATH` on a filled store): the relay's two store
//!    paths, storing new events with group commit and reading events by ID
//!    through the index, with a 1, 2 and 4 MiB redb page cache,
//!    alternated in the same run (the cache is most of a relay's heap,
//!    `reports/field.md`).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use meshrelay::crypto::identity::Identity;
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use meshrelay::store::{
    EventStore, InsertMeta, MetaStore, Priority, RedbStore, Source, StoreConfig,
};

const T0: u64 = 1_800_000_000_000;
const PAYLOAD: usize = 1024;
const ROOMS: u64 = 100;
const SENDERS: u32 = 10;
const GROUP: usize = 100;

fn ident(n: u32) -> Identity {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    Identity::from_seed(&seed)
}

/// Event `i` of a deterministic workload: rooms round-robin, senders
/// round-robin within a room, contiguous sequence numbers.
fn event(ids: &[Identity], i: u64) -> Event {
    let room_n = i % ROOMS;
    let within = i / ROOMS;
    let sender = (within % u64::from(SENDERS)) as usize;
    let seq = within / u64::from(SENDERS) + 1;
    let mut room = [0u8; 16];
    room[..8].copy_from_slice(&room_n.to_be_bytes());
    UnsignedEvent {
        room: RoomId(room),
        sender: ids[sender].device_id(),
        seq,
        prev: vec![],
        origin_ts_ms: T0 + i,
        expires_ms: T0 + 20 * 86_400_000,
        kind: EventKind::Message,
        payload: vec![(i % 251) as u8; PAYLOAD],
    }
    .sign(&ids[sender])
    .expect("sign")
}

fn meta(i: u64) -> InsertMeta {
    InsertMeta {
        priority: Priority::OwnRoom,
        source: Source::Import,
        received_ms: T0 + i,
        carried: false,
    }
}

fn vm(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn throughput(dir: &Path, n: u64) {
    let ids: Vec<Identity> = (0..SENDERS).map(ident).collect();
    let events: Vec<Event> = (0..n).map(|i| event(&ids, i)).collect();
    let mut results = Vec::new();
    for (label, group) in [
        ("group commit (100/commit)", GROUP),
        ("one commit per event", 1),
    ] {
        let path = dir.join(format!("tp-{group}.redb"));
        let _ = std::fs::remove_file(&path);
        let mut s = RedbStore::open(&path, StoreConfig::default()).expect("open");
        let start = Instant::now();
        for (i, e) in events.iter().enumerate() {
            s.insert_event(e, &meta(i as u64)).expect("insert");
            if (i + 1) % group == 0 {
                s.commit().expect("commit");
            }
        }
        s.commit().expect("commit");
        let secs = start.elapsed().as_secs_f64();
        let rate = n as f64 / secs;
        println!("{label}: {n} events in {secs:.3} s = {rate:.0} events/s");
        results.push(rate);
        drop(s);
        let _ = std::fs::remove_file(&path);
    }
    println!(
        "ratio group/per-event: {:.1}x",
        results[0] / results[1].max(f64::MIN_POSITIVE)
    );
}

fn fill(path: &Path, n: u64) {
    let ids: Vec<Identity> = (0..SENDERS).map(ident).collect();
    let mut s = RedbStore::open(path, StoreConfig::default()).expect("open");
    let start = Instant::now();
    for i in 0..n {
        s.insert_event(&event(&ids, i), &meta(i)).expect("insert");
        if (i + 1) % 1000 == 0 {
            s.commit().expect("commit");
        }
    }
    s.commit().expect("commit");
    let st = s.stats().expect("stats");
    println!(
        "fill: {} events, {} MiB charged, file {} MiB, {:.1} s (incl. signing), fill process VmHWM {} KiB",
        st.events,
        st.bytes >> 20,
        std::fs::metadata(path).map(|m| m.len() >> 20).unwrap_or(0),
        start.elapsed().as_secs_f64(),
        vm("VmHWM:")
    );
}

fn scan(path: &Path) {
    let before = vm("VmHWM:");
    let s = RedbStore::open(path, StoreConfig::default()).expect("open");
    let start = Instant::now();
    let mut events = 0u64;
    let mut bytes = 0u64;
    let mut xor = 0u8;
    for r in s.rooms().expect("rooms") {
        let mut lo = Bound::Unbounded;
        loop {
            let page = s
                .room_items(&r.room, (lo, Bound::Unbounded), 1024)
                .expect("items");
            let Some(last) = page.last().copied() else {
                break;
            };
            for item in &page {
                let b = s.get_event(&item.id).expect("get").expect("present");
                events += 1;
                bytes += b.len() as u64;
                xor ^= b.last().copied().unwrap_or(0);
            }
            lo = Bound::Excluded(last);
        }
    }
    println!(
        "scan: {events} events, {} MiB read in {:.2} s (xor {xor}); VmHWM at start {before} KiB, peak VmHWM {} KiB, VmRSS {} KiB",
        bytes >> 20,
        start.elapsed().as_secs_f64(),
        vm("VmHWM:"),
        vm("VmRSS:")
    );
}

/// Stores `n` new events (group commit) and then reads `reads` events by
/// ID in a scattered order, with a page cache of `cache` bytes; returns
/// (events stored per s, events read per s).
fn cache_run(path: &Path, cache: usize, from: u64, n: u64, held: u64, reads: u64) -> (f64, f64) {
    let ids: Vec<Identity> = (0..SENDERS).map(ident).collect();
    let events: Vec<Event> = (from..from + n).map(|i| event(&ids, i)).collect();
    let mut s = RedbStore::open_with_cache(path, StoreConfig::default(), cache).expect("open");
    let start = Instant::now();
    for (k, e) in events.iter().enumerate() {
        s.insert_event(e, &meta(from + k as u64)).expect("insert");
        if (k + 1) % GROUP == 0 {
            s.commit().expect("commit");
        }
    }
    s.commit().expect("commit");
    let stored = n as f64 / start.elapsed().as_secs_f64();
    // Scattered reads over the whole store: event i of a 100-room
    // workload, in a stride that visits every part of the file.
    let wanted: Vec<_> = (0..reads)
        .map(|k| event(&ids, (k * 7_919) % held).id())
        .collect();
    let start = Instant::now();
    let mut bytes = 0usize;
    for id in &wanted {
        bytes += s.get_event(id).expect("get").map_or(0, |b| b.len());
    }
    assert!(bytes > 0);
    let read = reads as f64 / start.elapsed().as_secs_f64();
    (stored, read)
}

/// Measurement 3: the page cache's size against the relay's store paths.
fn cache(path: &Path, held: u64) {
    const MIB: usize = 1024 * 1024;
    let sizes = [MIB, 2 * MIB, 4 * MIB];
    let mut next = held;
    let mut sums = [(0.0, 0.0); 3];
    for round in 0..3 {
        for (k, cache) in sizes.iter().enumerate() {
            let (w, r) = cache_run(path, *cache, next, 2_000, held, 4_000);
            next += 2_000;
            println!(
                "cache {} MiB, round {round}: store {w:.0} events/s, read by ID {r:.0} events/s",
                cache / MIB
            );
            sums[k].0 += w;
            sums[k].1 += r;
        }
    }
    let base = sums[sizes.len() - 1];
    for (k, cache) in sizes.iter().enumerate() {
        println!(
            "cache {} MiB / 4 MiB: store {:.2}x, read {:.2}x",
            cache / MIB,
            sums[k].0 / base.0,
            sums[k].1 / base.1
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--cache") {
        let held = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
        cache(Path::new(&args[2]), held);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--fill") {
        let n = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
        fill(Path::new(&args[2]), n);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--scan") {
        scan(Path::new(&args[2]));
        return;
    }
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let tp: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5_000);
    // A directory on the real disk (not tmpfs), so fsync costs what it costs.
    let dir: PathBuf = std::env::var_os("MESHRELAY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/store-bench"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    throughput(&dir, tp);
    let path = dir.join("rss.redb");
    let _ = std::fs::remove_file(&path);
    let filler = Command::new(std::env::current_exe().expect("exe"))
        .args(["--fill", path.to_str().expect("utf-8 path"), &n.to_string()])
        .status()
        .expect("fill");
    assert!(filler.success());
    let scanner = Command::new(std::env::current_exe().expect("exe"))
        .args(["--scan", path.to_str().expect("utf-8 path")])
        .status()
        .expect("scan");
    assert!(scanner.success());
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len() >> 20).unwrap_or(0);
    let before = size(&path);
    let start = Instant::now();
    let mut s = RedbStore::open(&path, StoreConfig::default()).expect("open");
    s.compact().expect("compact");
    drop(s);
    println!(
        "compact: file {before} MiB -> {} MiB in {:.1} s",
        size(&path),
        start.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(&path);
}
