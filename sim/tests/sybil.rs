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

/// A member keeps an outsider's flood to itself (`protocol-spec/wire.md`,
/// "Quarantine"): in the chain 0 – 1 – 2 of one room's members under the
/// daemon's copy budget, node 3 (no member) pushes validly signed events
/// from fresh keys into the room at node 1. Node 1 holds them as
/// strangers' traffic; node 2 never receives one, neither pushed live nor
/// by reconciliation after it was away, and the members' messages still
/// cross.
#[test]
fn a_member_keeps_an_outsiders_flood_to_itself() {
    use meshrelay::app::MessageLine;
    use meshrelay::crypto::Identity;
    use meshrelay::event::{EventKind, UnsignedEvent};
    use meshrelay::proto::NodeConfig;
    use meshrelay::store::{EventStore, StoreConfig};
    use meshrelay::wire::{Fragmenter, Frame};
    use meshrelay_sim::net::{LinkParams, SimNet};

    let config = NodeConfig {
        copy_budget: 16,
        ..NodeConfig::default()
    };
    let mut net = SimNet::new(4, seed(23), config, StoreConfig::default());
    let run_for = |net: &mut SimNet, ms: u64| {
        let now = net.now_ms();
        net.run_until(now + ms);
    };
    let room = net.room_create(0, "ops").expect("room");
    net.connect(0, 1, LinkParams::ble());
    net.connect(1, 2, LinkParams::ble());
    net.room_invite(0, room, 1).expect("invite 1");
    net.room_invite(0, room, 2).expect("invite 2");
    run_for(&mut net, 30_000);
    assert!(net.is_member(1, &room) && net.is_member(2, &room));
    net.connect(3, 1, LinkParams::ble());
    run_for(&mut net, 1_000);
    let heads = net.nodes[1].core.store().heads(&room).expect("heads");
    let now = net.now_ms();
    let junk: Vec<_> = (0..120u64)
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
        .collect();
    let mtu = net.link_mtu(3, 1).expect("linked");
    // Half while node 2 is linked (live push), half while it is away
    // (then reconciliation when it is back).
    for (k, chunk) in junk.chunks(16).enumerate() {
        if k == 4 {
            net.disconnect(1, 2);
        }
        let frame = Frame::Events {
            room,
            events: chunk.iter().map(|e| e.bytes().to_vec()).collect(),
        }
        .encode();
        for d in Fragmenter::new().fragment(&frame, mtu).expect("fits") {
            assert!(net.send_raw(3, 1, d));
        }
        run_for(&mut net, 500);
    }
    net.connect(1, 2, LinkParams::ble());
    run_for(&mut net, 60_000);
    net.send_text(0, room, "after the flood").expect("send");
    run_for(&mut net, 30_000);
    let held = |net: &SimNet, i: usize| {
        junk.iter()
            .filter(|e| {
                net.nodes[i]
                    .core
                    .store()
                    .has_event(&e.id())
                    .unwrap_or(false)
            })
            .count()
    };
    assert!(held(&net, 1) > 0, "the flood reached node 1");
    assert_eq!(held(&net, 2), 0, "node 1 passed on none of it");
    let shown = net.shown(2, &room).expect("node 2 reads");
    assert!(
        shown
            .iter()
            .any(|l| matches!(l, MessageLine::Text { text, .. } if text == "after the flood")),
        "{shown:?}"
    );
}
