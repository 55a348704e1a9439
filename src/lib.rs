//! # meshrelay
//!
//! Delay-tolerant, end-to-end encrypted room messaging over Bluetooth LE and
//! LAN meshes, with store-and-forward and Matrix homeserver sync.
//!
//! ```text
//!             +-------------------- sans-IO core ---------------------+
//!  bytes in → |  wire (frames) → event (verify) → room → store policy  | → bytes out
//!  timers   → |                     Node state machine                | → timers
//!  commands → |                                                       | → app events
//!             +-------------------------------------------------------+
//!                  ↑ driven by the tokio runtime or by the simulator
//! ```
//!
//! The core never reads a clock, performs I/O or uses a global RNG: time and
//! randomness are parameters, so a seed reproduces every run.
//!
//! | module | holds |
//! |---|---|
//! | [`cbor`] | strict deterministic CBOR reader and writer |
//! | [`limits`] | every protocol limit as a named constant |
//! | [`crypto`] | device identity, contact cards, fingerprints, domains |
//! | [`event`] | room and event IDs, the signed envelope, clock-skew rules |
//! | [`room`] | membership, authorization and resolution, ordering, gaps, room keys |
//! | [`bundle`] | sneakernet bundles of signed events (export / import) |
//! | [`proto`] | the sans-IO `Node`: frames, fragmentation, reconciliation, push, budgets |
//! | [`store`] | durable store-and-forward queue: `Store` trait, memory and redb backends |
//!
//! The normative description is in `protocol-spec/` at the repository root.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod bundle;
pub mod cbor;
pub mod crypto;
pub mod event;
pub mod limits;
pub mod proto;
pub mod room;
pub mod store;
pub mod transport;
