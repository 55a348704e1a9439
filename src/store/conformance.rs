//! One conformance suite, run against both backends: every test is a generic
//! function over a [`Harness`] and the macro at the bottom instantiates it
//! for [`MemoryStore`] and [`RedbStore`].

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;

use super::*;
use crate::crypto::identity::Identity;
use crate::event::{EventKind, UnsignedEvent};

pub(crate) const T0: u64 = 1_800_000_000_000;
const DAY: u64 = 24 * 60 * 60 * 1000;

pub(crate) fn ident(n: u32) -> Identity {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&n.to_be_bytes());
    seed[31] = 0x5e;
    Identity::from_seed(&seed)
}

pub(crate) fn room(n: u8) -> RoomId {
    RoomId([n; 16])
}

pub(crate) fn ev(
    who: &Identity,
    room: RoomId,
    seq: u64,
    prev: Vec<EventId>,
    ts: u64,
    payload: &[u8],
) -> Event {
    UnsignedEvent {
        room,
        sender: who.device_id(),
        seq,
        prev,
        origin_ts_ms: ts,
        expires_ms: ts + 14 * DAY,
        kind: EventKind::Message,
        payload: payload.to_vec(),
    }
    .sign(who)
    .unwrap()
}

pub(crate) fn meta(priority: Priority, source: Source) -> InsertMeta {
    InsertMeta {
        priority,
        source,
        received_ms: T0,
        carried: false,
    }
}

fn own() -> InsertMeta {
    meta(Priority::OwnRoom, Source::Local)
}

/// A backend under test: open, and "crash and restart".
pub(crate) trait Harness {
    type S: Store + CheckDyn;
    fn new(config: StoreConfig) -> Self;
    fn s(&mut self) -> &mut Self::S;
    /// Power cut and restart: uncommitted writes are lost.
    fn crash_restart(&mut self);
}

pub(crate) struct MemH(MemoryStore);

impl Harness for MemH {
    type S = MemoryStore;
    fn new(config: StoreConfig) -> Self {
        MemH(MemoryStore::new_memory_with(config).unwrap())
    }
    fn s(&mut self) -> &mut MemoryStore {
        &mut self.0
    }
    fn crash_restart(&mut self) {
        self.0.crash();
    }
}

pub(crate) struct RedbH {
    dir: tempfile::TempDir,
    config: StoreConfig,
    s: Option<RedbStore>,
}

impl Harness for RedbH {
    type S = RedbStore;
    fn new(config: StoreConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("store.redb"), config).unwrap();
        RedbH {
            dir,
            config,
            s: Some(s),
        }
    }
    fn s(&mut self) -> &mut RedbStore {
        self.s.as_mut().unwrap()
    }
    fn crash_restart(&mut self) {
        // Dropping the store drops the open write transaction uncommitted.
        drop(self.s.take());
        self.s = Some(RedbStore::open(&self.dir.path().join("store.redb"), self.config).unwrap());
    }
}

/// A store's budget, strangers' pool and per-link and per-key shares.
fn limits(budget: u64, pool: u64, link: u64, key: u64) -> StoreConfig {
    StoreConfig {
        budget_bytes: budget,
        stranger_pool_bytes: pool,
        link_share_bytes: link,
        key_share_bytes: key,
    }
}

fn big() -> StoreConfig {
    StoreConfig::with_budget(64 * 1024 * 1024)
}

