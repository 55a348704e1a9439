//! The running BLE adapter (feature `runtime`): [`spawn`] starts the radio
//! task on the tokio runtime and returns a [`BleHandle`] for sending and
//! closing, and the stream of [`BleEvent`]s; the task supervises `hw` and
//! restarts it with backoff (`protocol-spec/ble.md`).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::*;

// Without the radio nothing reads the commands (the handle still takes them).
#[cfg_attr(not(all(feature = "ble", target_os = "linux")), allow(dead_code))]
pub(crate) enum Command {
    Send(LinkId, Vec<u8>),
    Close(LinkId),
}

/// A handle for sending on BLE links and reading the adapter's state.
/// Cheap to clone. Sends never wait (the core bounds what is in flight per
/// link until it sees `Drained`).
#[derive(Clone)]
pub struct BleHandle {
    cmd: mpsc::UnboundedSender<Command>,
    status: Arc<Mutex<BleStatus>>,
    /// Keeps the event channel open while the adapter is off or
    /// unavailable, so the daemon's receiver simply stays quiet.
    _events: mpsc::Sender<BleEvent>,
}

impl BleHandle {
    /// Queues a datagram on a link.
    pub fn send(&self, link: LinkId, bytes: Vec<u8>) {
        let _ = self.cmd.send(Command::Send(link, bytes));
    }

    /// Closes a link.
    pub fn close(&self, link: LinkId) {
        let _ = self.cmd.send(Command::Close(link));
    }

    /// The adapter's state for `status`.
    pub fn status(&self) -> BleStatus {
        Self::read(&self.status)
    }

    fn read(status: &Mutex<BleStatus>) -> BleStatus {
        status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

pub(crate) fn set_status(status: &Mutex<BleStatus>, s: BleStatus) {
    match status.lock() {
        Ok(mut g) => *g = s,
        Err(e) => *e.into_inner() = s,
    }
}

/// Starts the adapter (inside a tokio runtime). With `enabled == false` the
/// status is `off`; without hardware support it becomes `unavailable` with
/// the reason (also logged), and the event stream stays quiet.
pub fn spawn(config: BleConfig) -> Result<(BleHandle, mpsc::Receiver<BleEvent>), BleError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| BleError::NoRuntime)?;
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let initial = if config.enabled {
        BleStatus::Unavailable {
            reason: "starting".into(),
        }
    } else {
        BleStatus::Off
    };
    let status = Arc::new(Mutex::new(initial));
    let handle = BleHandle {
        cmd: cmd_tx,
        status: status.clone(),
        _events: ev_tx.clone(),
    };
    if config.enabled {
        contain_upstream_cleanup_panics();
        start(rt, config, cmd_rx, ev_tx, status);
    }
    Ok((handle, ev_rx))
}

/// Installs (once) a panic hook that logs [`is_upstream_cleanup_panic`]
/// panics as warnings and hands every other panic to the previous hook.
fn contain_upstream_cleanup_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map_or("", |l| l.file());
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if is_upstream_cleanup_panic(file, message) {
                tracing::warn!(
                    "BLE: bluez-async's signal-stream cleanup task failed ({message}); \
                     known upstream unwrap, confined to that task, nothing lost"
                );
            } else {
                previous(info);
            }
        }));
    });
}

#[cfg(all(feature = "ble", target_os = "linux"))]
fn start(
    rt: tokio::runtime::Handle,
    config: BleConfig,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    ev_tx: mpsc::Sender<BleEvent>,
    status: Arc<Mutex<BleStatus>>,
) {
    rt.spawn(supervise(config, cmd_rx, ev_tx, status));
}

/// Runs the radio and starts it again when it fails: an adapter or D-Bus
/// error, or a panic anywhere in the Bluetooth stack while it runs in this
/// task, is caught, logged, reported as `unavailable` with the reason, and
/// retried with backoff. Links that were up are reported down first.
#[cfg(all(feature = "ble", target_os = "linux"))]
async fn supervise(
    config: BleConfig,
    mut cmd_rx: mpsc::UnboundedReceiver<Command>,
    ev_tx: mpsc::Sender<BleEvent>,
    status: Arc<Mutex<BleStatus>>,
) {
    use futures::FutureExt;
    let mut delay = RESTART_MIN_MS;
    let mut last_reason = String::new();
    for attempt in 0u64.. {
        let mut cfg = config.clone();
        cfg.first_link_id = config
            .first_link_id
            .saturating_add(attempt.saturating_mul(RESTART_LINK_ID_STRIDE));
        let run = std::panic::AssertUnwindSafe(hw::run(&cfg, &mut cmd_rx, &ev_tx, &status));
        let reason = match run.catch_unwind().await {
            Ok(Ok(())) => return,
            Ok(Err(reason)) => reason,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown".into());
                tracing::error!("BLE stack failed (caught panic: {what})");
                format!("the Bluetooth stack failed: {what}")
            }
        };
        // The links of the failed run are gone; a run that got as far as
        // running starts the backoff afresh.
        if let BleStatus::Running { links, .. } = BleHandle::read(&status) {
            delay = RESTART_MIN_MS;
            for l in links {
                if ev_tx.send(BleEvent::Down(LinkId(l.link))).await.is_err() {
                    return;
                }
            }
        }
        if reason != last_reason {
            tracing::info!("BLE unavailable: {reason} (retrying in {} s)", delay / 1000);
        } else {
            tracing::debug!("BLE still unavailable: {reason}");
        }
        set_status(
            &status,
            BleStatus::Unavailable {
                reason: reason.clone(),
            },
        );
        last_reason = reason;
        // Wait, dropping sends to links that no longer exist; stop with the daemon.
        let sleep = tokio::time::sleep(std::time::Duration::from_millis(delay));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = cmd_rx.recv() => if cmd.is_none() { return },
            }
        }
        if ev_tx.is_closed() {
            return;
        }
        delay = (delay * 2).min(RESTART_MAX_MS);
    }
}

#[cfg(not(all(feature = "ble", target_os = "linux")))]
fn start(
    _rt: tokio::runtime::Handle,
    _config: BleConfig,
    _cmd_rx: mpsc::UnboundedReceiver<Command>,
    _ev_tx: mpsc::Sender<BleEvent>,
    status: Arc<Mutex<BleStatus>>,
) {
    let reason = "built without the `ble` feature (or not on Linux)".to_string();
    tracing::info!("BLE unavailable: {reason}");
    set_status(&status, BleStatus::Unavailable { reason });
}
