//! meshrelay-sim: a discrete-event mesh simulator that drives the real
//! `meshrelay` [`Node`](meshrelay::proto::Node) core.
//!
//! Every run is reproducible from its seed, which every command prints.

pub mod net;
