//! What the sync engine reports while it works (the CLI draws a progress
//! bar on a terminal and prints plain lines otherwise).

use crate::transport::homeserver::HomeserverError;

/// Receives progress reports. Every method has a no-op default.
pub trait Progress {
    /// A downlink batch was stored: `new` new events (`total` so far).
    fn downloaded(&mut self, _new: u64, _total: u64) {}
    /// The upload of `queued` events starts.
    fn upload_started(&mut self, _queued: u64) {}
    /// A bundle of `events` events was accepted; `uploaded` so far of
    /// `queued` at the start.
    fn uploaded(&mut self, _events: u64, _uploaded: u64, _queued: u64) {}
    /// A transient failure; the engine waits `wait_ms` and tries again.
    fn retrying(&mut self, _error: &HomeserverError, _wait_ms: u64) {}
    /// The sync is over.
    fn finished(&mut self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Reports through `tracing` (the daemon's log).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn downloaded(&mut self, new: u64, total: u64) {
        tracing::info!(new, total, "homeserver: downloaded events");
    }

    fn uploaded(&mut self, events: u64, uploaded: u64, queued: u64) {
        tracing::info!(events, uploaded, queued, "homeserver: uploaded a bundle");
    }

    fn retrying(&mut self, error: &HomeserverError, wait_ms: u64) {
        tracing::warn!(%error, wait_ms, "homeserver: retrying");
    }
}