pub(crate) fn insert_dedup_get<H: Harness>() {
    let mut h = H::new(big());
    let a = ident(1);
    let e = ev(&a, room(1), 1, vec![], T0, b"hello");
    assert_eq!(
        h.s().insert_event(&e, &own()).unwrap(),
        InsertOutcome::Inserted
    );
    assert!(h.s().has_pending());
    // Reads see staged writes.
    assert_eq!(h.s().get_event(&e.id()).unwrap().unwrap(), e.bytes());
    assert_eq!(
        h.s().insert_event(&e, &own()).unwrap(),
        InsertOutcome::Duplicate
    );
    h.s().commit().unwrap();
    assert!(!h.s().has_pending());
    assert!(h.s().has_event(&e.id()).unwrap());
    assert!(h.s().seen_event(&e).unwrap());
    let info = h.s().event_info(&e.id()).unwrap().unwrap();
    assert_eq!(
        (info.room, info.seq, info.priority),
        (room(1), 1, Priority::OwnRoom)
    );
    assert_eq!(h.s().stats().unwrap().events, 1);
    assert_eq!(
        h.s().insert_event(&e, &own()).unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(h.s().stats().unwrap().events, 1);
    assert!(!h.s().has_event(&EventId([9; 32])).unwrap());
}

pub(crate) fn fork_is_evidence<H: Harness>() {
    let mut h = H::new(big());
    let a = ident(1);
    let x = ev(&a, room(1), 1, vec![], T0, b"one");
    let y = ev(&a, room(1), 1, vec![], T0, b"two");
    // The lowest event ID counts (`rooms.md` §7.1).
    let (lo, hi) = if x.id() < y.id() { (x, y) } else { (y, x) };
    h.s().insert_event(&lo, &own()).unwrap();
    let out = h.s().insert_event(&hi, &own()).unwrap();
    let InsertOutcome::Fork(f) = out else {
        panic!("expected fork, got {out:?}")
    };
    assert_eq!((f.existing, f.conflicting, f.seq), (lo.id(), hi.id(), 1));
    h.s().commit().unwrap();
    // A higher copy never replaces the held one.
    assert_eq!(
        h.s().event_at_seq(&room(1), &a.device_id(), 1).unwrap(),
        Some(lo.id())
    );
    assert!(!h.s().has_event(&hi.id()).unwrap());
    let forks = h.s().forks(10).unwrap();
    assert_eq!(forks.len(), 1);
    assert_eq!(forks[0].conflicting_bytes, hi.bytes());
    assert_eq!(forks[0].existing, lo.id());
    assert_eq!(h.s().room_forks(&room(1), 10).unwrap(), forks);
    assert!(h.s().room_forks(&room(2), 10).unwrap().is_empty());
    // Reporting the same fork again does not double-count.
    h.s().insert_event(&hi, &own()).unwrap();
    assert_eq!(h.s().stats().unwrap().forks, 1);

    // The other arrival order ends the same: the lower copy displaces the
    // held one, which becomes the evidence.
    let mut h = H::new(big());
    h.s().insert_event(&hi, &own()).unwrap();
    assert_eq!(
        h.s().insert_event(&lo, &own()).unwrap(),
        InsertOutcome::Inserted
    );
    h.s().commit().unwrap();
    assert_eq!(
        h.s().event_at_seq(&room(1), &a.device_id(), 1).unwrap(),
        Some(lo.id())
    );
    assert!(!h.s().has_event(&hi.id()).unwrap());
    let forks = h.s().forks(10).unwrap();
    assert_eq!(forks.len(), 1);
    assert_eq!(
        (forks[0].existing, forks[0].conflicting),
        (lo.id(), hi.id())
    );
    assert_eq!(forks[0].conflicting_bytes, hi.bytes());
    assert_eq!(h.s().stats().unwrap().forks, 1);
    assert_eq!(h.s().stats().unwrap().events, 1);
}

pub(crate) fn crash_semantics<H: Harness>() {
    let mut h = H::new(big());
    let a = ident(1);
    let e1 = ev(&a, room(1), 1, vec![], T0, b"committed");
    let e2 = ev(&a, room(1), 2, vec![e1.id()], T0 + 1, b"staged");
    h.s().insert_event(&e1, &own()).unwrap();
    h.s().put_contact(&a.device_id(), b"card").unwrap();
    h.s().commit().unwrap();
    h.s().insert_event(&e2, &own()).unwrap();
    h.s().put_secret(b"ratchet/1", b"secret").unwrap();
    h.s().set_since_token(Some("s1")).unwrap();
    h.crash_restart();
    assert!(h.s().has_event(&e1.id()).unwrap());
    assert!(!h.s().has_event(&e2.id()).unwrap());
    assert_eq!(h.s().high_water(&room(1), &a.device_id()).unwrap(), 1);
    assert_eq!(h.s().heads(&room(1)).unwrap(), vec![e1.id()]);
    assert_eq!(h.s().get_secret(b"ratchet/1").unwrap(), None);
    assert_eq!(h.s().since_token().unwrap(), None);
    assert_eq!(h.s().get_contact(&a.device_id()).unwrap().unwrap(), b"card");
    assert_eq!(h.s().stats().unwrap().events, 1);
    // The lost event can be inserted again after restart.
    assert_eq!(
        h.s().insert_event(&e2, &own()).unwrap(),
        InsertOutcome::Inserted
    );
    h.s().commit().unwrap();
    h.crash_restart();
    assert!(h.s().has_event(&e2.id()).unwrap());
}

pub(crate) fn rollback_discards<H: Harness>() {
    let mut h = H::new(big());
    let a = ident(1);
    let e1 = ev(&a, room(1), 1, vec![], T0, b"x");
    h.s().insert_event(&e1, &own()).unwrap();
    h.s().rollback().unwrap();
    assert!(!h.s().has_event(&e1.id()).unwrap());
    assert!(!h.s().has_pending());
    assert_eq!(h.s().stats().unwrap(), StoreStats::default());
}

pub(crate) fn room_items_sorted_ranged<H: Harness>() {
    let mut h = H::new(big());
    let a = ident(1);
    let mut all = Vec::new();
    for i in 0..20u64 {
        // Origin times out of insertion order.
        let ts = T0 + (i * 7919) % 20;
        let e = ev(&a, room(2), i + 1, vec![], ts, &[i as u8]);
        h.s().insert_event(&e, &own()).unwrap();
        all.push(ItemKey {
            origin_ts_ms: ts,
            id: e.id(),
        });
    }
    // Another room must not leak in.
    h.s()
        .insert_event(&ev(&a, room(3), 1, vec![], T0, b"z"), &own())
        .unwrap();
    h.s().commit().unwrap();
    all.sort();
    let got = h
        .s()
        .room_items(&room(2), (Bound::Unbounded, Bound::Unbounded), 1000)
        .unwrap();
    assert_eq!(got, all);
    let mid = h
        .s()
        .room_items(
            &room(2),
            (Bound::Included(all[5]), Bound::Excluded(all[10])),
            1000,
        )
        .unwrap();
    assert_eq!(mid, all[5..10]);
    let page = h
        .s()
        .room_items(&room(2), (Bound::Excluded(all[15]), Bound::Unbounded), 3)
        .unwrap();
    assert_eq!(page, all[16..19]);
    // Inverted range: empty, no panic.
    let none = h
        .s()
        .room_items(
            &room(2),
            (Bound::Included(all[10]), Bound::Excluded(all[5])),
            10,
        )
        .unwrap();
    assert!(none.is_empty());
    let rooms = h.s().rooms().unwrap();
    assert_eq!(
        rooms.iter().map(|r| (r.room, r.events)).collect::<Vec<_>>(),
        vec![(room(2), 20), (room(3), 1)]
    );
}

pub(crate) fn dag_heads<H: Harness>() {
    let mut h = H::new(big());
    let (a, b) = (ident(1), ident(2));
    let r = room(1);
    let root = ev(&a, r, 1, vec![], T0, b"root");
    let x = ev(&a, r, 2, vec![root.id()], T0 + 1, b"x");
    let y = ev(&b, r, 1, vec![root.id()], T0 + 1, b"y");
    // Insert a child before its parent: the parent must not become a head.
    h.s().insert_event(&x, &own()).unwrap();
    h.s().insert_event(&root, &own()).unwrap();
    h.s().insert_event(&y, &own()).unwrap();
    let mut want = vec![x.id(), y.id()];
    want.sort();
    assert_eq!(h.s().heads(&r).unwrap(), want);
    let m = ev(&a, r, 3, vec![x.id(), y.id()], T0 + 2, b"merge");
    h.s().insert_event(&m, &own()).unwrap();
    h.s().commit().unwrap();
    assert_eq!(h.s().heads(&r).unwrap(), vec![m.id()]);
}

pub(crate) fn high_water_and_gaps<H: Harness>() {
    let mut h = H::new(big());
    let a = ident(1);
    let r = room(1);
    for seq in [1u64, 2, 5, 6, 9] {
        h.s()
            .insert_event(&ev(&a, r, seq, vec![], T0, b"s"), &own())
            .unwrap();
    }
    h.s().commit().unwrap();
    let d = a.device_id();
    assert_eq!(h.s().high_water(&r, &d).unwrap(), 9);
    assert_eq!(
        h.s().gaps(&r, &d, 10).unwrap(),
        vec![
            SeqGap {
                from_seq: 3,
                to_seq: 4
            },
            SeqGap {
                from_seq: 7,
                to_seq: 8
            }
        ]
    );
    assert_eq!(h.s().gaps(&r, &d, 1).unwrap().len(), 1);
    // The range directly below a sequence number (what an event stored
    // there opened), found without scanning.
    let gap = |from_seq, to_seq| Some(SeqGap { from_seq, to_seq });
    for (seq, want) in [
        (1, None),
        (2, None),
        (3, None),
        (4, gap(3, 3)),
        (5, gap(3, 4)),
        (6, None),
        (9, gap(7, 8)),
        (12, gap(10, 11)),
    ] {
        assert_eq!(h.s().gap_below(&r, &d, seq).unwrap(), want, "below {seq}");
    }
    assert_eq!(
        h.s().gap_below(&r, &ident(2).device_id(), 3).unwrap(),
        gap(1, 2)
    );
    assert_eq!(h.s().high_water(&r, &ident(2).device_id()).unwrap(), 0);
    assert!(
        h.s()
            .gaps(&r, &ident(2).device_id(), 10)
            .unwrap()
            .is_empty()
    );
}

pub(crate) fn delivery_queues<H: Harness>() {
    let mut h = H::new(big());
    let a = ident(1);
    let mine = ev(&a, room(1), 1, vec![], T0, b"mine");
    let from_hs = ev(&a, room(1), 2, vec![], T0, b"hs");
    h.s()
        .insert_event(&mine, &meta(Priority::OwnUndelivered, Source::Local))
        .unwrap();
    h.s()
        .insert_event(&from_hs, &meta(Priority::OwnRoom, Source::Homeserver))
        .unwrap();
    h.s().commit().unwrap();
    let hs = Destination::Homeserver;
    assert_eq!(h.s().undelivered(&hs, None, 10).unwrap(), vec![mine.id()]);
    assert_eq!(
        h.s().undelivered(&Destination::Mesh, None, 10).unwrap(),
        vec![mine.id()]
    );
    assert_eq!(
        h.s().delivery_state(&hs, &from_hs.id()).unwrap(),
        Some(DeliveryState::Acked)
    );
    assert_eq!(
        h.s().delivery_state(&hs, &mine.id()).unwrap(),
        Some(DeliveryState::Queued)
    );
    h.s().mark_offered(&hs, &mine.id(), T0 + 5).unwrap();
    h.s().mark_offered(&hs, &mine.id(), T0 + 9).unwrap();
    assert_eq!(
        h.s().delivery_state(&hs, &mine.id()).unwrap(),
        Some(DeliveryState::Offered {
            count: 2,
            last_ms: T0 + 9
        })
    );
    let peer = Destination::Peer([7; 32]);
    h.s().enqueue(&peer, &from_hs.id()).unwrap();
    assert_eq!(
        h.s().undelivered(&peer, None, 10).unwrap(),
        vec![from_hs.id()]
    );
    h.s().mark_acked(&hs, &mine.id()).unwrap();
    h.s().commit().unwrap();
    assert!(h.s().undelivered(&hs, None, 10).unwrap().is_empty());
    assert_eq!(
        h.s().delivery_state(&hs, &mine.id()).unwrap(),
        Some(DeliveryState::Acked)
    );
    // Delivered somewhere: no longer "own undelivered".
    assert_eq!(
        h.s().event_info(&mine.id()).unwrap().unwrap().priority,
        Priority::OwnRoom
    );
    // Re-queueing an acknowledged event is a no-op.
    h.s().enqueue(&hs, &mine.id()).unwrap();
    assert!(h.s().undelivered(&hs, None, 10).unwrap().is_empty());
    assert_eq!(h.s().queue_len(&hs, usize::MAX).unwrap(), 0);
}

/// `queue_len` counts across pages and stops at its cap.
pub(crate) fn queue_len_pages<H: Harness>() {
    let mut h = H::new(big());
    let a = ident(1);
    let n = QUEUE_COUNT_PAGE * 2 + 3;
    for i in 0..n {
        let e = ev(&a, room(1), i as u64 + 1, vec![], T0, b"queued");
        h.s()
            .insert_event(&e, &meta(Priority::OwnUndelivered, Source::Local))
            .unwrap();
    }
    let peer = Destination::Homeserver;
    h.s().commit().unwrap();
    assert_eq!(h.s().queue_len(&peer, usize::MAX).unwrap(), n);
    assert_eq!(h.s().queue_len(&peer, n).unwrap(), n);
    assert_eq!(
        h.s().queue_len(&peer, QUEUE_COUNT_PAGE + 1).unwrap(),
        QUEUE_COUNT_PAGE + 1
    );
    assert_eq!(h.s().queue_len(&peer, 0).unwrap(), 0);
    let other = Destination::Peer([9; 32]);
    assert_eq!(h.s().queue_len(&other, usize::MAX).unwrap(), 0);
}

pub(crate) fn expiry<H: Harness>() {
    let mut h = H::new(big());
    let a = ident(1);
    let r = room(1);
    let short = UnsignedEvent {
        room: r,
        sender: a.device_id(),
        seq: 1,
        prev: vec![],
        origin_ts_ms: T0,
        expires_ms: T0 + 1000,
        kind: EventKind::Message,
        payload: b"short".to_vec(),
    }
    .sign(&a)
    .unwrap();
    let long = ev(&a, r, 2, vec![short.id()], T0, b"long");
    h.s().insert_event(&short, &own()).unwrap();
    h.s().insert_event(&long, &own()).unwrap();
    h.s()
        .mark_acked(&Destination::Homeserver, &short.id())
        .unwrap();
    h.s().commit().unwrap();
    let grace = crate::limits::EXPIRY_GRACE_MS;
    assert_eq!(h.s().expire(T0 + 1000 + grace).unwrap(), 0);
    assert_eq!(h.s().expire(T0 + 1001 + grace).unwrap(), 1);
    h.s().commit().unwrap();
    assert!(!h.s().has_event(&short.id()).unwrap());
    assert!(h.s().has_event(&long.id()).unwrap());
    assert_eq!(
        h.s()
            .delivery_state(&Destination::Homeserver, &short.id())
            .unwrap(),
        None
    );
    let st = h.s().stats().unwrap();
    assert_eq!((st.events, st.evictions.expired), (1, 1));
    // The expired event cannot come back (intake rejects it), its
    // tombstone is pruned, the sequence shows no gap and the own
    // high-water mark is kept.
    let mut now = own();
    now.received_ms = T0 + 1001 + grace;
    assert_eq!(
        h.s().insert_event(&short, &now).unwrap(),
        InsertOutcome::Rejected(RejectReason::Expired)
    );
    assert_eq!(h.s().event_at_seq(&r, &a.device_id(), 1).unwrap(), None);
    assert!(h.s().gaps(&r, &a.device_id(), 10).unwrap().is_empty());
    assert_eq!(h.s().gap_below(&r, &a.device_id(), 2).unwrap(), None);
    assert_eq!(h.s().high_water(&r, &a.device_id()).unwrap(), 2);
    // A stranger's event keeps its tombstone (dedup) until expiry, then
    // its mark disappears entirely.
    let st_id = ident(77);
    let stranger = UnsignedEvent {
        room: room(9),
        sender: st_id.device_id(),
        seq: 1,
        prev: vec![],
        origin_ts_ms: T0,
        expires_ms: T0 + 2000,
        kind: EventKind::Message,
        payload: b"relay me".to_vec(),
    }
    .sign(&st_id)
    .unwrap();
    let sm = meta(Priority::Stranger, Source::Link(SourceKey([3; 16])));
    assert_eq!(
        h.s().insert_event(&stranger, &sm).unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(h.s().high_water(&room(9), &st_id.device_id()).unwrap(), 1);
    h.s().expire(T0 + 2001 + grace).unwrap();
    h.s().commit().unwrap();
    assert_eq!(h.s().high_water(&room(9), &st_id.device_id()).unwrap(), 0);
    assert_eq!(
        h.s().event_at_seq(&room(9), &st_id.device_id(), 1).unwrap(),
        None
    );
    // Arriving already expired: rejected.
    let mut late = own();
    late.received_ms = T0 + 20 * DAY;
    let e3 = ev(&a, r, 3, vec![], T0, b"late");
    assert_eq!(
        h.s().insert_event(&e3, &late).unwrap(),
        InsertOutcome::Rejected(RejectReason::Expired)
    );
    assert!(h.s().check_report_dyn().unwrap().ok);
}

pub(crate) fn priority_eviction<H: Harness>() {
    // A tiny budget: ~30 events of ~1.4 KiB.
    let cfg = limits(64 * 1024, 16 * 1024, 16 * 1024, 16 * 1024);
    let mut h = H::new(cfg);
    let me = ident(1);
    let payload = vec![0u8; 1024];
    let mut own_ids = Vec::new();
    for seq in 1..=10 {
        let e = ev(&me, room(1), seq, vec![], T0, &payload);
        assert_eq!(
            h.s()
                .insert_event(&e, &meta(Priority::OwnUndelivered, Source::Local))
                .unwrap(),
            InsertOutcome::Inserted
        );
        own_ids.push(e.id());
    }
    let other = ident(2);
    let mut room_ids = Vec::new();
    let first_room_event = ev(&other, room(2), 1, vec![], T0 + 1, &payload);
    for seq in 1..=40 {
        let e = ev(&other, room(2), seq, vec![], T0 + seq, &payload);
        h.s()
            .insert_event(&e, &meta(Priority::OwnRoom, Source::Import))
            .unwrap();
        room_ids.push(e.id());
    }
    h.s().commit().unwrap();
    let st = h.s().stats().unwrap();
    assert!(st.bytes <= cfg.budget_bytes, "{st:?}");
    assert!(st.evictions.budget > 0);
    // Own undelivered events survive; the oldest room events went first.
    for id in &own_ids {
        assert!(h.s().has_event(id).unwrap());
    }
    assert!(!h.s().has_event(&room_ids[0]).unwrap());
    // The evictions are reported once, with their rooms, exactly the events
    // no longer held.
    let evicted = h.s().take_evicted().expect("within MAX_EVICTED_RECORDS");
    assert_eq!(evicted.len() as u64, st.evictions.budget);
    assert!(evicted.contains(&(room(2), room_ids[0])));
    for (_, id) in &evicted {
        assert!(!h.s().has_event(id).unwrap());
    }
    assert_eq!(h.s().take_evicted(), Some(Vec::new()));
    // An evicted event is remembered: receiving it again stores nothing.
    assert_eq!(
        h.s().insert_event(&first_room_event, &own()).unwrap(),
        InsertOutcome::Duplicate
    );
    assert!(h.s().has_event(room_ids.last().unwrap()).unwrap());
    // A stranger's event cannot displace room events.
    let s = ev(&ident(3), room(9), 1, vec![], T0, &payload);
    assert_eq!(
        h.s()
            .insert_event(
                &s,
                &meta(Priority::Stranger, Source::Link(SourceKey([1; 16])))
            )
            .unwrap(),
        InsertOutcome::Rejected(RejectReason::Full)
    );
    assert!(h.s().check_report_dyn().unwrap().ok);
}

/// A carried copy every member holds is dropped with a strangers'
/// tombstone (`rooms.md` §9, "Carried copies"); an own room's event never
/// is.
pub(crate) fn drop_carried_keeps_a_stranger_tombstone<H: Harness>() {
    let mut h = H::new(big());
    let (a, b) = (ident(31), ident(32));
    let carried = ev(&a, room(7), 1, vec![], T0, b"carried");
    let mine = ev(&b, room(8), 1, vec![], T0, b"own");
    let from = meta(Priority::Stranger, Source::Link(SourceKey([9; 16])));
    h.s().insert_event(&carried, &from).unwrap();
    h.s().insert_event(&mine, &own()).unwrap();
    h.s().commit().unwrap();
    assert!(!h.s().drop_carried(&mine.id()).unwrap(), "own rooms stay");
    assert!(h.s().drop_carried(&carried.id()).unwrap());
    assert!(!h.s().drop_carried(&carried.id()).unwrap(), "gone already");
    h.s().commit().unwrap();
    assert!(!h.s().has_event(&carried.id()).unwrap());
    assert!(h.s().has_event(&mine.id()).unwrap());
    // Offered again as a stranger's: a duplicate; in a member's class: taken.
    assert_eq!(
        h.s().insert_event(&carried, &from).unwrap(),
        InsertOutcome::Duplicate
    );
    assert_eq!(h.s().stats().unwrap().evictions.delivered, 1);
    assert_eq!(
        h.s().insert_event(&carried, &own()).unwrap(),
        InsertOutcome::Inserted
    );
    h.s().commit().unwrap();
    assert!(h.s().check_report_dyn().unwrap().ok);
}

/// An event the strangers' pool evicted is remembered: it comes back only
/// in a higher class (its sender gained standing in an own room), once; a
/// flood cannot recycle itself (`store.md` §3).
pub(crate) fn stranger_tombstone_readmits<H: Harness>() {
    let cfg = limits(1024 * 1024, 8 * 1024, 8 * 1024, 8 * 1024);
    let mut h = H::new(cfg);
    let payload = vec![0u8; 1024];
    let stranger = |p| meta(p, Source::Link(SourceKey([200; 16])));
    let member = ident(21);
    let honest = ev(&member, room(5), 1, vec![], T0, &payload);
    assert_eq!(
        h.s()
            .insert_event(&honest, &stranger(Priority::Stranger))
            .unwrap(),
        InsertOutcome::Inserted
    );
    // A flood from fresh keys pushes it out of the pool.
    for k in 0..16u32 {
        let e = ev(&ident(100 + k), room(5), 1, vec![], T0 + 1, &payload);
        let from = meta(Priority::Stranger, Source::Link(SourceKey([k as u8; 16])));
        h.s().insert_event(&e, &from).unwrap();
    }
    h.s().commit().unwrap();
    assert!(!h.s().has_event(&honest.id()).unwrap());
    // Offered again as strangers' traffic: still out.
    assert_eq!(
        h.s()
            .insert_event(&honest, &stranger(Priority::Stranger))
            .unwrap(),
        InsertOutcome::Duplicate
    );
    // Its sender has standing now: stored again, in the room's class.
    assert_eq!(
        h.s()
            .insert_event(&honest, &stranger(Priority::OwnRoom))
            .unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        h.s().event_info(&honest.id()).unwrap().unwrap().priority,
        Priority::OwnRoom
    );
    assert_eq!(
        h.s()
            .insert_event(&honest, &stranger(Priority::OwnRoom))
            .unwrap(),
        InsertOutcome::Duplicate
    );
    h.s().commit().unwrap();
    assert!(h.s().check_report_dyn().unwrap().ok);
}

pub(crate) fn stranger_budgets<H: Harness>() {
    let cfg = limits(256 * 1024, 32 * 1024, 8 * 1024, 4 * 1024);
    let mut h = H::new(cfg);
    let payload = vec![1u8; 700];
    let link = |n: u8| Source::Link(SourceKey([n; 16]));
    // One key, one link: the key share (4 KiB) binds first.
    let k = ident(10);
    let mut outcomes = Vec::new();
    for seq in 1..=8 {
        let e = ev(&k, room(5), seq, vec![], T0, &payload);
        outcomes.push(
            h.s()
                .insert_event(&e, &meta(Priority::Stranger, link(1)))
                .unwrap(),
        );
    }
    assert!(outcomes.contains(&InsertOutcome::Rejected(RejectReason::KeyBudget)));
    // Many keys over one link: the link share binds.
    let mut link_rejected = false;
    for n in 0..20 {
        let e = ev(&ident(100 + n), room(5), 1, vec![], T0, &payload);
        if h.s()
            .insert_event(&e, &meta(Priority::Stranger, link(2)))
            .unwrap()
            == InsertOutcome::Rejected(RejectReason::LinkBudget)
        {
            link_rejected = true;
        }
    }
    assert!(link_rejected);
    // Many keys over many links: the pool cap binds by evicting the oldest.
    for n in 0..60 {
        let e = ev(&ident(200 + n), room(6), 1, vec![], T0, &payload);
        assert_eq!(
            h.s()
                .insert_event(&e, &meta(Priority::Stranger, link(10 + n as u8)))
                .unwrap(),
            InsertOutcome::Inserted
        );
    }
    h.s().commit().unwrap();
    let st = h.s().stats().unwrap();
    assert!(st.stranger.bytes <= cfg.stranger_pool_bytes);
    assert!(st.evictions.stranger_pool > 0);
    assert!(st.rejections.key_budget > 0 && st.rejections.link_budget > 0);
    assert!(h.s().check_report_dyn().unwrap().ok);
}

pub(crate) fn room_priority<H: Harness>() {
    let mut h = H::new(big());
    let (me, other) = (ident(1), ident(2));
    let r = room(4);
    let mine = ev(&me, r, 1, vec![], T0, b"mine");
    h.s()
        .insert_event(&mine, &meta(Priority::OwnUndelivered, Source::Local))
        .unwrap();
    for seq in 1..=5 {
        let e = ev(&other, r, seq, vec![], T0 + seq, b"carried");
        h.s()
            .insert_event(
                &e,
                &meta(Priority::Stranger, Source::Link(SourceKey([9; 16]))),
            )
            .unwrap();
    }
    assert_eq!(h.s().set_room_priority(&r, Priority::OwnRoom).unwrap(), 5);
    let st = h.s().stats().unwrap();
    assert_eq!(
        (
            st.stranger.events,
            st.own_room.events,
            st.own_undelivered.events
        ),
        (0, 5, 1)
    );
    assert_eq!(h.s().set_room_priority(&r, Priority::Stranger).unwrap(), 5);
    let st = h.s().stats().unwrap();
    assert_eq!((st.stranger.events, st.own_undelivered.events), (5, 1));
    h.s().commit().unwrap();
    assert!(h.s().check_report_dyn().unwrap().ok);
}

pub(crate) fn blobs<H: Harness>() {
    let mut h = H::new(big());
    let d = ident(4).device_id();
    h.s().put_contact(&d, b"card-bytes").unwrap();
    h.s().put_secret(b"prekey/1", b"s1").unwrap();
    h.s().put_secret(b"prekey/2", b"s2").unwrap();
    h.s().put_secret(b"ratchet/1", b"r").unwrap();
    h.s().put_meta("device_name", b"hilltop").unwrap();
    h.s().set_since_token(Some("s72594_4483_1934")).unwrap();
    h.s().put_uplink(b"batch/1", b"ids").unwrap();
    h.s().commit().unwrap();
    assert_eq!(h.s().contacts().unwrap(), vec![(d, b"card-bytes".to_vec())]);
    assert_eq!(
        h.s().secret_keys(b"prekey/").unwrap(),
        vec![b"prekey/1".to_vec(), b"prekey/2".to_vec()]
    );
    assert_eq!(
        h.s().get_secret(b"prekey/2").unwrap().unwrap().as_slice(),
        b"s2"
    );
    // Listing pages through more names than a page holds, in order, and
    // a page starts after its cursor.
    let n = SECRET_KEYS_PAGE * 2 + 3;
    let names: Vec<Vec<u8>> = (0..n).map(|i| format!("pt/{i:05}").into_bytes()).collect();
    for k in &names {
        h.s().put_secret(k, b"plaintext").unwrap();
    }
    assert_eq!(h.s().secret_keys(b"pt/").unwrap(), names);
    let page = h.s().secret_keys_page(b"pt/", Some(&names[4]), 3).unwrap();
    assert_eq!(page, names[5..8].to_vec());
    let page = h.s().secret_keys_page(b"pt/", None, n).unwrap();
    assert_eq!(page.len(), SECRET_KEYS_PAGE, "a page is capped");
    for k in &names {
        assert!(h.s().remove_secret(k).unwrap());
    }
    assert_eq!(h.s().get_meta("device_name").unwrap().unwrap(), b"hilltop");
    assert_eq!(h.s().since_token().unwrap().unwrap(), "s72594_4483_1934");
    assert_eq!(h.s().uplink_keys(10).unwrap(), vec![b"batch/1".to_vec()]);
    assert!(h.s().remove_secret(b"prekey/1").unwrap());
    assert!(!h.s().remove_secret(b"prekey/1").unwrap());
    assert!(h.s().remove_uplink(b"batch/1").unwrap());
    assert!(h.s().remove_contact(&d).unwrap());
    h.s().set_since_token(None).unwrap();
    h.s().commit().unwrap();
    assert_eq!(h.s().since_token().unwrap(), None);
    assert!(h.s().contacts().unwrap().is_empty());
    assert!(matches!(
        h.s().put_secret(&[0u8; MAX_BLOB_KEY_BYTES + 1], b"x"),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        h.s()
            .set_since_token(Some(&"x".repeat(MAX_SINCE_TOKEN_BYTES + 1))),
        Err(StoreError::TooLarge { .. })
    ));
}

/// Object-safe access to the check report for generic tests.
pub(crate) trait CheckDyn {
    fn check_report_dyn(&self) -> Result<CheckReport, StoreError>;
}

impl<K: kv::Kv> CheckDyn for Engine<K> {
    fn check_report_dyn(&self) -> Result<CheckReport, StoreError> {
        self.check_report()
    }
}

// ---- model-based property test ---------------------------------------

/// A fixed universe of signed events (signing inside proptest cases would
/// dominate the run time): 3 senders x 2 rooms x 6 seqs, plus one fork
/// variant of each.
fn universe() -> &'static Vec<(Event, Event)> {
    static U: std::sync::OnceLock<Vec<(Event, Event)>> = std::sync::OnceLock::new();
    U.get_or_init(|| {
        let mut v = Vec::new();
        for s in 0..3u32 {
            let id = ident(50 + s);
            for r in 0..2u8 {
                for seq in 1..=6u64 {
                    let ts = T0 + seq * 10 + u64::from(s);
                    v.push((
                        ev(&id, room(r), seq, vec![], ts, b"a"),
                        ev(&id, room(r), seq, vec![], ts, b"b"),
                    ));
                }
            }
        }
        v
    })
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Insert(usize, bool),
    Commit,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..36usize, any::<bool>()).prop_map(|(i, f)| Op::Insert(i, f)),
        2 => Just(Op::Commit),
        1 => Just(Op::Crash),
    ]
}

