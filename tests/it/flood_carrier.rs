//! An outsiders' flood carried to a member over one link, sans IO
//! (`protocol-spec/wire.md`, "Quarantine"): a member's device core and a
//! carrier's node, driven in virtual time over an in-memory link that
//! delivers in order and reports `Drained` as a LAN link does.
//!
//! An honest carrier under a copy budget learns the room's members from
//! the room's `create` once it holds it, and from then on hands a member
//! only the members' events: the flood stops at it. A flooder ignores the
//! budget (an independent implementation need not run one), so it hands
//! the member everything; the member stores it as strangers' traffic and
//! shows none of it. `admission_daemon` runs the flooder against a real
//! daemon over a real LAN link.

use std::collections::VecDeque;

use meshrelay::crypto::Identity;
use meshrelay::device::CoreOutput;
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use meshrelay::proto::{Input, LinkId, LinkKind, Node, NodeConfig, Output};
use meshrelay::store::roles::*;
use meshrelay::store::{InsertMeta, MemoryStore, Priority, Source, SourceKey};
use rand::SeedableRng;
use rand::rngs::StdRng;

use meshrelay::control::{OkData, Op};
use meshrelay::room::membership::creates_room;

use super::core_util::{Core, NOW, core, held, op, room_with};

/// Events in the flood: more than one outbox's catch-up share (768), so an
/// honest carrier's stop shows.
const FLOOD: u32 = 2048;

/// Virtual time the pair runs at most.
const LIMIT_MS: u64 = 120_000;

/// One event per fresh key, citing nothing the room holds.
pub fn flood(room: RoomId, now: u64, n: u32) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut seed = [0x5Au8; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            let who = Identity::from_seed(&seed);
            UnsignedEvent {
                room,
                sender: who.device_id(),
                seq: 1,
                prev: Vec::new(),
                origin_ts_ms: now,
                expires_ms: now + 86_400_000,
                kind: EventKind::Message,
                payload: i.to_be_bytes().repeat(16),
            }
            .sign(&who)
            .unwrap()
        })
        .collect()
}

/// A node holding `events` as strangers' traffic, under `copy_budget`.
pub fn carrier(
    events: &[Event],
    copy_budget: u8,
    rng: StdRng,
    now: u64,
) -> Node<MemoryStore, StdRng> {
    let mut store = MemoryStore::new_memory();
    let meta = InsertMeta {
        priority: Priority::Stranger,
        source: Source::Import,
        received_ms: now,
        carried: false,
    };
    for ev in events {
        store.insert_event(ev, &meta).unwrap();
    }
    store.commit().unwrap();
    Node::new(
        Identity::from_seed(&[0x77; 32]).device_id(),
        store,
        rng,
        NodeConfig {
            copy_budget,
            ..NodeConfig::default()
        },
        now,
    )
}

fn up(link: u64, source: u8) -> Input {
    Input::LinkUp {
        link: LinkId(link),
        kind: LinkKind::Lan,
        mtu: 65_536,
        source: SourceKey([source; 16]),
    }
}

/// What the run left.
struct Run {
    /// Flood events the member stored.
    stored: u64,
    member: Core,
    room: RoomId,
    carrier: Node<MemoryStore, StdRng>,
}

/// A member (Vic, who made the room) and a carrier of the room's flood
/// under `copy_budget`, linked until the member holds the flood or
/// [`LIMIT_MS`] of virtual time passed.
fn run(copy_budget: u8) -> Run {
    let (mut v, _) = core(1, "Vic");
    let (_, room) = room_with(&mut v, "ops", &[]);
    while v.poll_output().is_some() {}
    let events = |v: &Core| v.store().occupancy().unwrap().events();
    let base = events(&v);
    let mut c = carrier(
        &flood(room, NOW, FLOOD),
        copy_budget,
        StdRng::seed_from_u64(9),
        NOW,
    );
    let (lv, lc) = (LinkId(1), LinkId(2));
    let mut now = NOW + 1000;
    v.handle(now, up(1, 2)).unwrap();
    c.handle(now, up(2, 1)).unwrap();
    let (mut to_c, mut to_v) = (VecDeque::new(), VecDeque::new());
    while now < NOW + LIMIT_MS && events(&v) - base < u64::from(FLOOD) {
        v.settle(now).unwrap();
        while let Some(o) = v.poll_output() {
            match o {
                CoreOutput::Node(Output::Transmit { bytes, .. }) => to_c.push_back(bytes),
                CoreOutput::ProcessingFailed(e) => panic!("the rooms layer failed: {e}"),
                _ => {}
            }
        }
        if c.needs_commit() {
            c.store_mut().commit().unwrap();
            c.handle(now, Input::CommitDone).unwrap();
        }
        while let Some(o) = c.poll_output() {
            if let Output::Transmit { bytes, .. } = o {
                to_v.push_back(bytes);
            }
        }
        // One datagram each way per millisecond; a side's queue emptied
        // is its `Drained`.
        let mut moved = false;
        if let Some(bytes) = to_v.pop_front() {
            v.handle(now, Input::Received { link: lv, bytes }).unwrap();
            if to_v.is_empty() {
                c.handle(now, Input::Drained(lc)).unwrap();
            }
            moved = true;
        }
        if let Some(bytes) = to_c.pop_front() {
            c.handle(now, Input::Received { link: lc, bytes }).unwrap();
            if to_c.is_empty() {
                v.handle(now, Input::Drained(lv)).unwrap();
            }
            moved = true;
        }
        if moved {
            now += 1;
        } else {
            let due = [v.poll_timeout(), c.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + 1000);
            now = due.max(now + 1);
            v.handle(now, Input::Timeout).unwrap();
            c.handle(now, Input::Timeout).unwrap();
        }
    }
    // The last datagram's writes, committed as the daemon's cycle would.
    v.settle(now).unwrap();
    while v.poll_output().is_some() {}
    Run {
        stored: events(&v) - base,
        member: v,
        room,
        carrier: c,
    }
}

/// An honest carrier hands over what it sent before the room's `create`
/// reached it, and nothing after: it stored the `create`, and every flood
/// event it still held was dropped from its outbox unsent.
#[test]
fn an_honest_carrier_stops_the_flood_once_it_knows_the_members() {
    let r = run(NodeConfig::default().copy_budget);
    assert!(
        r.stored > 0,
        "the first catch-up went out before the create"
    );
    assert!(
        r.stored < u64::from(FLOOD),
        "the flood stopped at the carrier: {} of {FLOOD} stored",
        r.stored
    );
    let create = held(&r.member, &r.room)
        .into_iter()
        .find(creates_room)
        .unwrap();
    assert!(
        r.carrier.store().get_event(&create.id()).unwrap().is_some(),
        "the carrier holds the room's create"
    );
    assert_eq!(r.carrier.stats().events_sent, r.stored);
}

/// A flooder without a budget hands over all of it; the member stores it
/// as strangers' traffic: no line shown, no member added.
#[test]
fn a_flooder_without_a_budget_hands_everything_and_the_room_shows_none_of_it() {
    let mut r = run(0);
    assert_eq!(r.stored, u64::from(FLOOD), "the whole flood arrived");
    let v = &mut r.member;
    assert!(v.messages(&r.room, None).unwrap().is_empty());
    let OkData::Rooms { rooms } = op(v, Op::Rooms) else {
        panic!("no rooms");
    };
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].members.len(), 1, "only Vic");
    let occ = v.store().occupancy().unwrap();
    assert!(
        occ.stranger.events >= u64::from(FLOOD),
        "stored as strangers' traffic: {occ:?}"
    );
}
