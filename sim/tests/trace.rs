//! A small ONE-format trace, imported and checked against delivery results
//! worked out by hand.
//!
//! Contacts: 0-1 during [0, 100) s, 1-2 during [200, 300) s, 2-3 during
//! [400, 500) s. Messages:
//!
//! | msg | route | by hand |
//! | --- | --- | --- |
//! | M1 0→2 at 10 s | 0-1 at 10, 1-2 at 200 | delivered at 200 s (latency 190 s) |
//! | M2 0→3 at 20 s | 0-1, 1-2, 2-3 at 400 | delivered at 400 s (380 s) |
//! | M3 3→0 at 30 s | 3 meets only 2, after 0 left | never |
//! | M4 0→2 at 50 s, TTL 2 min | expires at 170 s < 200 s | never |
//! | M5 1→2 at 250 s | 1-2 live | delivered at once (0 s) |
//!
//! So the oracle and epidemic deliver 3/5 (median 190 s), direct delivery
//! only M5 (1/5), spray-and-wait with L=2 loses M2 (its one relay copy is
//! at 1, which meets 2, not 3): 2/5. Epidemic relays 8 transfers (M1: 2,
//! M2: 3, M3: 1 to node 2, M4: 1 before expiry, M5: 1): overhead 5/3.

use meshrelay::proto::NodeConfig;
use meshrelay::store::StoreConfig;
use meshrelay_sim::baseline::{LinkModel, Policy, run_baseline, run_oracle};
use meshrelay_sim::compare::{Settings, compare};
use meshrelay_sim::net::LinkParams;
use meshrelay_sim::trace::{Workload, parse_host};

fn workload() -> Workload {
    Workload::from_one(
        include_str!("data/hand.conn"),
        include_str!("data/hand.msgs"),
        0,
    )
    .expect("the test trace parses")
}

fn model() -> LinkModel {
    LinkModel {
        ble: LinkParams::ble(),
        lan: LinkParams::lan(),
    }
}

/// Delivery time in seconds per message, in trace order.
fn delivered_s(o: &meshrelay_sim::metrics::Outcome) -> Vec<Option<f64>> {
    o.pairs
        .iter()
        .map(|(_, d)| d.map(|d| d as f64 / 1000.0))
        .collect()
}

#[test]
fn parses_one_formats() {
    let w = workload();
    assert_eq!(w.nodes, 4);
    assert_eq!(w.contacts.len(), 6);
    assert_eq!(w.messages.len(), 5);
    assert_eq!(w.messages[3].ttl_ms, Some(120_000));
    assert_eq!(w.messages[0].ttl_ms, None);
    assert_eq!(parse_host("p31"), Some(31));
    assert_eq!(parse_host("31"), Some(31));
    assert_eq!(parse_host("p"), None);
    assert!(Workload::from_one("0 CONN a b sideways", "", 0).is_err());
    assert!(Workload::from_one("", "1 M1 10 p0", 0).is_err());
}

#[test]
fn oracle_matches_hand_results() {
    let o = run_oracle(&workload());
    assert_eq!(
        delivered_s(&o),
        vec![Some(200.0), Some(400.0), None, None, Some(250.0)]
    );
    let m = o.metrics();
    assert_eq!(m.delivery_ratio, 0.6);
    assert_eq!(m.latency_median_s, 190.0);
    assert_eq!(m.latency_mean_s, 190.0);
    assert_eq!(m.undelivered_at_end, 2);
}

#[test]
fn baselines_match_hand_results() {
    let w = workload();
    let epi = run_baseline(&w, Policy::Epidemic, model());
    let got = delivered_s(&epi);
    // Transfer time of one 280-byte event over BLE: 2.8 ms + 15 ms.
    for (k, want) in [(0, 200.0), (1, 400.0), (4, 250.0)] {
        let t = got[k].expect("delivered");
        assert!((t - want) >= 0.0 && (t - want) < 0.1, "M{} at {t}", k + 1);
    }
    assert_eq!((got[2], got[3]), (None, None));
    let m = epi.metrics();
    assert_eq!(m.relayed, 8);
    assert!((m.overhead_ratio - 5.0 / 3.0).abs() < 1e-5);

    let direct = run_baseline(&w, Policy::Direct, model()).metrics();
    assert_eq!(direct.delivery_ratio, 0.2);
    let sw2 = run_baseline(&w, Policy::SprayAndWait { copies: 2 }, model());
    assert_eq!(
        delivered_s(&sw2)
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        vec![true, false, false, false, true]
    );
    let sw8 = run_baseline(&w, Policy::SprayAndWait { copies: 8 }, model()).metrics();
    assert_eq!(sw8.delivery_ratio, 0.6);
}