/// The reference model: (room, sender, seq) -> event ID, committed and live.
#[derive(Default, Clone)]
struct Model {
    committed: BTreeMap<(RoomId, [u8; 32], u64), Event>,
    live: BTreeMap<(RoomId, [u8; 32], u64), Event>,
}

pub(crate) fn model_check<H: Harness>(ops: Vec<Op>) {
    let mut h = H::new(big());
    let mut m = Model::default();
    let u = universe();
    for op in ops {
        match op {
            Op::Insert(i, fork) => {
                let e = if fork { &u[i].1 } else { &u[i].0 };
                let key = (e.room(), *e.sender().as_bytes(), e.seq());
                let got = h.s().insert_event(e, &own()).unwrap();
                let want = match m.live.get(&key) {
                    None => {
                        m.live.insert(key, e.clone());
                        "inserted"
                    }
                    Some(x) if x.id() == e.id() => "duplicate",
                    // The lowest event ID counts (`rooms.md` §7.1): a
                    // lower copy displaces the held one.
                    Some(x) if e.id() < x.id() => {
                        m.live.insert(key, e.clone());
                        "inserted"
                    }
                    Some(_) => "fork",
                };
                let got = match got {
                    InsertOutcome::Inserted => "inserted",
                    InsertOutcome::Duplicate => "duplicate",
                    InsertOutcome::Fork(_) => "fork",
                    InsertOutcome::Rejected(r) => panic!("rejected {r:?}"),
                };
                assert_eq!(got, want);
            }
            Op::Commit => {
                h.s().commit().unwrap();
                m.committed = m.live.clone();
            }
            Op::Crash => {
                h.crash_restart();
                m.live = m.committed.clone();
            }
        }
        for (a, b) in u {
            for e in [a, b] {
                let key = (e.room(), *e.sender().as_bytes(), e.seq());
                let held = m.live.get(&key).is_some_and(|x| x.id() == e.id());
                assert_eq!(h.s().has_event(&e.id()).unwrap(), held);
            }
        }
    }
    // Final deep comparison.
    assert_eq!(h.s().stats().unwrap().events, m.live.len() as u64);
    for r in 0..2u8 {
        let mut want: Vec<ItemKey> = m
            .live
            .values()
            .filter(|e| e.room() == room(r))
            .map(|e| ItemKey {
                origin_ts_ms: e.origin_ts_ms(),
                id: e.id(),
            })
            .collect();
        want.sort();
        let got = h
            .s()
            .room_items(&room(r), (Bound::Unbounded, Bound::Unbounded), 1000)
            .unwrap();
        assert_eq!(got, want);
        for s in 0..3u32 {
            let d = ident(50 + s).device_id();
            let hw = m
                .live
                .keys()
                .filter(|k| k.0 == room(r) && k.1 == *d.as_bytes())
                .map(|k| k.2)
                .max()
                .unwrap_or(0);
            assert_eq!(h.s().high_water(&room(r), &d).unwrap(), hw);
            for (k, e) in m
                .live
                .range((room(r), *d.as_bytes(), 0)..=(room(r), *d.as_bytes(), u64::MAX))
            {
                assert_eq!(
                    h.s().get_event(&e.id()).unwrap().unwrap(),
                    e.bytes(),
                    "{k:?}"
                );
            }
        }
    }
    assert!(h.s().check_report_dyn().unwrap().ok);
}

