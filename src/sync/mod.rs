//! Homeserver sync: the store-and-forward engine between this node's store
//! and the deployment's Matrix transport room (`protocol-spec/homeserver.md`,
//! "Uplink", "Downlink" and "Failure handling").
//!
//! The work is split so that whoever owns the store can drive it:
//!
//! - [`uplink`] and [`downlink`]: **synchronous** store-side steps, generic
//!   over [`Store`](crate::store::Store) (or over [`Device`](crate::app::Device)
//!   where the rooms layer is needed). They never hold the store across an
//!   `.await`.
//! - [`SyncHost`]: the seam between those steps and the network. The async
//!   [`engine`] calls a host between HTTP requests. [`DirectHost`] owns a
//!   [`Device`](crate::app::Device) (`meshrelay sync --once` without a
//!   daemon); the daemon implements the same trait by forwarding each call
//!   to its loop, which owns the store inside its node.
//! - [`engine`]: [`sync_once`] (drain down, then up) and [`run_continuous`]
//!   (`meshrelay run --homeserver-sync`).
//! - [`channel`]: a [`SyncHost`] that forwards each call to the loop that
//!   owns the store ([`channel::channel_host`]), for the daemon.
//! - [`progress`]: what the engine reports while it works.

pub mod channel;
pub mod downlink;
pub mod engine;
mod host;
pub mod progress;
pub mod uplink;

use serde::Serialize;
use thiserror::Error;

use crate::app::AppError;
use crate::homeserver_config::ConfigError;
use crate::store::StoreError;
use crate::transport::homeserver::HomeserverError;

pub use downlink::Cursor;
pub use engine::{SyncOptions, run_continuous, sync_once};
pub use host::{DirectHost, DownlinkOutcome, SyncHost};
pub use progress::{LogProgress, NoProgress, Progress};

/// Why a sync step failed. Nothing queued is lost on any of these: the
/// queue is trimmed only after the homeserver accepted a bundle, and the
/// cursor only advances after a download is committed.
#[derive(Debug, Error)]
pub enum SyncError {
    /// The homeserver failed (after the client's retries), or asked the
    /// user to log in again ([`HomeserverError::LoginRequired`]).
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rooms layer failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// The configuration is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Stored sync state is inconsistent.
    #[error("stored homeserver sync state is inconsistent: {0}")]
    Corrupt(String),
    /// The host (for example the daemon's loop) went away.
    #[error("sync host unavailable: {0}")]
    Host(String),
}

/// A fresh RNG for a homeserver client (transaction IDs, backoff jitter),
/// seeded from the OS.
pub fn client_rng() -> Box<dyn rand_core::Rng + Send> {
    use rand::SeedableRng;
    use rand_core::Rng as _;
    let mut seed = [0u8; 32];
    rand_core::UnwrapErr(rand::rngs::SysRng).fill_bytes(&mut seed);
    Box::new(rand::rngs::StdRng::from_seed(seed))
}

/// The client and options of the daemon's continuous sync
/// (`meshrelay run --homeserver-sync`) from the data directory's
/// configuration: logged in, with a transport room.
pub fn daemon_setup(
    dir: &std::path::Path,
) -> Result<(crate::transport::homeserver::Client, SyncOptions), SyncError> {
    use crate::homeserver_config::HomeserverConfig;
    use crate::transport::homeserver::{Client, RetryPolicy};
    let cfg = HomeserverConfig::require(&crate::datadir::DataDir::new(dir))?;
    let room = cfg.room()?.to_owned();
    let token = cfg.token().ok_or(ConfigError::NotConfigured)?;
    let user = cfg.user_id.clone().ok_or(ConfigError::NotConfigured)?;
    let c = Client::new(&cfg.url, RetryPolicy::default(), client_rng())?.with_token(token);
    Ok((c, SyncOptions::new(&room, &user)))
}

impl SyncError {
    /// Whether trying again later may succeed without the user doing
    /// anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, SyncError::Homeserver(e) if e.is_transient())
    }
}

/// What one sync did: `meshrelay sync --once --json` prints
/// `{"uploaded","downloaded","bundles",...}`. Counts are events unless
/// named otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Events uploaded to the homeserver (in `bundles` bundles).
    pub uploaded: u64,
    /// New events downloaded and stored.
    pub downloaded: u64,
    /// Bundles uploaded.
    pub bundles: u64,
    /// Downloaded events this node already had (now recorded as present on
    /// the server, so never uploaded).
    pub present: u64,
    /// Downloaded envelopes rejected (bad signature, malformed, refused by
    /// the store or the rooms layer).
    pub rejected: u64,
    /// Stored events that the rooms layer found unauthorized (forged
    /// membership changes, key shares from non-members): they change
    /// nothing.
    pub unauthorized: u64,
    /// Transport-room events that were not valid bundles (logged, skipped).
    pub malformed_bundles: u64,
}
