//! The web app (`meshrelay run --web ADDR`, `protocol-spec/web.md`): a
//! single-page app for people with a browser (a phone on the node's Wi-Fi,
//! or the laptop itself) and the JSON and event-stream API it uses.
//!
//! The web app is a client of the daemon's typed control API, like the
//! CLI: every API request becomes one control request over the data
//! directory's Unix socket ([`crate::control::client`]), so it can do
//! exactly what the CLI can and nothing the daemon does not check. Nothing
//! below the CLI imports this module.
//!
//! - [`assets`]: the page, its script and its style, plain files embedded
//!   at compile time (no JavaScript toolchain);
//! - [`api`]: the routes and their mapping onto control operations;
//! - [`guard`]: what every request must pass: the `Host` the app was
//!   opened by (no DNS rebinding), same-origin writes with the app's own
//!   header (no cross-site requests), bounded bodies, and the security
//!   headers of every response.
//!
//! Only loopback addresses are served for now: on any other address the
//! daemon would need the pairing of `protocol-spec/web.md`, "Access",
//! which is not built yet, so `--web` refuses them.

pub mod api;
pub mod assets;
pub mod guard;

use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

/// Errors starting the web app.
#[derive(Debug, Error)]
pub enum WebError {
    /// The address is not a loopback address (pairing is not built yet).
    #[error(
        "--web {0}: only a loopback address (127.0.0.1, ::1) is served for now; \
         other addresses need pairing, which this version does not have"
    )]
    NotLoopback(SocketAddr),
    /// The address could not be bound.
    #[error("--web {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds `addr` and serves the web app for the daemon of `dir` until the
/// task is aborted. Returns the task and the bound address (port 0 picks
/// one).
pub async fn spawn(
    addr: SocketAddr,
    dir: PathBuf,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr), WebError> {
    if !addr.ip().is_loopback() {
        return Err(WebError::NotLoopback(addr));
    }
    let bind = |source| WebError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let app = api::router(api::Ctx::new(dir, local));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "web app server stopped");
        }
    });
    Ok((task, local))
}
