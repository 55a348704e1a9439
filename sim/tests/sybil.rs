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
