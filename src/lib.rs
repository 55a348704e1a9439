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
//!
//! The normative description is in `protocol-spec/` at the repository root.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod cbor;
pub mod crypto;
pub mod event;
pub mod limits;
pub mod reconcile;
pub mod wire;
