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
//! | `control` | the daemon's typed, versioned control API (requests, replies, the shared executor, the client) (feature `runtime`) |
//! | `cli` | clap definitions and runners of CLI areas (rooms), for the thin binary (feature `runtime`) |
//! | `config`, `logging` | `meshrelay run`'s flags, configuration file and power profiles; its log output (feature `runtime`) |
//! | [`store`] | durable store-and-forward queue: role traits ([`store::EventStore`] is all the `Node` needs) and their union [`store::Store`]; memory and redb backends over one engine |
//! | [`datadir`], [`contacts`], [`inspect`] | data directory (0700/0600, atomic writes), contact book, `meshrelay decode` logic |
//! | [`transport`] | adapters: LAN (libp2p, feature `runtime`), Bluetooth LE (`transport::ble`: sans-IO session and engine; the radio task needs `runtime`), the Matrix homeserver transport room (bundle codec; the client needs `runtime`) |
//! | `daemon`, `sync`, `homeserver_config` | the tokio driver of the node and its control socket; homeserver sync; its config file (feature `runtime`) |
//! | [`wire`] | frames (canonical CBOR), fragmentation and bounded reassembly (issue 5 layer) |
//! | [`reconcile`] | per-room set reconciliation: sketch + rateless IBLT session |
//!
//! # Features
//!
//! * `runtime` (default): tokio, libp2p, reqwest, clap and the modules that
//!   need them (`daemon`, `cli`, `sync`, `homeserver_config`,
//!   `transport::lan`, the homeserver client, the BLE radio task) and the
//!   `meshrelay` binary. Without it (`--no-default-features`) the sans-IO
//!   core above builds and tests alone; the simulator needs nothing more.
//! * `ble` (default, implies `runtime`): the BLE hardware adapter
//!   (btleplug and BlueZ over D-Bus, Linux).
//!
//! The normative description is in `protocol-spec/` at the repository root.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

pub mod app;
pub mod bounded;
#[cfg(feature = "runtime")]
pub mod bridge;
pub mod bundle;
pub mod cbor;
#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod config;
pub mod contacts;
pub mod control;
pub mod crypto;
#[cfg(feature = "runtime")]
pub mod daemon;
pub mod datadir;
pub mod device;
pub mod event;
pub mod fuzz;
#[cfg(feature = "runtime")]
pub mod homeserver_config;
pub mod inspect;
pub mod limits;
#[cfg(feature = "runtime")]
pub mod logging;
pub mod proto;
pub mod reconcile;
pub mod room;
pub mod safe_text;
pub mod store;
#[cfg(feature = "runtime")]
pub mod sync;
pub mod transport;
#[cfg(feature = "runtime")]
pub mod web;
pub mod wire;
