//! meshrelay-sim: a discrete-event mesh simulator that drives the real
//! `meshrelay` device core ([`DeviceCore`](meshrelay::device::DeviceCore):
//! the relay node and the rooms layer, what the daemon drives), and the DTN
//! baselines it is measured against, over the same contacts.
//!
//! Every run is reproducible from its seed, which every command prints.
//!
//! | module | holds |
//! | --- | --- |
//! | [`net`] | the discrete-event network of real device cores (virtual time, links, CPU) |
//! | [`rooms`] | real rooms: create, invite, send and read through typed operations |
//! | [`sybil`] | real rooms under a Sybil flood, with and without the flood |
//! | [`receipts`] | real rooms with and without receipts: bytes on air, droppable carried copies |
//! | [`trace`] | contact schedules, workloads, ONE trace import |
//! | [`mobility`] | random waypoint, static placements, groups; contacts from range |
//! | [`scenario`] | TOML scenarios: population, links, workload |
//! | [`baseline`] | epidemic, spray-and-wait, direct delivery, the oracle |
//! | [`relay`] | meshrelay over a workload, with invariant checks |
//! | [`metrics`] | ONE-style metrics |
//! | [`compare`] | runs every protocol on one workload |
//! | [`report`] | markdown and SVG plots |
//! | [`frontier`] | copy-budget sweeps: delivery and latency against overhead |

pub mod baseline;
pub mod compare;
pub mod feed;
pub mod frontier;
pub mod metrics;
pub mod mobility;
pub mod net;
pub mod photos;
pub mod receipts;
pub mod relay;
pub mod report;
pub mod rooms;
pub mod scenario;
pub mod sybil;
pub mod trace;

/// The seed a test runs with: `MESHRELAY_SEED` if set, else `default`.
/// Printed, so that a failing test names the seed that reproduces it.
pub fn test_seed(default: u64) -> u64 {
    let s = std::env::var("MESHRELAY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    eprintln!("seed = {s} (rerun with MESHRELAY_SEED={s})");
    s
}
