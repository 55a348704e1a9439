//! A relay's memory with links (issue 19, `reports/field.md`): a daemon
//! holding many carried events that meets empty peers sends them all, and
//! what it queues per link is paged (`protocol-spec/wire.md`, "Node
//! limits", "Paged outbox"): its resident memory must not grow with the
//! events held times the links.
//!
//! The relay's store is filled directly (60 000 signed events of 100 bytes
//! in 100 rooms, carried for strangers), then it runs with four empty
//! peer daemons linked to it for 20 s. Before the outbox was paged, each
//! link queued every event the peer lacked (about 150 bytes each, plus up
//! to 64 open reconciliation sessions holding their rooms' items): about
//! 10 MiB per link here, 40 MiB for four. Now a link holds at most
//! `MAX_OUTBOX_PER_LINK` queued events and `MAX_BACKLOG_PER_LINK` 40-byte
//! items. The bound on the growth (24 MiB, debug build, other builds
//! running) leaves room for the shared caches (the store's page cache,
//! 2 MiB; the reconciliation view, 2.4 MiB here) and allocator slack.

use std::time::{Duration, Instant};

use meshrelay::crypto::identity::Identity;
use meshrelay::event::{EventKind, RoomId, UnsignedEvent};
use meshrelay::store::{
    EventStore, InsertMeta, MetaStore, Priority, RedbStore, Source, StoreConfig,
};

use crate::daemon::{Daemon, ok, wait_until};

const EVENTS: u64 = 60_000;
const ROOMS: u64 = 100;
const PEERS: usize = 4;
/// Largest growth of the relay's peak RSS (`VmHWM`) once its links are up.
const GROWTH_BOUND_KIB: u64 = 24 * 1024;

fn kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

#[test]
fn a_relay_sending_what_it_holds_to_empty_peers_queues_by_pages() {
    let t = tempfile::tempdir().unwrap();
    let hub_dir = t.path().join("hub");
    ok(&hub_dir, &["init", "--name", "hub"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - EVENTS;
    {
        let senders: Vec<Identity> = (0..10u8)
            .map(|n| Identity::from_seed(&[n + 1; 32]))
            .collect();
        let mut s = RedbStore::open(&hub_dir.join("store.redb"), StoreConfig::default()).unwrap();
        for i in 0..EVENTS {
            let within = i / ROOMS;
            let sender = &senders[(within % 10) as usize];
            let mut room = [0u8; 16];
            room[..8].copy_from_slice(&(i % ROOMS).to_be_bytes());
            let ev = UnsignedEvent {
                room: RoomId(room),
                sender: sender.device_id(),
                seq: within / 10 + 1,
                prev: vec![],
                origin_ts_ms: now + i,
                expires_ms: now + 86_400_000,
                kind: EventKind::Message,
                payload: vec![(i % 251) as u8; 100],
            }
            .sign(sender)
            .unwrap();
            let meta = InsertMeta {
                priority: Priority::Stranger,
                source: Source::Import,
                received_ms: now + i,
                carried: false,
            };
            s.insert_event(&ev, &meta).unwrap();
            if (i + 1) % 2000 == 0 {
                s.commit().unwrap();
            }
        }
        s.commit().unwrap();
        assert_eq!(s.stats().unwrap().events, EVENTS);
    }

    // Epidemic carrying: under a copy budget a relay hands the events it
    // carries with one copy to their rooms' members only, and these peers
    // are in no room.
    let hub = Daemon::start_with(&hub_dir, "hub", 0, &[], &["--copy-budget", "0"]);
    let addr = hub.tcp_addr();
    // Settled: the store is open, nothing linked yet.
    std::thread::sleep(Duration::from_secs(2));
    let before = kib(hub.pid(), "VmHWM:");
    let peers: Vec<Daemon> = (0..PEERS)
        .map(|i| {
            Daemon::start(
                &t.path().join(format!("p{i}")),
                &format!("peer{i}"),
                std::slice::from_ref(&addr),
            )
        })
        .collect();
    wait_until("the relay's links", || hub.peers() == PEERS as u64);
    let until = Instant::now() + Duration::from_secs(20);
    let mut peak = before;
    while Instant::now() < until {
        peak = peak.max(kib(hub.pid(), "VmHWM:"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent: u64 = peers
        .iter()
        .map(|p| p.status()["store"]["events"].as_u64().unwrap())
        .sum();
    let growth = peak.saturating_sub(before);
    println!(
        "relay holding {EVENTS} events, {PEERS} links for 20 s: VmHWM {before} KiB before the links, \
         {peak} KiB with them (+{growth} KiB); the peers received {sent} events"
    );
    // The links carried the catch-up: the peers really were being sent
    // what the relay holds while it was measured.
    assert!(sent >= 1000, "the peers received only {sent} events");
    assert!(
        growth <= GROWTH_BOUND_KIB,
        "the relay grew by {growth} KiB with {PEERS} links (bound {GROWTH_BOUND_KIB} KiB)"
    );
}
