//! A backlog beyond one reconciliation session's bound (4,096 differences)
//! reconciles by splitting the set into slices (`protocol-spec/reconcile.md`,
//! "Partitioned sessions"). Prints its seed; rerun with `MESHRELAY_SEED=<n>`.

use std::collections::BTreeSet;

use meshrelay::event::{EventId, RoomId};
use meshrelay::proto::NodeConfig;
use meshrelay::reconcile::MAX_DIFFERENCES;
use meshrelay::store::StoreConfig;
use meshrelay_sim::net::{LinkParams, SimNet};

#[test]
fn a_backlog_of_10000_events_reaches_an_empty_node() {
    let s = std::env::var("MESHRELAY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11);
    eprintln!("seed = {s} (rerun with MESHRELAY_SEED={s})");
    let mut net = SimNet::new(2, s, NodeConfig::default(), StoreConfig::default());
    let room = RoomId([4; 16]);
    net.join(0, room);
    net.join(1, room);
    let n = 10_000;
    assert!(n > 2 * MAX_DIFFERENCES, "the backlog needs two splits");
    let mut all = BTreeSet::new();
    for _ in 0..n {
        all.insert(net.publish(0, room, 100));
    }
    // A few on the other side too: differences in both directions.
    for _ in 0..10 {
        all.insert(net.publish(1, room, 100));
    }
    net.connect(0, 1, LinkParams::lan());
    net.run_until(600_000);
    for i in [0, 1] {
        let have: BTreeSet<EventId> = net.nodes[i].delivered.keys().copied().collect();
        assert!(net.nodes[i].double_deliveries.is_empty());
        let missing = all.difference(&have).count();
        assert_eq!(
            missing,
            0,
            "node {i} lacks {missing} of {} events",
            all.len()
        );
    }
}
