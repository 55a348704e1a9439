//! The copy budget for carried events (`protocol-spec/wire.md`, "Copy
//! budget"): binary spray bounds how many carriers (non-members) ever hold
//! an event, members still get every event of their rooms.
//! Each test prints its seed; rerun one with `MESHRELAY_SEED=<n>`.

use meshrelay::event::{EventId, RoomId};
use meshrelay::proto::NodeConfig;
use meshrelay::store::{EventStore, StoreConfig};
use meshrelay_sim::net::{LinkParams, SimNet};
use rand::RngExt;
use std::collections::BTreeSet;

use meshrelay_sim::test_seed as seed;

fn config(copy_budget: u8) -> NodeConfig {
    NodeConfig {
        copy_budget,
        ..NodeConfig::default()
    }
}

/// Nodes other than `members` that hold `id`.
fn carriers(net: &SimNet, id: &EventId, members: &[usize]) -> usize {
    (0..net.nodes.len())
        .filter(|i| !members.contains(i))
        .filter(|&i| net.nodes[i].core.store().has_event(id).unwrap_or(false))
        .count()
}

/// 40 nodes in a dense random mesh; the member 1 is linked to everyone, so
/// any holder can deliver. Returns the most carriers of any event and
/// whether member 1 got every event.
fn dense_mesh(s: u64, copy_budget: u8) -> (usize, bool) {
    let n = 40;
    let mut net = SimNet::new(n, s, config(copy_budget), StoreConfig::default());
    let room = RoomId([0x51; 16]);
    net.join(0, room);
    net.join(1, room);
    for i in 2..n {
        net.connect(1, i, LinkParams::lan());
        for _ in 0..4 {
            let j = net.rng.random_range(0..n);
            if j != i {
                net.connect(i, j, LinkParams::lan());
            }
        }
    }
    net.connect(0, 2, LinkParams::lan());
    net.connect(0, 3, LinkParams::lan());
    net.run_until(1_000);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(net.publish(0, room, 300));
        let t = net.now_ms();
        net.run_until(t + 500);
    }
    let t = net.now_ms();
    // Two anti-entropy periods: reconciliation must not leak copies either.
    net.run_until(t + 150_000);
    let most = ids
        .iter()
        .map(|id| carriers(&net, id, &[0, 1]))
        .max()
        .unwrap_or(0);
    let delivered = ids.iter().all(|id| net.nodes[1].delivered.contains_key(id));
    assert!(net.nodes.iter().all(|n| n.double_deliveries.is_empty()));
    (most, delivered)
}

#[test]
fn carriers_of_an_event_stay_within_the_copy_budget() {
    let s = seed(31);
    for budget in [2u8, 4, 8, 16] {
        let (most, delivered) = dense_mesh(s, budget);
        eprintln!("budget {budget}: at most {most} carriers per event");
        assert!(
            most <= usize::from(budget),
            "budget {budget}: an event reached {most} carriers"
        );
        assert!(most >= 1, "budget {budget}: nothing was carried");
        assert!(delivered, "budget {budget}: the member missed events");
    }
    // Without a budget every carrier ends up with every event.
    let (most, delivered) = dense_mesh(s, 0);
    assert_eq!(most, 38, "no budget: epidemic carrying");
    assert!(delivered);
}

/// A connected line `0 - 1 - … - (n-1)`, members at both ends, carriers in
/// between; both ends publish. Returns whether both ends got everything.
fn line(s: u64, n: usize, copy_budget: u8) -> bool {
    let mut net = SimNet::new(n, s, config(copy_budget), StoreConfig::default());
    let room = RoomId([0x52; 16]);
    net.join(0, room);
    net.join(n - 1, room);
    for i in 1..n {
        net.connect(i - 1, i, LinkParams::ble());
    }
    let mut all = BTreeSet::new();
    for _ in 0..10 {
        all.insert(net.publish(0, room, 200));
        all.insert(net.publish(n - 1, room, 200));
        let t = net.now_ms();
        net.run_until(t + 1_000);
    }
    let t = net.now_ms();
    net.run_until(t + 150_000);
    [0, n - 1].iter().all(|&e| {
        assert!(net.nodes[e].double_deliveries.is_empty());
        all.iter().all(|id| net.nodes[e].delivered.contains_key(id))
    })
}

