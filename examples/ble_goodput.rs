//! Goodput of 1 KiB events over the simulated BLE link (`reports/ble.md`):
//! two real core nodes, Noise-sealed records, fragmentation to the ATT MTU.
//! Run: `cargo run --release --example ble_goodput`.
//!
//! * byte efficiency = encoded event bytes delivered / ATT payload bytes
//!   carried (both directions, handshake and reconciliation included);
//! * rate fraction = event bytes per second / raw one-way ATT rate of the
//!   simulated link (every slot of every connection event full);
//! * discovery → first event: virtual time from the advertisement being
//!   seen to the first event stored on the central (scan duty cycle not
//!   included: at most one scan interval more).

use meshrelay::event::RoomId;
use meshrelay::transport::ble::harness::Pair;
use meshrelay::transport::ble::sim::AirParams;

const EVENTS: usize = 200;
/// Encoded size of each event (the 1 KiB event of `reports/event-bench.md`).
const EVENT_BYTES: usize = 1024;

fn main() {
    // Size the payload so the encoded event is EVENT_BYTES.
    // (The second event of a chain: one predecessor, like all but the first.)
    let mut probe_pair = Pair::new(1_000_000);
    probe_pair.join_both(RoomId([3; 16]));
    probe_pair
        .peripheral
        .publish(1_000_000, RoomId([3; 16]), 10);
    let probe = probe_pair
        .peripheral
        .publish(1_000_000, RoomId([3; 16]), EVENT_BYTES)
        .expect("publish");
    let overhead = probe.bytes().len() - EVENT_BYTES;
    let payload = EVENT_BYTES - overhead;
    println!("events of {EVENT_BYTES} encoded bytes ({payload} bytes of payload)\n");
    println!(
        "| ATT MTU | events | event bytes | ATT bytes | byte efficiency | payload efficiency | time (s) | raw rate (B/s) | rate fraction | discovery → first event (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for mtu in [23usize, 185, 512] {
        let mut pair = Pair::new(1_000_000);
        let room = RoomId([3; 16]);
        pair.join_both(room);
        let mut event_bytes = 0usize;
        let mut ids = Vec::new();
        for _ in 0..EVENTS {
            let now = pair.now_ms;
            let ev = pair
                .peripheral
                .publish(now, room, payload)
                .expect("publish");
            event_bytes += ev.bytes().len();
            ids.push(ev.id());
        }
        let params = AirParams::mtu(mtu);
        assert!(pair.discover_and_connect(params, 1));
        // From the connection attempt (after any CONNECT_DEFER_MS deferral).
        let t0 = pair.now_ms;
        let steps = pair.run_until(2_000_000, |p| {
            ids.iter().all(|id| p.central.stored.contains_key(id))
        });
        assert!(steps < 2_000_000, "sync did not finish at MTU {mtu}");
        let first = pair.central.stored.values().min().copied().unwrap_or(t0);
        let last = pair.central.stored.values().max().copied().unwrap_or(t0);
        let air = pair.air.as_ref().expect("connected").stats();
        let secs = (last - t0) as f64 / 1000.0;
        let raw = params.raw_rate_bytes_per_s();
        println!(
            "| {mtu} | {EVENTS} | {event_bytes} | {} | {:.1} % | {:.1} % | {secs:.2} | {raw:.0} | {:.1} % | {} |",
            air.bytes,
            100.0 * event_bytes as f64 / air.bytes as f64,
            100.0 * (EVENTS * payload) as f64 / air.bytes as f64,
            100.0 * (event_bytes as f64 / secs) / raw,
            first - t0,
        );
    }
}
