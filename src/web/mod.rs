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
//! - [`access`]: pairing and sessions, required on any address but
//!   loopback: a one-time pairing link makes a session cookie.

pub mod access;
pub mod api;
pub mod assets;
pub mod guard;

use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

/// Errors starting the web app.
#[derive(Debug, Error)]
pub enum WebError {
    /// The address could not be bound.
    #[error("--web {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The pairing file could not be written.
    #[error("--web: {0}")]
    Access(#[from] access::AccessError),
}

/// The app as it was started.
#[derive(Debug)]
pub struct Served {
    /// The server task (abort it to stop).
    pub task: tokio::task::JoinHandle<()>,
    /// The bound address (port 0 picks one).
    pub local: SocketAddr,
    /// On a non-loopback address: where people reach it
    /// (`http://HOST:PORT`), for pairing links.
    pub pairing_base: Option<String>,
}

/// Binds `addr` and serves the web app for the daemon of `dir` until the
/// task is aborted. On a non-loopback address, browsers must pair: a
/// first pairing link is made ([`access::new_pairing`]).
pub async fn spawn(addr: SocketAddr, dir: PathBuf) -> Result<Served, WebError> {
    let bind = |source| WebError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let ctx = api::Ctx::new(dir.clone(), local);
    let pairing_base = if ctx.pairing {
        let base = format!("http://{}", public_host(local));
        let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
        access::new_pairing(
            &crate::datadir::DataDir::new(dir),
            &base,
            api::now_ms(),
            &mut rng,
        )?;
        Some(base)
    } else {
        None
    };
    let app = api::router(ctx);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "web app server stopped");
        }
    });
    Ok(Served {
        task,
        local,
        pairing_base,
    })
}

/// `HOST:PORT` as a browser elsewhere reaches `local`: its own IP, or for
/// an unspecified address (`0.0.0.0`, `::`) the address of the interface
/// with the default route (found without sending anything), else the
/// unspecified address itself (people then put in the node's address).
fn public_host(local: SocketAddr) -> SocketAddr {
    if !local.ip().is_unspecified() {
        return local;
    }
    let probe = |bind: &str, to: &str| {
        let s = std::net::UdpSocket::bind(bind).ok()?;
        s.connect(to).ok()?;
        s.local_addr().ok().map(|a| a.ip())
    };
    let ip = if local.is_ipv4() {
        probe("0.0.0.0:0", "192.0.2.1:9")
    } else {
        probe("[::]:0", "[2001:db8::1]:9")
    };
    SocketAddr::new(ip.unwrap_or(local.ip()), local.port())
}