#[test]
fn a_connected_line_within_the_budget_delivers_everything() {
    let s = seed(37);
    // Budget 16: four carrier hops (8, 4, 2, 1 copies) then the member.
    assert!(line(s, 6, 16));
    // Budget 2: one carrier hop reaches the member...
    assert!(line(s, 3, 2));
    // ...but two do not: the second carrier never gets a copy.
    assert!(!line(s, 4, 2));
    // Without a budget any line delivers.
    assert!(line(s, 8, 0));
}

#[test]
fn a_grid_of_carriers_delivers_within_the_budget() {
    let s = seed(41);
    // 3 x 3 grid, members at opposite corners (4 hops apart), budget 8.
    let (w, n) = (3, 9);
    let mut net = SimNet::new(n, s, config(8), StoreConfig::default());
    let room = RoomId([0x53; 16]);
    net.join(0, room);
    net.join(n - 1, room);
    for i in 0..n {
        if i % w + 1 < w {
            net.connect(i, i + 1, LinkParams::ble());
        }
        if i + w < n {
            net.connect(i, i + w, LinkParams::ble());
        }
    }
    let mut all = BTreeSet::new();
    for _ in 0..10 {
        all.insert(net.publish(0, room, 200));
        let t = net.now_ms();
        net.run_until(t + 1_000);
    }
    let t = net.now_ms();
    net.run_until(t + 150_000);
    for id in &all {
        assert!(net.nodes[n - 1].delivered.contains_key(id));
        assert!(carriers(&net, id, &[0, n - 1]) <= 8);
    }
}

/// Where copies go (`protocol-spec/wire.md`): node 0 walks with four
/// team-mates (BLE links up for minutes) and sends to a member it never
/// meets. The team-mates get no copies during the hold; of three peers
/// that come into range at once one does; a peer met apart from them gets
/// a share too; after the hold a team-mate is offered its share at the next
/// anti-entropy period. Never more carriers than the budget.
#[test]
fn copies_leave_the_senders_team_and_go_once_per_group() {
    use meshrelay::proto::node::{COMPANION_HOLD_MS, DEFAULT_COPY_BUDGET};
    let s = seed(41);
    let mut net = SimNet::new(12, s, NodeConfig::default(), StoreConfig::default());
    let room = RoomId([0x61; 16]);
    net.join(0, room);
    net.join(11, room);
    for i in 1..5 {
        net.connect(0, i, LinkParams::ble());
    }
    let minute = 60_000;
    net.run_until(5 * minute);
    let sent = net.now_ms();
    let id = net.publish(0, room, 300);
    let holds = |net: &SimNet, i: usize| net.nodes[i].core.store().has_event(&id).unwrap_or(false);
    net.run_until(sent + minute);
    assert_eq!(
        carriers(&net, &id, &[0, 11]),
        0,
        "team-mates got copies during the hold"
    );
    // Three peers come into range within a second: one gets copies.
    for i in 5..8 {
        net.connect(0, i, LinkParams::ble());
    }
    net.run_until(sent + 2 * minute);
    let group: Vec<usize> = (5..8).filter(|&i| holds(&net, i)).collect();
    assert_eq!(group.len(), 1, "a group met at once got {group:?}");
    // A peer met apart from them gets a share too.
    net.connect(0, 8, LinkParams::ble());
    net.run_until(sent + 3 * minute);
    assert!(holds(&net, 8), "a peer met apart got nothing");
    assert!((1..5).all(|i| !holds(&net, i)));
    // After the hold, at the next period, one team-mate (they came into
    // range together: one group) carries too.
    net.run_until(sent + COMPANION_HOLD_MS + 3 * minute);
    let mates: Vec<usize> = (1..5).filter(|&i| holds(&net, i)).collect();
    assert_eq!(
        mates.len(),
        1,
        "after the hold the team-mates hold {mates:?}"
    );
    assert!(carriers(&net, &id, &[0, 11]) <= usize::from(DEFAULT_COPY_BUDGET));
    assert!(net.nodes.iter().all(|n| n.double_deliveries.is_empty()));
}
