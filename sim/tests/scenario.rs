//! Scenario runs: the same seed gives byte-identical JSON, and every run
//! holds the invariants (no double delivery to an app, every delivered
//! event verifies, store bounds respected). Small scenarios only, so the
//! tests stay quick in debug builds.

use meshrelay_sim::compare::{PROTOCOLS, compare, compare_fed, compare_only};
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

/// `run` finds the contacts while meshrelay runs (`Scenario::workload_fed`,
/// `compare_fed`): the same workload and the same results as finding them
/// first, with and without meshrelay among the protocols.
#[test]
fn contacts_found_alongside_give_the_same_run() {
    let s = tiny();
    for seed in [1, 2] {
        let w = s.workload(seed);
        assert!(!w.contacts.is_empty());
        let settings = s.settings(seed);
        let (fed, feed) = s.workload_fed(seed);
        assert!(fed.contacts.is_empty());
        assert_eq!(fed.messages, w.messages);
        assert_eq!(
            (fed.rooms.clone(), fed.backhaul.clone()),
            (w.rooms.clone(), w.backhaul.clone())
        );
        let (fed, c, n) = compare_fed(fed, feed, &settings, &PROTOCOLS, &mut |_| {});
        assert_eq!((&fed.contacts, n), (&w.contacts, w.contacts.len()));
        assert_eq!(c.json(), compare(&w, &settings, &mut |_| {}).json());
        assert!(c.invariants.ok());
        let only = ["oracle", "direct"];
        let (fed, feed) = s.workload_fed(seed);
        let (fed, c, _) = compare_fed(fed, feed, &settings, &only, &mut |_| {});
        assert_eq!(fed.contacts, w.contacts);
        assert_eq!(
            c.json(),
            compare_only(&w, &settings, &only, &mut |_| {}).json()
        );
        assert!(!c.outcomes.contains_key("meshrelay"));
        // Only meshrelay: the same result, the contacts counted, not kept.
        let (fed, feed) = s.workload_fed(seed);
        let (fed, c, n) = compare_fed(fed, feed, &settings, &["meshrelay"], &mut |_| {});
        assert_eq!((fed.contacts.len(), n), (0, w.contacts.len()));
        assert_eq!(
            c.json(),
            compare_only(&w, &settings, &["meshrelay"], &mut |_| {}).json()
        );
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
        "speed-goal",
        "speed-goal-10k",
    ] {
        let path = format!("{}/scenarios/{f}.toml", env!("CARGO_MANIFEST_DIR"));
        let s = Scenario::load(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!s.population.is_empty());
    }
}

/// Two fixed gateways 1 km apart (far out of radio range) and one walker
/// beside each: `(gateways, windows, region)` as TOML fragments.
fn gateway_scenario(uplink: &str) -> Scenario {
    Scenario::parse(&format!(
        r#"
name = "gateways"
duration_s = 600
width_m = 1000
height_m = 10

[[population]]
name = "gateways"
count = 2
mobility = "line"
spacing_m = 500
lan = true
backhaul = true
{uplink}

[[population]]
name = "beside them"
count = 2
mobility = "line"
spacing_m = 500

[workload]
direct_interval_s = 1000
"#
    ))
    .expect("the gateway scenario parses")
}

/// The contact changes between the two gateways (nodes 0 and 1).
fn gateway_contacts(s: &Scenario) -> Vec<(u64, bool)> {
    s.workload(1)
        .contacts
        .iter()
        .filter(|c| (c.a, c.b) == (0, 1))
        .map(|c| {
            assert!(c.lan, "a gateway uplink is a LAN-class link");
            (c.t_ms, c.up)
        })
        .collect()
}

