//! Drain benchmark (`reports/homeserver-sync.md`): 2,000 queued 1 KiB
//! events uploaded to a real Synapse on 127.0.0.1 by the sync engine
//! (`meshrelay::sync::sync_once` over a real data directory and redb store:
//! compositions persisted before each send, acknowledgements committed
//! after), versus a naive uploader that sends one PUT per event, with the
//! same HTTP client (connection reuse), the same Synapse and in the same
//! run. A second user reads each room back and checks zero loss and zero
//! duplicates.
//!
//! Run: `cargo bench --profile dev --bench homeserver_drain` (the work is
//! server-bound; a release build of the client changes nothing measurable).
//! `DRAIN_EVENTS` overrides the event count.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use meshrelay::app::Device;
use meshrelay::crypto::Identity;
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use meshrelay::store::{EventStore, InsertMeta, InsertOutcome, Priority, Source};
use meshrelay::sync::{DirectHost, NoProgress, SyncOptions};
use meshrelay::transport::homeserver::{
    AccessToken, BUNDLE_EVENT_TYPE, Bundle, Client, RetryPolicy, decode_content,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

fn script(dir: &PathBuf, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/synapse.sh"))
        .args(args)
        .env("SYNAPSE_DIR", dir)
        .env("SYNAPSE_WATCH_PID", std::process::id().to_string())
        .env("SYNAPSE_CLEANUP", "1")
        .output()
        .expect("run synapse.sh");
    assert!(
        out.status.success(),
        "synapse.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn client(url: &str, dir: &PathBuf, name: &str) -> (Client, String) {
    let v: Value = serde_json::from_str(&script(dir, &["register", name, "--json"])).expect("json");
    let c = Client::new(
        url,
        RetryPolicy::default(),
        Box::new(StdRng::seed_from_u64(9)),
    )
    .expect("client")
    .with_token(AccessToken::new(v["access_token"].as_str().expect("token")));
    (c, v["user_id"].as_str().expect("user").to_owned())
}

fn now_ms() -> u64 {
    meshrelay::cli::rooms::now_ms()
}

fn events(n: u64) -> Vec<Event> {
    let now = now_ms();
    let id = Identity::from_seed(&[5; 32]);
    (1..=n)
        .map(|seq| {
            UnsignedEvent {
                room: RoomId([5; 16]),
                sender: id.device_id(),
                seq,
                prev: vec![],
                origin_ts_ms: now - 60_000 + seq,
                expires_ms: now + 86_400_000 + seq,
                kind: EventKind::Message,
                payload: (0..1024).map(|i| (i as u64 ^ seq) as u8).collect(),
            }
            .sign(&id)
            .expect("sign")
        })
        .collect()
}

/// Reads the whole room as B; returns (distinct envelope IDs, envelopes seen).
async fn read_back(reader: &Client, room: &str, want: usize) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut since: Option<String> = None;
    let mut ids = BTreeSet::new();
    let mut seen = 0;
    loop {
        let batch = reader
            .sync_filling_gaps(room, since.as_deref(), Duration::from_secs(2), 10_000)
            .await
            .expect("sync");
        for e in &batch.events {
            if let Ok(d) = decode_content(&e.content) {
                seen += d.events.len();
                ids.extend(d.events.iter().map(|e| e.id()));
            }
        }
        since = Some(batch.next_batch);
        if ids.len() >= want || Instant::now() > deadline {
            return (ids.len(), seen);
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u64 = std::env::var("DRAIN_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("synapse-bench-{}", std::process::id()));
    let t0 = Instant::now();
    let url = script(&dir, &["start"]);
    println!("synapse {url} ready in {:.1} s", t0.elapsed().as_secs_f64());
    let (writer, _) = client(&url, &dir, "writer");
    let (reader, reader_id) = client(&url, &dir, "reader");
    let evs = events(n);

    // Naive: one PUT per event (a one-envelope bundle each).
    let naive_room = writer.create_room(&[&reader_id]).await.expect("room");
    reader.join_room(&naive_room).await.expect("join");
    let singles: Vec<Bundle> = evs
        .iter()
        .map(|e| Bundle::new(vec![e.clone()]).expect("bundle"))
        .collect();
    let t = Instant::now();
    for b in &singles {
        writer
            .send(&naive_room, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
            .await
            .expect("send");
    }
    let naive = t.elapsed();
    let (naive_ids, naive_seen) = read_back(&reader, &naive_room, n as usize).await;

    // The sync engine: the 2,000 events queued in a real data directory's
    // store, drained by `sync_once` (what `meshrelay sync --once` runs).
    let bundled_room = writer.create_room(&[&reader_id]).await.expect("room");
    reader.join_room(&bundled_room).await.expect("join");
    let data = tempfile::tempdir().expect("tmp");
    let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
    meshrelay::app::init(data.path(), "bench", now_ms(), &mut rng).expect("init");
    let mut dev = Device::open(data.path(), now_ms()).expect("device");
    let meta = InsertMeta {
        priority: Priority::OwnRoom,
        source: Source::Import,
        received_ms: now_ms(),
        carried: false,
    };
    for e in &evs {
        let out = dev.store_mut().insert_event(e, &meta).expect("insert");
        assert_eq!(out, InsertOutcome::Inserted);
    }
    dev.store_mut().commit().expect("commit");
    let mut host = DirectHost::new(dev, now_ms);
    let opts = SyncOptions::new(&bundled_room, "writer");
    let t = Instant::now();
    let report = meshrelay::sync::sync_once(&mut host, &writer, &opts, &mut NoProgress)
        .await
        .expect("sync");
    let bundled = t.elapsed();
    assert_eq!(report.uploaded, n, "{report:?}");
    let (bundled_ids, bundled_seen) = read_back(&reader, &bundled_room, n as usize).await;
    let bundles = report.bundles;

    script(&dir, &["stop"]);
    println!("events: {n} x 1 KiB payload");
    println!(
        "naive:   {:>8.2} s  {:>4} requests  {:>7.1} events/s  read back {naive_ids} distinct / {naive_seen} seen",
        naive.as_secs_f64(),
        singles.len(),
        n as f64 / naive.as_secs_f64()
    );
    println!(
        "engine:  {:>8.2} s  {:>4} bundles   {:>7.1} events/s  read back {bundled_ids} distinct / {bundled_seen} seen",
        bundled.as_secs_f64(),
        bundles,
        n as f64 / bundled.as_secs_f64()
    );
    println!(
        "speed-up (naive time / engine time): {:.1}x",
        naive.as_secs_f64() / bundled.as_secs_f64()
    );
    let ok = naive_ids == n as usize
        && naive_seen == n as usize
        && bundled_ids == n as usize
        && bundled_seen == n as usize;
    println!("zero loss, zero duplicates: {ok}");
    assert!(ok);
}