#[test]
fn meshrelay_matches_hand_results_through_strangers() {
    let w = workload();
    let s = Settings {
        model: model(),
        node: NodeConfig::default(),
        store: StoreConfig::default(),
        spray_copies: 8,
        seed: 3,
    };
    let c = compare(&w, &s, &mut |_| {});
    assert!(c.invariants.ok(), "{:?}", c.invariants);
    let got = delivered_s(&c.outcomes["meshrelay"]);
    for (k, want) in [(0, 200.0), (1, 400.0), (4, 250.0)] {
        let t = got[k].unwrap_or_else(|| panic!("M{} undelivered", k + 1));
        assert!((t - want) >= 0.0 && (t - want) < 5.0, "M{} at {t}", k + 1);
    }
    assert_eq!((got[2], got[3]), (None, None));
}

#[test]
fn trace_command_prints_one_entry_per_protocol() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshrelay-sim"))
            .args(["trace", "--contacts"])
            .arg(format!("{dir}/tests/data/hand.conn"))
            .arg("--messages")
            .arg(format!("{dir}/tests/data/hand.msgs"))
            .args(["--link", "ble", "--seed", "4", "--json"])
            .output()
            .expect("the simulator runs")
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("seed = 4"), "the seed goes to stderr");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    for key in [
        "meshrelay",
        "epidemic",
        "spray_and_wait",
        "direct",
        "oracle",
    ] {
        let e = &v[key];
        for f in [
            "delivery_ratio",
            "latency_median_s",
            "latency_mean_s",
            "overhead_ratio",
            "bytes_per_delivered",
        ] {
            assert!(e[f].is_number(), "{key}.{f} missing");
        }
    }
    assert_eq!(v["oracle"]["delivery_ratio"], 0.6);
    assert_eq!(v["direct"]["delivery_ratio"], 0.2);
    // Identical on a second run, but for the wall times.
    let again: serde_json::Value = serde_json::from_slice(&run().stdout).expect("JSON on stdout");
    assert_eq!(without_wall_s(again), without_wall_s(v));
}

/// `v` with every protocol's `wall_s` checked (a number) and removed.
fn without_wall_s(mut v: serde_json::Value) -> serde_json::Value {
    for (key, e) in v.as_object_mut().expect("an object").iter_mut() {
        let e = e.as_object_mut().expect("an entry per protocol");
        let wall = e.remove("wall_s");
        assert!(
            wall.as_ref()
                .and_then(|w| w.as_f64())
                .is_some_and(|w| w >= 0.0),
            "{key}.wall_s missing: {wall:?}"
        );
    }
    v
}

#[test]
fn trace_takes_copy_budget_and_only_like_run() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshrelay-sim"))
            .args(["trace", "--contacts"])
            .arg(format!("{dir}/tests/data/hand.conn"))
            .arg("--messages")
            .arg(format!("{dir}/tests/data/hand.msgs"))
            .args(["--seed", "4", "--json"])
            .args(extra)
            .output()
            .expect("the simulator runs")
    };
    let out = run(&["--only", "meshrelay,oracle", "--copy-budget", "16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let keys: Vec<&String> = v.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["meshrelay", "oracle"]);
    assert!(v["meshrelay"]["wall_s"].is_number());
    let bad = run(&["--only", "flooding"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("unknown protocol \"flooding\""), "{err}");
    let bad = run(&["--copy-budget", "200"]);
    assert!(!bad.status.success(), "a budget over 128 is refused");
}
