//! The node daemon, `meshrelay run` (`protocol-spec/daemon.md`).
//!
//! A tokio driver around the sans-IO [`crate::proto::Node`]: the LAN
//! adapter ([`crate::transport::lan`]) moves its datagrams, the durable
//! [`crate::store::RedbStore`] is its store, and a control socket lets the
//! CLI work through the daemon while it holds the store.
//!
//! - [`driver`]: the run loop (group commit, acknowledge after commit).
//! - [`clock`]: the daemon's time, which a backward jump of the wall clock
//!   does not turn back.
//! - `server`: the control socket's server side (the protocol itself is
//!   [`crate::control`]).
//! - [`report`]: `peers` and `status`.
//! - `metrics`: the Prometheus endpoint (`--metrics`).
//! - [`disk`]: free space, and what the daemon stores when it runs low.
//! - [`notify`]: readiness and watchdog for systemd (`Type=notify`).

pub mod clock;
pub mod disk;
pub mod driver;
mod metrics;
pub mod notify;
pub mod report;
mod server;

use std::path::PathBuf;

use thiserror::Error;

use crate::app::AppError;
use crate::proto::NodeConfig;
use crate::store::StoreError;
use crate::transport::lan::{LanConfig, LanError};

pub use driver::run;

/// What the daemon runs with.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The data directory (identity, store, control socket).
    pub dir: PathBuf,
    /// LAN listen addresses, static peers, mDNS.
    pub lan: LanConfig,
    /// Protocol tunables.
    pub node: NodeConfig,
    /// The BLE adapter (`enabled: false` for `--no-ble`).
    pub ble: crate::transport::ble::BleConfig,
    /// Sync with the configured homeserver continuously
    /// (`protocol-spec/homeserver.md`).
    pub homeserver_sync: bool,
    /// Serve Prometheus metrics on this address (`--metrics`; `None`: off).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// Another daemon (or command) holds this data directory's store.
    #[error("{0}: the store is in use: a daemon already runs for this data directory")]
    AlreadyRunning(PathBuf),
    /// The data directory or application layer failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// The store failed (a disk error: fatal).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device core failed on its own state.
    #[error(transparent)]
    Core(#[from] crate::device::CoreError),
    /// The LAN adapter could not start.
    #[error(transparent)]
    Lan(#[from] LanError),
    /// `--homeserver-sync` without a usable homeserver configuration.
    #[error("homeserver sync: {0}")]
    Homeserver(String),
    /// The metrics endpoint could not listen (`--metrics`).
    #[error("--metrics {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl DaemonError {
    /// Whether a file of the data directory was written by a newer
    /// meshrelay (a downgrade: `run` exits 2 without touching it).
    pub fn is_too_new(&self) -> bool {
        match self {
            DaemonError::App(a) => a.is_too_new(),
            DaemonError::Store(s) => s.is_too_new(),
            DaemonError::Core(crate::device::CoreError::App(a)) => a.is_too_new(),
            DaemonError::Core(crate::device::CoreError::Store(s)) => s.is_too_new(),
            _ => false,
        }
    }
}
