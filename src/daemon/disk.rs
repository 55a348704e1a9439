//! Free space of the data directory's file system and what the daemon
//! admits because of it (`protocol-spec/daemon.md`, "Disk full").
//!
//! The run loop asks [`DiskWatch::check`] before every commit cycle (at
//! most every [`DISK_CHECK_INTERVAL`]) and hands the resulting
//! [`Admission`] to the node:
//!
//! | free space | level | admitted |
//! |---|---|---|
//! | ≥ [`DISK_LOW_BYTES`] | `ok` | everything |
//! | < [`DISK_LOW_BYTES`] | `low` | no stranger (carried) traffic |
//! | < [`DISK_FULL_BYTES`], or a commit failed for lack of space | `full` | nothing new: own `send` is refused with a "disk full" error |
//!
//! Held events stay readable and keep being relayed and acknowledged in
//! every level. A commit that fails anyway (`ENOSPC` before the check
//! noticed) is rolled back, the store is reopened, and the level is
//! `full` until a check finds [`DISK_FULL_BYTES`] free again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::control::{ErrorCode, Op, Reply};
use crate::proto::Admission;

/// Below this many free bytes the disk is "low": stranger traffic is shed.
pub const DISK_LOW_BYTES: u64 = 32 * 1024 * 1024;

/// Below this many free bytes the disk is "full": nothing new is stored.
/// The headroom covers the store's bookkeeping writes and redb's growth of
/// its file by one allocation step.
pub const DISK_FULL_BYTES: u64 = 8 * 1024 * 1024;

/// Longest time between two free-space checks while the daemon is busy.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How full the disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskLevel {
    /// Enough space.
    Ok,
    /// Under [`DISK_LOW_BYTES`]: stranger traffic is shed.
    Low,
    /// Under [`DISK_FULL_BYTES`], or a commit failed for lack of space.
    Full,
}

impl DiskLevel {
    /// The level for `free` bytes.
    pub fn for_free(free: u64) -> Self {
        if free < DISK_FULL_BYTES {
            DiskLevel::Full
        } else if free < DISK_LOW_BYTES {
            DiskLevel::Low
        } else {
            DiskLevel::Ok
        }
    }

    /// What the node stores at this level.
    pub fn admission(self) -> Admission {
        match self {
            DiskLevel::Ok => Admission::All,
            DiskLevel::Low => Admission::NoStrangers,
            DiskLevel::Full => Admission::Nothing,
        }
    }

    /// Its name in `status` and the logs.
    pub fn name(self) -> &'static str {
        match self {
            DiskLevel::Ok => "ok",
            DiskLevel::Low => "low",
            DiskLevel::Full => "full",
        }
    }
}

