//! The log on standard error (`protocol-spec/daemon.md`, "Logs"): human
//! lines with ANSI colours only when standard error is a terminal (a
//! redirected log, a journal, a file, carries no escape codes), or one JSON
//! object per line (`--log-format json`). `RUST_LOG` overrides the level.

use std::io::IsTerminal;

use crate::config::LogFormat;

/// The daemon's default filter.
pub const DAEMON_FILTER: &str = "info,libp2p=warn";

/// Installs the global subscriber (a second call does nothing).
/// `default_filter` applies when `RUST_LOG` is unset or invalid.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
