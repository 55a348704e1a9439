//! Drain benchmark (`reports/homeserver.md`): 2,000 queued 1 KiB events
//! uploaded to a real Synapse on 127.0.0.1, bundled versus a naive uploader
//! that sends one PUT per event, with the same HTTP client (connection
//! reuse), the same Synapse and in the same run. A second user reads each
//! room back and checks zero loss and zero duplicates.
//!
//! Run: `cargo bench --profile dev --bench homeserver_drain` (the work is
//! server-bound; a release build of the client changes nothing measurable).
//! `DRAIN_EVENTS` overrides the event count.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use meshrelay::crypto::Identity;
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use meshrelay::transport::homeserver::{
    AccessToken, BUNDLE_EVENT_TYPE, Bundle, Client, MAX_BUNDLE_BYTES, RetryPolicy, decode_content,
    pack,
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

fn events(n: u64) -> Vec<Event> {
    let id = Identity::from_seed(&[5; 32]);
    (1..=n)
        .map(|seq| {
            UnsignedEvent {
                room: RoomId([5; 16]),
                sender: id.device_id(),
                seq,
                prev: vec![],
                origin_ts_ms: 1_700_000_000_000 + seq,
                expires_ms: 1_700_000_000_000 + seq + 86_400_000,
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

    // Bundled: greedy packing up to MAX_BUNDLE_BYTES.
    let bundled_room = writer.create_room(&[&reader_id]).await.expect("room");
    reader.join_room(&bundled_room).await.expect("join");
    let t = Instant::now();
    let bundles = pack(evs.iter().cloned(), MAX_BUNDLE_BYTES);
    for b in &bundles {
        writer
            .send(&bundled_room, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
            .await
            .expect("send");
    }
    let bundled = t.elapsed();
    let (bundled_ids, bundled_seen) = read_back(&reader, &bundled_room, n as usize).await;

    script(&dir, &["stop"]);
    println!("events: {n} x 1 KiB payload");
    println!(
        "naive:   {:>8.2} s  {:>4} requests  {:>7.1} events/s  read back {naive_ids} distinct / {naive_seen} seen",
        naive.as_secs_f64(),
        singles.len(),
        n as f64 / naive.as_secs_f64()
    );
    println!(
        "bundled: {:>8.2} s  {:>4} requests  {:>7.1} events/s  read back {bundled_ids} distinct / {bundled_seen} seen",
        bundled.as_secs_f64(),
        bundles.len(),
        n as f64 / bundled.as_secs_f64()
    );
    println!(
        "speed-up (naive time / bundled time): {:.1}x",
        naive.as_secs_f64() / bundled.as_secs_f64()
    );
    let ok = naive_ids == n as usize
        && naive_seen == n as usize
        && bundled_ids == n as usize
        && bundled_seen == n as usize;
    println!("zero loss, zero duplicates: {ok}");
    assert!(ok);
}