#[test]
fn gateways_are_linked_only_while_their_uplinks_are_up() {
    // Always-on gateways stay in `backhaul` (linked for the whole run).
    let always = gateway_scenario("");
    assert_eq!(always.workload(1).backhaul, vec![0, 1]);
    // Time windows: linked from 100 s to 200 s and from 400 s on.
    let windows = gateway_scenario("uplink_windows_s = [[100, 200], [400, 10000]]");
    let w = windows.workload(1);
    assert!(w.backhaul.is_empty());
    assert_eq!(
        gateway_contacts(&windows),
        vec![(100_000, true), (200_000, false), (400_000, true)]
    );
    // A region only the first gateway (x = 250 m) is in: never linked.
    let region = gateway_scenario("uplink_region = [0, 0, 400, 10]");
    assert_eq!(gateway_contacts(&region), vec![]);
    // Both inside, only during the window.
    let both =
        gateway_scenario("uplink_region = [0, 0, 1000, 10]\nuplink_windows_s = [[300, 350]]");
    assert_eq!(
        gateway_contacts(&both),
        vec![(300_000, true), (350_000, false)]
    );
    // Bad windows are refused.
    let bad = "name = \"x\"\nduration_s = 1\nwidth_m = 1\nheight_m = 1\n[[population]]\nname = \"g\"\ncount = 2\nbackhaul = true\nuplink_windows_s = [[5, 5]]\n[workload]\n";
    assert!(Scenario::parse(bad).is_err());
}

#[test]
fn a_message_crosses_between_gateways_only_in_an_uplink_window() {
    // Walker 2 (beside gateway 0) writes to walker 3 (beside gateway 1)
    // at 1 s; the only path is through the gateways' uplinks.
    let run = |uplink: &str| {
        let s = gateway_scenario(uplink);
        let mut w = s.workload(1);
        w.messages = vec![meshrelay_sim::trace::Message {
            name: "M0".into(),
            t_ms: 1_000,
            size: 100,
            from: 2,
            to: vec![3],
            ttl_ms: None,
            room: None,
            hostile: false,
        }];
        let c = compare(&w, &s.settings(1), &mut |_| {});
        assert!(c.invariants.ok(), "{:?}", c.invariants);
        c.metrics()
    };
    let never = run("uplink_windows_s = [[5000, 6000]]");
    for (name, m) in &never {
        assert_eq!(m.delivered, 0, "{name} crossed without an uplink");
    }
    let window = run("uplink_windows_s = [[300, 310]]");
    for name in ["meshrelay", "epidemic", "oracle"] {
        let m = &window[name];
        assert_eq!(m.delivered, 1, "{name}: {m:?}");
        assert!(
            (298.0..330.0).contains(&m.latency_mean_s),
            "{name} delivered at {} s, not in the window",
            m.latency_mean_s
        );
    }
}

#[test]
fn lossy_links_cost_airtime_and_delay_not_data() {
    use meshrelay::event::RoomId;
    use meshrelay::proto::NodeConfig;
    use meshrelay::store::StoreConfig;
    use meshrelay_sim::net::{LinkParams, SimNet};
    let run = |loss: f64| {
        let mut net = SimNet::new(2, 9, NodeConfig::default(), StoreConfig::default());
        let room = RoomId([3; 16]);
        net.join(0, room);
        net.join(1, room);
        let ids: Vec<_> = (0..20).map(|_| net.publish(0, room, 2_000)).collect();
        net.connect(
            0,
            1,
            LinkParams {
                loss,
                ..LinkParams::ble()
            },
        );
        net.run_until(120_000);
        let last = ids
            .iter()
            .map(|id| *net.nodes[1].delivered.get(id).expect("every event arrives"))
            .max()
            .unwrap_or(0);
        (net.bytes_on_air, last)
    };
    let (clean_bytes, clean_ms) = run(0.0);
    let (lossy_bytes, lossy_ms) = run(0.5);
    eprintln!(
        "loss 0: {clean_bytes} B, last at {clean_ms} ms; loss 0.5: {lossy_bytes} B, last at {lossy_ms} ms"
    );
    // Half the transmissions lost: about twice the airtime and the time.
    assert!(lossy_bytes as f64 > 1.5 * clean_bytes as f64);
    assert!(lossy_ms as f64 > 1.5 * clean_ms as f64);
}