macro_rules! conformance {
    ($modname:ident, $h:ty, $cases:expr) => {
        mod $modname {
            use super::*;
            #[test]
            fn insert_dedup_get() {
                super::insert_dedup_get::<$h>();
            }
            #[test]
            fn fork_is_evidence() {
                super::fork_is_evidence::<$h>();
            }
            #[test]
            fn drop_carried_keeps_a_stranger_tombstone() {
                super::drop_carried_keeps_a_stranger_tombstone::<$h>();
            }
            #[test]
            fn stranger_tombstone_readmits() {
                super::stranger_tombstone_readmits::<$h>();
            }
            #[test]
            fn crash_semantics() {
                super::crash_semantics::<$h>();
            }
            #[test]
            fn rollback_discards() {
                super::rollback_discards::<$h>();
            }
            #[test]
            fn room_items_sorted_ranged() {
                super::room_items_sorted_ranged::<$h>();
            }
            #[test]
            fn dag_heads() {
                super::dag_heads::<$h>();
            }
            #[test]
            fn high_water_and_gaps() {
                super::high_water_and_gaps::<$h>();
            }
            #[test]
            fn delivery_queues() {
                super::delivery_queues::<$h>();
            }
            #[test]
            fn queue_len_pages() {
                super::queue_len_pages::<$h>();
            }
            #[test]
            fn expiry() {
                super::expiry::<$h>();
            }
            #[test]
            fn priority_eviction() {
                super::priority_eviction::<$h>();
            }
            #[test]
            fn stranger_budgets() {
                super::stranger_budgets::<$h>();
            }
            #[test]
            fn room_priority() {
                super::room_priority::<$h>();
            }
            #[test]
            fn blobs() {
                super::blobs::<$h>();
            }
            proptest! {
                #![proptest_config(ProptestConfig::with_cases($cases))]
                #[test]
                fn matches_btreemap_model(ops in proptest::collection::vec(op(), 1..60)) {
                    super::model_check::<$h>(ops);
                }
            }
        }
    };
}

conformance!(memory, MemH, 256);
conformance!(redb, RedbH, 32);
