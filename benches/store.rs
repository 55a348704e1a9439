//! Criterion benchmark of the store's insert path: 100 pre-signed events of
//! 1 KiB stored through `RedbStore` with one group commit versus one commit
//! per event, and through `MemoryStore` as the no-I/O baseline. The
//! committed figures are in `reports/store.md` (from
//! `examples/store_rss.rs`); this bench is for local comparison.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use meshrelay::crypto::identity::Identity;
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use meshrelay::store::{InsertMeta, MemoryStore, Priority, RedbStore, Source, Store, StoreConfig};

const T0: u64 = 1_800_000_000_000;
const N: u64 = 100;

fn events() -> Vec<Event> {
    let id = Identity::from_seed(&[3; 32]);
    (1..=N)
        .map(|seq| {
            UnsignedEvent {
                room: RoomId([1; 16]),
                sender: id.device_id(),
                seq,
                prev: vec![],
                origin_ts_ms: T0 + seq,
                expires_ms: T0 + 86_400_000,
                kind: EventKind::Message,
                payload: vec![seq as u8; 1024],
            }
            .sign(&id)
            .expect("sign")
        })
        .collect()
}

const META: InsertMeta = InsertMeta {
    priority: Priority::OwnRoom,
    source: Source::Local,
    received_ms: T0,
    carried: false,
};

fn insert_all<S: Store>(s: &mut S, events: &[Event], per_event_commit: bool) {
    for e in events {
        s.insert_event(e, &META).expect("insert");
        if per_event_commit {
            s.commit().expect("commit");
        }
    }
    s.commit().expect("commit");
}

fn bench(c: &mut Criterion) {
    let events = events();
    let mut g = c.benchmark_group("store_insert_100x1KiB");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("memory", |b| {
        b.iter_batched(
            MemoryStore::new_memory,
            |mut s| insert_all(&mut s, &events, false),
            BatchSize::PerIteration,
        )
    });
    for (name, per_event) in [
        ("redb_group_commit", false),
        ("redb_commit_per_event", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir_in("target").expect("tempdir");
                    let s = RedbStore::open(&dir.path().join("store.redb"), StoreConfig::default())
                        .expect("open");
                    (dir, s)
                },
                |(dir, mut s)| {
                    insert_all(&mut s, &events, per_event);
                    (dir, s)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
