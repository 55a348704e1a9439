//! Flood test: strangers' events from 1,000 fresh identities, each on its
//! own fresh link (the Sybil case), at 10x the stranger pool. The node's own
//! events and its rooms' events all survive; the pool and the budget hold.

use meshrelay::crypto::identity::Identity;
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::store::{
    EventStore, InsertMeta, InsertOutcome, MetaStore, PER_EVENT_OVERHEAD_BYTES, Priority,
    RedbStore, Source, SourceKey, StoreConfig,
};

const T0: u64 = 1_800_000_000_000;
const PAYLOAD: usize = 1024;

fn ident(n: u32) -> Identity {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    seed[31] = 0xf1;
    Identity::from_seed(&seed)
}

fn ev(who: &Identity, room: RoomId, seq: u64, fill: u8) -> Event {
    UnsignedEvent {
        room,
        sender: who.device_id(),
        seq,
        prev: vec![],
        origin_ts_ms: T0 + seq,
        expires_ms: T0 + 86_400_000,
        kind: EventKind::Message,
        payload: vec![fill; PAYLOAD],
    }
    .sign(who)
    .unwrap()
}

fn meta(priority: Priority, source: Source) -> InsertMeta {
    InsertMeta {
        priority,
        source,
        received_ms: T0 + 1000,
        carried: false,
    }
}

#[test]
fn stranger_flood_cannot_evict_own_or_room_events() {
    let cfg = StoreConfig::with_budget(4 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let mut store = RedbStore::open(&dir.path().join("store.redb"), cfg).unwrap();
    let me = ident(0);
    let members: Vec<Identity> = (1..=4).map(ident).collect();
    let my_room = RoomId([1; 16]);

    let per_event = (PAYLOAD as u64) + 200 + PER_EVENT_OVERHEAD_BYTES;
    let flood_events = (10 * cfg.stranger_pool_bytes / per_event) as usize;
    let strangers: Vec<Identity> = (1000..2000).map(ident).collect();
    assert_eq!(strangers.len(), 1000);

    let mut protected: Vec<EventId> = Vec::new();
    let mut own_seq = 0;
    let mut member_seq = [0u64; 4];
    let mut stranger_seq = vec![0u64; strangers.len()];
    let mut inserted_strangers = 0u64;
    for i in 0..flood_events {
        // Every 8th step the node or a room member adds an event.
        if i % 8 == 0 {
            let e = if i % 16 == 0 {
                own_seq += 1;
                let e = ev(&me, my_room, own_seq, 1);
                assert_eq!(
                    store
                        .insert_event(&e, &meta(Priority::OwnUndelivered, Source::Local))
                        .unwrap(),
                    InsertOutcome::Inserted
                );
                e
            } else {
                let m = (i / 8) % 4;
                member_seq[m] += 1;
                let e = ev(&members[m], my_room, member_seq[m], 2);
                let link = Source::Link(SourceKey([0xaa; 16]));
                assert_eq!(
                    store
                        .insert_event(&e, &meta(Priority::OwnRoom, link))
                        .unwrap(),
                    InsertOutcome::Inserted
                );
                e
            };
            protected.push(e.id());
        }
        let s = i % strangers.len();
        stranger_seq[s] += 1;
        let room = RoomId([0x80 | (s % 64) as u8; 16]);
        let e = ev(&strangers[s], room, stranger_seq[s], 3);
        // A fresh link identity per stranger: only the pool cap protects us.
        let mut link = [0u8; 16];
        link[..8].copy_from_slice(&(1_000_000 + s as u64).to_be_bytes());
        let out = store
            .insert_event(&e, &meta(Priority::Stranger, Source::Link(SourceKey(link))))
            .unwrap();
        if out == InsertOutcome::Inserted {
            inserted_strangers += 1;
        }
        if i % 64 == 63 {
            store.commit().unwrap();
        }
    }
    store.commit().unwrap();

    for id in &protected {
        assert!(
            store.has_event(id).unwrap(),
            "protected event {id} was evicted"
        );
    }
    let st = store.stats().unwrap();
    let pool_events = cfg.stranger_pool_bytes / per_event;
    assert!(
        inserted_strangers > 5 * pool_events,
        "the flood was mostly admitted and churned"
    );
    assert!(st.stranger.bytes <= cfg.stranger_pool_bytes, "{st:?}");
    assert!(st.bytes <= cfg.budget_bytes, "{st:?}");
    assert!(st.evictions.stranger_pool > 0, "{st:?}");
    assert_eq!(st.evictions.budget, 0, "{st:?}");
    assert_eq!(
        st.own_undelivered.events + st.own_room.events,
        protected.len() as u64
    );
    let report = store.check().unwrap();
    assert!(report.ok, "{:?}", report.problems);
    eprintln!(
        "flood: {flood_events} stranger events from 1000 identities ({inserted_strangers} admitted, {} evicted from the pool), {} protected events kept; pool {} / {} bytes",
        st.evictions.stranger_pool,
        protected.len(),
        st.stranger.bytes,
        cfg.stranger_pool_bytes
    );
}