/// Bytes available to this (unprivileged) user on the file system holding
/// `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The `disk` object of `status` without a daemon: from the free space
/// alone.
pub fn status_of(dir: &Path) -> Value {
    match free_bytes(dir) {
        Ok(free) => {
            let level = DiskLevel::for_free(free);
            json!({
                "full": level == DiskLevel::Full,
                "low": level >= DiskLevel::Low,
                "free_bytes": free,
                "level": level.name(),
            })
        }
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// The daemon's view of its disk.
#[derive(Debug)]
pub struct DiskWatch {
    dir: PathBuf,
    free: u64,
    level: DiskLevel,
    /// A commit failed for lack of space since the last check that found
    /// [`DISK_FULL_BYTES`] free.
    failed_commit: bool,
    next_check: tokio::time::Instant,
    /// Commits that failed for lack of space since the daemon started.
    pub failed_commits: u64,
}

impl DiskWatch {
    /// Watches the file system of `dir` (checked at once).
    pub fn new(dir: &Path) -> Self {
        let mut w = DiskWatch {
            dir: dir.to_path_buf(),
            free: u64::MAX,
            level: DiskLevel::Ok,
            failed_commit: false,
            next_check: tokio::time::Instant::now(),
            failed_commits: 0,
        };
        w.check(true);
        w
    }

    /// The current level.
    pub fn level(&self) -> DiskLevel {
        self.level
    }

    /// Free bytes at the last check.
    pub fn free(&self) -> u64 {
        self.free
    }

    /// Re-reads the free space if `force` or [`DISK_CHECK_INTERVAL`] has
    /// passed; returns the level and logs a change.
    pub fn check(&mut self, force: bool) -> DiskLevel {
        let now = tokio::time::Instant::now();
        if !force && now < self.next_check {
            return self.level;
        }
        self.next_check = now + DISK_CHECK_INTERVAL;
        match free_bytes(&self.dir) {
            Ok(free) => self.free = free,
            // Unknown: keep the last value (a failed statvfs is no reason
            // to stop storing).
            Err(e) => tracing::warn!(error = %e, "cannot read the free disk space"),
        }
        let level = DiskLevel::for_free(self.free);
        // After a failed commit only a check that finds room clears "full"
        // (and then it is the free space that decides).
        self.failed_commit &= level == DiskLevel::Full;
        if level != self.level {
            match level {
                DiskLevel::Ok => tracing::info!(free_bytes = self.free, "disk space ok again"),
                DiskLevel::Low => tracing::warn!(
                    free_bytes = self.free,
                    "disk space low: refusing stranger traffic"
                ),
                DiskLevel::Full => tracing::error!(
                    free_bytes = self.free,
                    "disk full: storing nothing new; held messages stay readable"
                ),
            }
        }
        self.level = level;
        level
    }

    /// A commit failed for lack of space: full until space is found again.
    pub fn commit_failed(&mut self) {
        self.failed_commit = true;
        self.failed_commits += 1;
        self.level = DiskLevel::Full;
        // Read the free space now: the failure may have been transient.
        self.next_check = tokio::time::Instant::now();
    }

    /// The `disk` object of `status` (`protocol-spec/daemon.md`).
    pub fn status(&self) -> Value {
        json!({
            "full": self.level == DiskLevel::Full,
            "low": self.level >= DiskLevel::Low,
            "free_bytes": self.free,
            "level": self.level.name(),
            "commits_failed_no_space": self.failed_commits,
        })
    }
}

/// Whether an operation stores something new (refused while the disk is
/// full; reads are served).
pub(super) fn writes(op: &Op) -> bool {
    !matches!(
        op,
        Op::Rooms
            | Op::Messages { .. }
            | Op::Export { .. }
            | Op::Status
            | Op::Peers
            | Op::Follow { .. }
            | Op::Shutdown
    )
}

/// The reply to a write refused (or lost) because the disk is full.
pub(super) fn disk_full_reply() -> Reply {
    Reply::error(
        ErrorCode::DiskFull,
        format!(
            "disk full: nothing new can be stored (less than {} MiB free on the data directory's file system); the message was NOT stored or sent; free space and try again (stored messages stay readable)",
            DISK_FULL_BYTES / (1024 * 1024)
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_thresholds() {
        assert_eq!(DiskLevel::for_free(0), DiskLevel::Full);
        assert_eq!(DiskLevel::for_free(DISK_FULL_BYTES - 1), DiskLevel::Full);
        assert_eq!(DiskLevel::for_free(DISK_FULL_BYTES), DiskLevel::Low);
        assert_eq!(DiskLevel::for_free(DISK_LOW_BYTES - 1), DiskLevel::Low);
        assert_eq!(DiskLevel::for_free(DISK_LOW_BYTES), DiskLevel::Ok);
        assert_eq!(DiskLevel::Low.admission(), Admission::NoStrangers);
        assert_eq!(DiskLevel::Full.admission(), Admission::Nothing);
    }

    #[tokio::test]
    async fn a_failed_commit_is_full_until_space_is_found() {
        let d = tempfile::tempdir().unwrap();
        let mut w = DiskWatch::new(d.path());
        assert!(w.free() > 0);
        w.commit_failed();
        assert_eq!(w.level(), DiskLevel::Full);
        assert_eq!(w.status()["full"], true);
        assert_eq!(w.failed_commits, 1);
        // The next check reads the free space again and decides.
        assert_eq!(w.check(true), DiskLevel::for_free(w.free()));
    }
}
