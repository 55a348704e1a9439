//! The Matrix bridge (`meshrelay run --bridge`, `protocol-spec/bridge.md`):
//! people on Element (or any Matrix client) read and answer mesh rooms.
//!
//! The bridge is a meshrelay device that a room's admin invited like any
//! member; it is the only part that decrypts, and only rooms it is in. It
//! runs next to the team's homeserver as an application service:
//!
//! - [`config`]: the registration (tokens, namespaces) and the names of
//!   puppets and room aliases;
//! - [`appservice`]: the API the homeserver calls with Matrix messages
//!   (transactions, authenticated by `hs_token`);
//! - [`matrix`]: what the bridge asks of the homeserver (rooms, puppets,
//!   messages with their original times);
//! - [`worker`]: the loop between the daemon's control API and the
//!   homeserver;
//! - [`state`]: what makes it exactly once across crashes;
//! - [`local`]: the socket `bridge status` and `bridge invite` use.
//!
//! Like the web app, the bridge is a client of the daemon's typed control
//! API; nothing below the CLI imports it.

pub mod appservice;
pub mod config;
pub mod local;
pub mod matrix;
pub mod state;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::control::client::ControlError;
use crate::datadir::{DataDir, DataDirError};
use crate::transport::homeserver::HomeserverError;

pub use config::BridgeConfig;

/// Why the bridge failed.
#[derive(Debug, Error)]
pub enum BridgeError {
    /// A flag or request is invalid.
    #[error("{0}")]
    BadInput(String),
    /// No registration in the data directory.
    #[error(
        "this data directory has no bridge registration: run `meshrelay bridge registration \
         --homeserver URL --domain DOMAIN` and load its output in the homeserver"
    )]
    NotRegistered,
    /// No bridge answers on the data directory's bridge socket.
    #[error("the bridge is not running (start it with `meshrelay run --bridge`)")]
    NotRunning,
    /// A file of the bridge is unreadable.
    #[error("bridge state: {0}")]
    Corrupt(String),
    /// The state file failed.
    #[error("bridge state: {0}")]
    State(String),
    /// A socket or file failed.
    #[error("bridge: {0}")]
    Io(String),
    /// The data directory failed.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The daemon refused or failed a request.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The homeserver refused or failed a request.
    #[error(transparent)]
    Homeserver(#[from] HomeserverError),
}

/// What the bridge's tasks share.
#[derive(Debug)]
pub struct Shared {
    /// The registration.
    pub cfg: BridgeConfig,
    /// The data directory (its daemon's control socket, the bridge socket).
    pub dir: PathBuf,
    /// The durable state.
    pub state: Arc<state::State>,
    /// The homeserver.
    pub matrix: matrix::Matrix,
    /// Wakes the worker (new Matrix messages).
    pub wake: tokio::sync::Notify,
    /// The bridge device's ID (`mr1…`): its own mesh messages came from
    /// Matrix and are never posted back.
    pub device_id: String,
}

/// The bridge as it was started.
#[derive(Debug)]
pub struct Running {
    /// The tasks (abort them to stop).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where the application-service API listens.
    pub local: SocketAddr,
}

/// Starts the bridge for the data directory `dir`: its application-service
/// API on the registered address, its socket, and its loop.
pub async fn spawn(dir: PathBuf) -> Result<Running, BridgeError> {
    let data = DataDir::new(dir.clone());
    let cfg = BridgeConfig::load(&data)?;
    let card = data
        .read_optional(crate::datadir::CARD_FILE)?
        .ok_or_else(|| BridgeError::BadInput("no identity: run `meshrelay init` first".into()))?;
    let card = crate::crypto::ContactCard::from_text(String::from_utf8_lossy(&card).trim())
        .map_err(|e| BridgeError::Corrupt(format!("own card: {e}")))?;
    let state = state::State::open(&data.path(state::STATE_FILE))?;
    let matrix = matrix::Matrix::new(&cfg)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| BridgeError::Io(format!("--bridge: listen on {}: {e}", cfg.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| BridgeError::Io(e.to_string()))?;
    let shared = Arc::new(Shared {
        cfg,
        dir,
        state: Arc::new(state),
        matrix,
        wake: tokio::sync::Notify::new(),
        device_id: card.device_id.to_string(),
    });
    let app = appservice::router(shared.clone());
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "bridge: application-service API stopped");
        }
    });
    let socket = local::serve(shared.clone()).await?;
    let worker = tokio::spawn(worker::run(shared));
    tracing::info!(%local, "bridge: application-service API listening");
    Ok(Running {
        tasks: vec![server, socket, worker],
        local,
    })
}
