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
//! | [`app`] | one device over one data directory: rooms, send, messages, export/import, commit before acknowledge |
//! | [`cli`] | clap definitions and runners of CLI areas (rooms), for the thin binary |
//! | [`store`] | durable store-and-forward queue: `Store` trait, memory and redb backends |
//! | [`datadir`], [`contacts`], [`inspect`] | data directory (0700/0600, atomic writes), contact book, `meshrelay decode` logic |
//! | [`transport`] | adapters: LAN (libp2p), Bluetooth LE (`transport::ble`), the Matrix homeserver transport room |
//! | [`wire`] | frames (canonical CBOR), fragmentation and bounded reassembly (issue 5 layer) |
//! | [`reconcile`] | per-room set reconciliation: sketch + rateless IBLT session |
//!
//! The normative description is in `protocol-spec/` at the repository root.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod app;
pub mod bundle;
pub mod cbor;
pub mod cli;
pub mod contacts;
pub mod crypto;
pub mod daemon;
pub mod datadir;
pub mod event;
pub mod homeserver_config;
pub mod inspect;
pub mod limits;
pub mod proto;
pub mod reconcile;
pub mod room;
pub mod store;
pub mod sync;
pub mod transport;
pub mod wire;
