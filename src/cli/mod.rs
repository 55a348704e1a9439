//! Command-line front ends that live in the library so the binary stays
//! thin: clap definitions plus a `run` function per area, writing to any
//! [`std::io::Write`]. The binary flattens them into its command enum and
//! keeps only dispatch and exit codes.
//!
//! - [`rooms`] (with [`repair`]'s report format): the rooms commands, a client of the control API
//!   (`protocol-spec/daemon.md`, "Control API") or the store directly;
//! - [`human`]: the output for people of the rooms commands and of
//!   `meshrelay` alone (names, local times, one sentence per change);
//! - [`status`]: how `status` and `peers` print;
//! - [`identity`]: `init`, `id`, `contact add`, `contacts`;
//! - [`decode`], [`demo`] (`demo --basics`), [`mesh_demo`] (`demo`),
//!   [`store`] (`store check`), [`homeserver`].

pub mod bridge;
pub mod decode;
pub mod demo;
pub mod homeserver;
pub mod human;
pub mod identity;
pub mod import;
pub mod mesh_demo;
pub mod repair;
pub mod rooms;
pub mod status;
pub mod store;
pub mod web;

use std::fmt;

use crate::datadir::DataDirError;
use rooms::{EXIT_BAD_INPUT, EXIT_RUNTIME};

/// A failed command of [`identity`], [`decode`], [`demo`] or [`store`]:
/// its exit code and its message (with the causes, `: `-separated).
#[derive(Debug)]
pub struct CmdError {
    /// Exit code: 1 runtime failure, 2 bad input.
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

impl CmdError {
    /// Bad input or usage (exit 2).
    pub fn bad(message: impl fmt::Display) -> Self {
        CmdError {
            code: EXIT_BAD_INPUT,
            message: message.to_string(),
        }
    }

    /// A runtime failure (exit 1).
    pub fn msg(message: impl fmt::Display) -> Self {
        CmdError {
            code: EXIT_RUNTIME,
            message: message.to_string(),
        }
    }

    /// A runtime failure: `what`, then the error and its causes.
    pub fn context(what: String, e: &(dyn std::error::Error + 'static)) -> Self {
        CmdError::msg(format!("{what}: {}", chain(e)))
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Any error is a runtime failure (exit 1) with its causes.
impl<E: std::error::Error + 'static> From<E> for CmdError {
    fn from(e: E) -> Self {
        CmdError::msg(chain(&e))
    }
}

/// An error and its causes, `: `-separated.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Data-directory errors: a missing or existing identity is the user's
/// mistake (2), everything else a runtime failure (1).
pub fn dd_failure(e: DataDirError) -> CmdError {
    match e {
        DataDirError::AlreadyInitialized(_) | DataDirError::NotInitialized(_) => {
            CmdError::bad(chain(&e))
        }
        e if e.is_too_new() => CmdError::bad(chain(&e)),
        other => CmdError::from(other),
    }
}

/// Test hook: when this variable holds a decimal number, the CLI commands
/// that run without a daemon read it as the current time (ms since 1970)
/// instead of the system clock, so golden tests of their output over a
/// fixed data directory are deterministic (`tests/it/human.rs`). It changes
/// only what this process believes the time is, as a wrong system clock
/// would; a running daemon never reads it.
pub const TEST_NOW_ENV: &str = "MESHRELAY_TEST_NOW_MS";

/// The time [`TEST_NOW_ENV`] sets, if it is set to a number.
pub fn test_now_ms() -> Option<u64> {
    std::env::var(TEST_NOW_ENV).ok()?.trim().parse().ok()
}

/// Wall-clock milliseconds (or [`TEST_NOW_ENV`]'s), or an error when the
/// clock is before 1970.
pub fn now_ms() -> Result<u64, CmdError> {
    if let Some(t) = test_now_ms() {
        return Ok(t);
    }
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| CmdError::context("system clock is before 1970".into(), &e))?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
