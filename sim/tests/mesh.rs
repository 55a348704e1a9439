//! Deterministic in-memory meshes of real nodes (issue: mesh sync protocol).
//! Each test prints its seed; rerun one with `MESHRELAY_SEED=<n>`.

use meshrelay::event::{EventId, RoomId};
use meshrelay::proto::NodeConfig;
use meshrelay::store::StoreConfig;
use meshrelay_sim::net::{LinkParams, SimNet};
use rand::RngExt;
use std::collections::BTreeSet;

fn seed(default: u64) -> u64 {
    let s = std::env::var("MESHRELAY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    eprintln!("seed = {s} (rerun with MESHRELAY_SEED={s})");
    s
}

fn store_config() -> StoreConfig {
    StoreConfig::default()
}

fn assert_converged(net: &SimNet, nodes: &[usize], expected: &BTreeSet<EventId>) {
    for &i in nodes {
        let n = &net.nodes[i];
        assert!(n.double_deliveries.is_empty(), "node {i} delivered twice");
        let have: BTreeSet<EventId> = n.delivered.keys().copied().collect();
        let missing: Vec<_> = expected.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "node {i} lacks {} of {} events",
            missing.len(),
            expected.len()
        );
    }
}

#[test]
fn two_nodes_catch_up_then_push_live() {
    let s = seed(1);
    let mut net = SimNet::new(2, s, NodeConfig::default(), store_config());
    let room = RoomId([1; 16]);
    net.join(0, room);
    net.join(1, room);
    let mut all = BTreeSet::new();
    for _ in 0..20 {
        all.insert(net.publish(0, room, 200));
    }
    for _ in 0..5 {
        all.insert(net.publish(1, room, 200));
    }
    net.connect(0, 1, LinkParams::ble());
    net.run_until(10_000);
    assert_converged(&net, &[0, 1], &all);
    // Live push while connected.
    let t = net.now_ms();
    let id = net.publish(0, room, 100);
    all.insert(id);
    net.run_until(t + 2_000);
    assert_converged(&net, &[0, 1], &all);
    let arrived = net.nodes[1].delivered[&id];
    assert!(arrived - t < 500, "live push took {} ms", arrived - t);
}

#[test]
fn random_meshes_of_2_to_50_nodes_converge() {
    let s = seed(7);
    for (k, n) in [2usize, 5, 13, 50].into_iter().enumerate() {
        let mut net = SimNet::new(n, s + k as u64, NodeConfig::default(), store_config());
        let room = RoomId([2; 16]);
        for i in 0..n {
            net.join(i, room);
        }
        // A random spanning tree plus extra edges: connected, with cycles.
        for i in 1..n {
            let j = net.rng.random_range(0..i);
            net.connect(i, j, LinkParams::lan());
        }
        for _ in 0..n {
            let a = net.rng.random_range(0..n);
            let b = net.rng.random_range(0..n);
            net.connect(a, b, LinkParams::lan());
        }
        let mut all = BTreeSet::new();
        for step in 0..(3 * n) {
            let who = net.rng.random_range(0..n);
            all.insert(net.publish(who, room, 300));
            let t = net.now_ms();
            net.run_until(t + 50 + step as u64);
        }
        let t = net.now_ms();
        net.run_until(t + 5_000);
        let nodes: Vec<usize> = (0..n).collect();
        assert_converged(&net, &nodes, &all);
    }
}

#[test]
fn partitions_merge_after_links_heal() {
    let s = seed(11);
    let n = 10;
    let mut net = SimNet::new(n, s, NodeConfig::default(), store_config());
    let room = RoomId([3; 16]);
    for i in 0..n {
        net.join(i, room);
    }
    // Two chains 0..5 and 5..10, joined by the link 4-5.
    for i in 1..n {
        net.connect(i - 1, i, LinkParams::ble());
    }
    net.run_until(1_000);
    net.disconnect(4, 5);
    let mut all = BTreeSet::new();
    for _ in 0..10 {
        let a = net.rng.random_range(0..5);
        let b = net.rng.random_range(5..n);
        all.insert(net.publish(a, room, 500));
        all.insert(net.publish(b, room, 500));
    }
    net.run_until(20_000);
    // Partitioned: the left side has not seen the right side's events.
    assert!(net.nodes[0].delivered.len() < all.len());
    net.connect(4, 5, LinkParams::ble());
    net.run_until(80_000);
    let nodes: Vec<usize> = (0..n).collect();
    assert_converged(&net, &nodes, &all);
}

#[test]
fn a_relay_that_is_in_no_room_carries_events_across() {
    let s = seed(13);
    let mut net = SimNet::new(3, s, NodeConfig::default(), store_config());
    let room = RoomId([4; 16]);
    net.join(0, room);
    net.join(2, room);
    let mut all = BTreeSet::new();
    for _ in 0..5 {
        all.insert(net.publish(0, room, 100));
    }
    // 0 meets the courier 1; later 1 meets 2. 0 and 2 never meet.
    net.connect(0, 1, LinkParams::ble());
    net.run_until(5_000);
    net.disconnect(0, 1);
    net.connect(1, 2, LinkParams::ble());
    net.run_until(10_000);
    assert_converged(&net, &[1, 2], &all);
}
