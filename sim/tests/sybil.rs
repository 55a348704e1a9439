//! Real rooms under a Sybil flood (issue 14), reduced to run in a debug
//! build: the device core in every node, rooms created, invited and written
//! to through typed operations, hostile nodes publishing signed events from
//! a fresh key per event into every room they carry. The full scenario is
//! `sim/scenarios/sybil-flood.toml` (figures in `sim/reports/sybil-flood.md`).

use meshrelay_sim::scenario::Scenario;
use meshrelay_sim::sybil;
use meshrelay_sim::test_seed as seed;

fn small() -> Scenario {
    Scenario::parse(include_str!("data/sybil-small.toml")).expect("the test scenario parses")
}

#[test]
fn a_sybil_flood_costs_real_rooms_no_message_and_no_event() {
    let sc = small();
    let spec = sc.sybil.clone().expect("the scenario has a [sybil] table");
    let s = seed(sc.seed);
    let c = sybil::compare(&sc, &spec, s, &mut |_, _| {});
    eprintln!("{}", c.table());
    for (name, o) in [("without", &c.without_attack), ("with", &c.with_attack)] {
        assert!(o.messages_sent > 10, "{name}: {o:?}");
        assert_eq!(
            o.messages_unsent, 0,
            "{name}: a sender was not a member yet: {o:?}"
        );
        assert_eq!(o.members_joined, o.members_invited, "{name}: {o:?}");
        // Every honest message is shown, with its text, by every member.
        assert_eq!(o.pairs_shown, o.pairs_owed, "{name}: {o:?}");
        assert_eq!(o.honest_evicted, 0, "{name}: {o:?}");
        assert_eq!(o.foreign_lines, 0, "{name}: {o:?}");
    }
    let a = &c.with_attack;
    assert_eq!(c.without_attack.attack_events, 0);
    // The flood happened and reached the members, who kept it out of their
    // rooms.
    assert!(a.attack_events > 1_000, "{a:?}");
    assert!(
        a.attack_events_at_members + a.refused_at_members > 0,
        "{a:?}"
    );
}

#[test]
fn the_same_seed_gives_the_same_runs() {
    let mut sc = small();
    sc.duration_s = 240.0;
    sc.workload.quiet_tail_s = 60.0;
    let mut spec = sc.sybil.clone().expect("the scenario has a [sybil] table");
    spec.warmup_s = 90.0;
    let s = seed(11);
    let json = |sc: &Scenario| {
        serde_json::to_string(&sybil::compare(sc, &spec, s, &mut |_, _| {})).expect("serialises")
    };
    assert_eq!(json(&sc), json(&sc));
}

/// A courier's cached room session must rest only on stored events: when
/// the flood evicts what it held, a later invite may make the device a
/// member only as far as its store shows, and no honest event of a room
/// its member holds is ever evicted afterwards.
#[test]
fn evicted_events_never_make_a_member_that_its_store_denies() {
    let sc = Scenario::parse(include_str!("data/sybil-tiny-store.toml"))
        .expect("the test scenario parses");
    let spec = sc.sybil.clone().expect("the scenario has a [sybil] table");
    let s = seed(sc.seed);
    let w = sc.workload(s);
    let opts = sybil::RunOpts {
        attack: true,
        receipts: true,
        ..sybil::RunOpts::default()
    };
    let o = sybil::run(&sc, &spec, &w, &sc.hostile_nodes(), s, opts, &mut |_| {});
    eprintln!("{o:?}");
    assert!(o.attack_events > 10_000, "{o:?}");
    // The flood evicted what couriers carried for their future rooms.
    assert!(o.honest_lost_before_join > 0, "{o:?}");
    assert_eq!(o.honest_evicted, 0, "{o:?}");
    assert_eq!(o.foreign_lines, 0, "{o:?}");
}

use meshrelay::app::MessageLine;
use meshrelay::crypto::Identity;
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use meshrelay::proto::NodeConfig;
use meshrelay::store::{EventStore, StoreConfig};
use meshrelay::wire::{Fragmenter, Frame};
use meshrelay_sim::net::{LinkParams, SimNet};

/// Four nodes under the daemon's copy budget.
fn budget_net(s: u64) -> SimNet {
    let config = NodeConfig {
        copy_budget: 16,
        ..NodeConfig::default()
    };
    SimNet::new(4, seed(s), config, StoreConfig::default())
}

fn run_for(net: &mut SimNet, ms: u64) {
    let now = net.now_ms();
    net.run_until(now + ms);
}

/// `n` validly signed messages of `room`, each from a fresh key, citing
/// the heads node `at` holds: an outsider's flood.
fn outsiders_events(net: &SimNet, at: usize, room: RoomId, n: u64) -> Vec<Event> {
    let heads = net.nodes[at].core.store().heads(&room).expect("heads");
    let now = net.now_ms();
    (0..n)
        .map(|k| {
            let mut s = [0x5a; 32];
            s[..8].copy_from_slice(&k.to_be_bytes());
            let key = Identity::from_seed(&s);
            UnsignedEvent {
                room,
                sender: key.device_id(),
                seq: 1,
                prev: heads.iter().take(4).copied().collect(),
                origin_ts_ms: now,
                expires_ms: now + 3_600_000,
                kind: EventKind::Message,
                payload: vec![k as u8; 100],
            }
            .sign(&key)
            .expect("a valid event")
        })
        .collect()
}

