//! The sans-IO protocol core (`protocol-spec/wire.md`).
//!
//! [`Node`] is a deterministic state machine: inputs ([`Input`]) with the
//! current time in, outputs ([`Output`]) and a timer deadline out. It never
//! reads a clock, does no I/O and takes its RNG as a parameter; the store's
//! commits belong to the driver (see [`node`] for the run loop and the
//! commit contract).

pub mod budget;
pub mod io;
pub mod node;
pub mod urgent;
mod view;

pub use io::{AppEvent, Command, Input, LinkId, LinkKind, Output};
pub use node::{Admission, Node, NodeConfig, NodeStats, SyncProgress};
