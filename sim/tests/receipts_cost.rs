//! What receipts cost on air, reduced to run in a debug build: real rooms
//! of 5 in a walking crowd, run without and with receipts on the same
//! seed, contacts and workload. The full scenario is
//! `sim/scenarios/disaster-rooms.toml`; its figures, and why the issue's
//! goal (receipts add ≤ 10% of bytes on air) is met only under a copy
//! budget, are in `sim/reports/receipts.md`.

use meshrelay_sim::receipts;
use meshrelay_sim::scenario::Scenario;
use meshrelay_sim::test_seed as seed;

/// A regression guard, not the goal. Receipts added 38% here when this
/// test was written, when under the copy budget most invitees never
/// learnt their invite (delivery 0.35, 42 of 120 pairs on seed 1). Since
/// carriers recognise invitees by their device token
/// (`protocol-spec/wire.md`, "Invitees") every member joins and reads
/// (delivery 1.00), so every room has five readers sending receipts: 43% to
/// 72% over the file's seed and seeds 1 to 4, at the same ~390 bytes per
/// receipt event.
const MAX_OVERHEAD_ROOMS_OF_5: f64 = 0.8;

#[test]
fn receipts_coalesce_and_change_no_delivery() {
    let sc = Scenario::parse(include_str!("data/receipts-small.toml"))
        .expect("the test scenario parses");
    let spec = sc
        .receipts
        .clone()
        .expect("the scenario has a [receipts] table");
    let s = seed(sc.seed);
    let c = receipts::compare(&sc, &spec, s, &mut |_, _| {});
    eprintln!("{}", c.table());
    let (a, b) = (&c.without_receipts, &c.with_receipts);
    assert!(a.messages_sent > 20, "{a:?}");
    assert_eq!(a.receipt_events, 0, "{a:?}");
    assert!(b.receipt_events > 0, "{b:?}");
    // Coalesced: at most one receipt per message a member was shown (its
    // delivered and read figures together) and one per join.
    assert!(
        b.receipt_events <= b.pairs_shown + b.members_joined,
        "{b:?}"
    );
    // Receipts change no delivery.
    assert_eq!(b.pairs_owed, a.pairs_owed, "{b:?}");
    assert!(b.pairs_shown >= a.pairs_shown, "{a:?}\n{b:?}");
    assert!(
        c.overhead() <= MAX_OVERHEAD_ROOMS_OF_5,
        "receipts added {:.1}%",
        c.overhead() * 100.0
    );
    // Not asserted any more: that carriers could drop at least as many
    // copies with receipts. It held while most invitees never joined (0
    // droppable either way); with every member joined, members' messages
    // cite receipts that travel with `RECEIPT_COPY_BUDGET` = 2 and mostly
    // skip carriers, so a carrier's partial DAG shows fewer events cited
    // by every member (seed 1: 116 without receipts, 3 with). Carriers
    // now apply the rule as they go (`src/proto/node/purge.rs`).
    eprintln!(
        "droppable at carriers at the end: {} without receipts, {} with; \
         dropped during the run: {} and {}",
        a.carried_droppable, b.carried_droppable, a.carried_dropped, b.carried_dropped
    );
    // Seed 1: 113 without receipts, 323 with.
    assert!(b.carried_dropped > 0, "carriers dropped nothing: {b:?}");
}