/// Node `from` pushes `events` to node `to` in one `Events` frame,
/// bypassing its own node (a modified client).
fn push_events(net: &mut SimNet, from: usize, to: usize, room: RoomId, events: &[Event]) {
    let mtu = net.link_mtu(from, to).expect("linked");
    let frame = Frame::Events {
        room,
        events: events.iter().map(|e| e.bytes().to_vec()).collect(),
    }
    .encode();
    for d in Fragmenter::new().fragment(&frame, mtu).expect("fits") {
        assert!(net.send_raw(from, to, d));
    }
}

/// How many of `events` node `i` holds.
fn held(net: &SimNet, i: usize, events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| {
            net.nodes[i]
                .core
                .store()
                .has_event(&e.id())
                .unwrap_or(false)
        })
        .count()
}

fn shows(net: &mut SimNet, i: usize, room: &RoomId, text: &str) -> bool {
    let shown = net.shown(i, room).expect("a member reads");
    shown
        .iter()
        .any(|l| matches!(l, MessageLine::Text { text: t, .. } if t == text))
}

/// A member keeps an outsider's flood to itself (`protocol-spec/wire.md`,
/// "Quarantine"): in the chain 0 – 1 – 2 of one room's members under the
/// daemon's copy budget, node 3 (no member) pushes validly signed events
/// from fresh keys into the room at node 1. Node 1 holds them as
/// strangers' traffic; node 2 never receives one, neither pushed live nor
/// by reconciliation after it was away, and the members' messages still
/// cross.
#[test]
fn a_member_keeps_an_outsiders_flood_to_itself() {
    let mut net = budget_net(23);
    let room = net.room_create(0, "ops").expect("room");
    net.connect(0, 1, LinkParams::ble());
    net.connect(1, 2, LinkParams::ble());
    net.room_invite(0, room, 1).expect("invite 1");
    net.room_invite(0, room, 2).expect("invite 2");
    run_for(&mut net, 30_000);
    assert!(net.is_member(1, &room) && net.is_member(2, &room));
    net.connect(3, 1, LinkParams::ble());
    run_for(&mut net, 1_000);
    let junk = outsiders_events(&net, 1, room, 120);
    // Half while node 2 is linked (live push), half while it is away
    // (then reconciliation when it is back).
    for (k, chunk) in junk.chunks(16).enumerate() {
        if k == 4 {
            net.disconnect(1, 2);
        }
        push_events(&mut net, 3, 1, room, chunk);
        run_for(&mut net, 500);
    }
    net.connect(1, 2, LinkParams::ble());
    run_for(&mut net, 60_000);
    net.send_text(0, room, "after the flood").expect("send");
    run_for(&mut net, 30_000);
    assert!(held(&net, 1, &junk) > 0, "the flood reached node 1");
    assert_eq!(held(&net, 2, &junk), 0, "node 1 passed on none of it");
    assert!(shows(&mut net, 2, &room, "after the flood"));
}

/// A carrier that knows a room's members hands a member only their events
/// whatever its copies (`protocol-spec/wire.md`, "Quarantine"): node 1
/// carries the room of node 0 (no member), node 3 pushes an outsider's
/// events of it to node 1 (one copy each), node 2, invited but never linked
/// to node 0, meets node 1 afterwards. Node 2 gets its invite and the
/// room's messages, and none of the flood.
#[test]
fn a_carrier_hands_members_only_what_it_vouches_for() {
    let mut net = budget_net(29);
    let room = net.room_create(0, "ops").expect("room");
    net.room_invite(0, room, 2).expect("invite 2");
    net.send_text(0, room, "before the flood").expect("send");
    net.connect(0, 1, LinkParams::ble());
    run_for(&mut net, 20_000);
    net.disconnect(0, 1);
    assert!(!net.is_member(1, &room));
    net.connect(3, 1, LinkParams::ble());
    run_for(&mut net, 1_000);
    let junk = outsiders_events(&net, 1, room, 64);
    for chunk in junk.chunks(16) {
        push_events(&mut net, 3, 1, room, chunk);
        run_for(&mut net, 500);
    }
    run_for(&mut net, 5_000);
    assert!(held(&net, 1, &junk) > 0, "the flood reached the carrier");
    net.connect(1, 2, LinkParams::ble());
    run_for(&mut net, 60_000);
    assert!(
        net.is_member(2, &room),
        "node 2 got its invite from the carrier"
    );
    assert!(shows(&mut net, 2, &room, "before the flood"));
    assert_eq!(held(&net, 2, &junk), 0, "the carrier handed on none of it");
}
