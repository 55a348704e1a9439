//! A backlog beyond one reconciliation session's bound (4,096 differences)
//! reconciles by splitting the set into slices (`protocol-spec/reconcile.md`,
//! "Partitioned sessions"). Prints its seed; rerun with `MESHRELAY_SEED=<n>`.

use std::collections::BTreeSet;

use meshrelay::event::RoomId;
use meshrelay::proto::NodeConfig;
use meshrelay::reconcile::MAX_DIFFERENCES;
use meshrelay::store::StoreConfig;
use meshrelay_sim::net::{LinkParams, SimNet};

#[test]
fn a_backlog_of_10000_events_reaches_an_empty_node() {
    let s = meshrelay_sim::test_seed(11);
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
        net.assert_converged(&[i], &all);
    }
}

/// A hub holding 12 rooms of 1,000 events meets six empty members at once
/// (the relay of `reports/field.md`): each link's catch-up backlog stays
/// within its share of the node-wide `MAX_BACKLOG_TOTAL`, the backlogs
/// together within the total, the hub's reconciliation sessions within
/// `MAX_SESSION_ITEMS` (plus, at most, one room's items per link: a link
/// may always open one session), peers' further session openings waiting
/// their turn, and every node still receives every event (items dropped
/// beyond a link's cap are found again by a later period).
#[test]
fn six_empty_members_share_the_hubs_backlog_budget() {
    use meshrelay::proto::node::{MAX_BACKLOG_TOTAL, MAX_SESSION_ITEMS, MIN_BACKLOG_PER_LINK};
    let s = meshrelay_sim::test_seed(12);
    let peers = 6;
    let mut net = SimNet::new(peers + 1, s, NodeConfig::default(), StoreConfig::default());
    let mut all = BTreeSet::new();
    for r in 0..12u8 {
        let room = RoomId([r + 1; 16]);
        for i in 0..=peers {
            net.join(i, room);
        }
        for _ in 0..1_000 {
            all.insert(net.publish(0, room, 100));
        }
    }
    for i in 1..=peers {
        net.connect(0, i, LinkParams::lan());
    }
    let cap = MAX_BACKLOG_TOTAL / peers;
    assert!(cap >= MIN_BACKLOG_PER_LINK);
    let (mut most_one, mut most_all, mut most_sessions) = (0, 0, 0);
    let mut t = 0;
    while t < 900_000 {
        t += 200;
        net.run_until(t);
        let links = net.nodes[0].core.node().links();
        let one = links.iter().map(|l| l.backlog).max().unwrap_or(0);
        let sum: usize = links.iter().map(|l| l.backlog).sum();
        assert!(
            one <= cap,
            "a link's backlog {one} > its cap {cap} at {t} ms"
        );
        assert!(
            sum <= MAX_BACKLOG_TOTAL,
            "backlogs {sum} > {MAX_BACKLOG_TOTAL} at {t} ms"
        );
        let sessions: usize = links.iter().map(|l| l.session_items).sum();
        assert!(
            sessions <= MAX_SESSION_ITEMS + peers * 1_000,
            "sessions hold {sessions} items at {t} ms"
        );
        most_one = most_one.max(one);
        most_all = most_all.max(sum);
        most_sessions = most_sessions.max(sessions);
        if (1..=peers).all(|i| net.nodes[i].delivered.len() >= all.len()) {
            break;
        }
    }
    let deferred = net.nodes[0].core.node().stats().inits_deferred;
    eprintln!(
        "largest backlog: one link {most_one} (cap {cap}), all links {most_all}; \
         sessions at most {most_sessions} items; {deferred} openings waited; done at {t} ms"
    );
    // The caps were reached: rounds find more than they may keep.
    assert!(most_one > cap / 2, "largest backlog {most_one}");
    for i in 1..=peers {
        net.assert_converged(&[i], &all);
    }
}
