//! The peak resident memory of a child process, for the memory goals:
//! the highest `VmHWM` in `/proc/<pid>/status`, polled while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Polls a process's `VmHWM` until [`PeakRss::finish`].
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    poller: JoinHandle<()>,
}

impl PeakRss {
    /// Starts polling process `pid` every millisecond.
    pub fn watch(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (p, d) = (peak.clone(), done.clone());
        let poller = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                p.fetch_max(vm_hwm_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Self { peak, done, poller }
    }

    /// Stops polling (call after the process was waited for); the peak in
    /// KiB.
    pub fn finish(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.poller.join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// The peak resident memory (`VmHWM`, KiB) of a running process so far.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
