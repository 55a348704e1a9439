//! Scenario runs: the same seed gives byte-identical JSON, and every run
//! holds the invariants (no double delivery to an app, every delivered
//! event verifies, store bounds respected). Small scenarios only, so the
//! tests stay quick in debug builds.

use meshrelay_sim::compare::compare;
use meshrelay_sim::scenario::Scenario;

fn tiny() -> Scenario {
    Scenario::parse(include_str!("data/tiny.toml")).expect("the test scenario parses")
}

fn run_json(s: &Scenario, seed: u64) -> String {
    eprintln!("seed = {seed}");
    let w = s.workload(seed);
    let c = compare(&w, &s.settings(seed), &mut |_| {});
    assert!(c.invariants.ok(), "seed {seed}: {:?}", c.invariants);
    c.json()
}

#[test]
fn same_seed_same_json() {
    let s = tiny();
    let a = run_json(&s, 5);
    let b = run_json(&s, 5);
    assert_eq!(a, b);
    let c = run_json(&s, 6);
    assert_ne!(a, c, "a different seed should move something");
    for key in [
        "meshrelay",
        "epidemic",
        "spray_and_wait",
        "direct",
        "oracle",
    ] {
        assert!(a.contains(&format!("\"{key}\"")), "{key} missing");
    }
}

#[test]
fn invariants_hold_and_oracle_bounds_everyone() {
    let s = tiny();
    for seed in [1, 2] {
        let w = s.workload(seed);
        assert!(w.contacts.windows(2).all(|p| p[0].t_ms <= p[1].t_ms));
        let c = compare(&w, &s.settings(seed), &mut |_| {});
        assert!(c.invariants.ok(), "seed {seed}: {:?}", c.invariants);
        let m = c.metrics();
        let oracle = &m["oracle"];
        for (name, x) in &m {
            assert!(x.delivered <= oracle.delivered, "{name} beat the oracle");
            assert!(x.created == oracle.created);
            if x.delivered > 0 {
                assert!(
                    x.latency_mean_s + 1e-9 >= oracle.latency_mean_s * 0.999
                        || x.delivered < oracle.delivered,
                    "{name} faster than the oracle on the same deliveries"
                );
            }
        }
        assert!(m["epidemic"].delivered >= m["direct"].delivered);
        assert!(m["meshrelay"].delivery_ratio > 0.5, "{:?}", m["meshrelay"]);
        // The room broadcast is scored for redundancy.
        assert!(m["meshrelay"].relative_message_redundancy.is_some());
    }
}

#[test]
fn shipped_scenarios_parse() {
    for f in [
        "disaster-area",
        "festival",
        "rural-relay-chain",
        "partition-merge",
        "flood-attack",
    ] {
        let path = format!("{}/scenarios/{f}.toml", env!("CARGO_MANIFEST_DIR"));
        let s = Scenario::load(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!s.population.is_empty());
    }
}
