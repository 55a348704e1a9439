//! The async sync engine (`protocol-spec/homeserver.md`, "Uplink",
//! "Downlink", "Failure handling"): it talks to the homeserver through
//! [`Client`] (retries, backoff with jitter, `429` waits) and calls a
//! [`SyncHost`] between requests for everything that touches the store.

use std::future::Future;
use std::time::Duration;

use crate::transport::homeserver::{
    BUNDLE_EVENT_TYPE, Client, HomeserverError, MAX_BUNDLE_BYTES, RetryPolicy,
};

use super::downlink;
use super::host::SyncHost;
use super::progress::Progress;
use super::uplink::{MAX_PENDING_BUNDLES, MIN_UPLINK_BUNDLE_BYTES};
use super::{SyncError, SyncReport};

/// Long-poll timeout of `/sync` in continuous mode.
pub const CONTINUOUS_POLL: Duration = Duration::from_secs(10);
/// Bundles prepared (persisted) per uplink round.
pub const UPLINK_ROUND_BUNDLES: usize = 8;
/// First wait after a transient failure in continuous mode.
pub const CONTINUOUS_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait after transient failures in continuous mode.
pub const CONTINUOUS_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How one sync runs.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The transport room.
    pub room_id: String,
    /// The account and room the downlink cursor belongs to (usually
    /// `"{user_id} {room_id}"`).
    pub owner: String,
    /// Largest encoded bundle to send (at most `MAX_BUNDLE_BYTES`; halved
    /// after a `413`).
    pub max_bundle_bytes: usize,
    /// Pause before each bundle upload (tests use it to interrupt an
    /// upload; zero otherwise).
    pub send_delay: Duration,
    /// Test hook: abort the process right after this many bundles were
    /// accepted by the homeserver and before the acceptance is recorded
    /// (a crash in the worst place). `None` otherwise.
    pub abort_after_sends: Option<u64>,
}

impl SyncOptions {
    /// Defaults for `room_id` and the account `user_id`.
    pub fn new(room_id: &str, user_id: &str) -> Self {
        SyncOptions {
            room_id: room_id.to_owned(),
            owner: format!("{user_id} {room_id}"),
            max_bundle_bytes: MAX_BUNDLE_BYTES,
            send_delay: Duration::ZERO,
            abort_after_sends: None,
        }
    }
}

/// Downloads until the homeserver has nothing new: pages through a stored
/// backfill gap, then `/sync` with `timeout` (zero: return at once).
/// Every response is stored with its cursor in one commit.
async fn downlink<H: SyncHost, P: Progress + ?Sized>(
    host: &mut H,
    client: &Client,
    opts: &SyncOptions,
    timeout: Duration,
    report: &mut SyncReport,
    progress: &mut P,
) -> Result<(), SyncError> {
    let mut timeout = timeout;
    loop {
        let mut cursor = host.cursor(&opts.owner).await?;
        let (events, more) = if let Some(gap) = cursor.gap.take() {
            let page = client.backfill(&gap).await?;
            cursor.gap = page.rest;
            (page.events, true)
        } else {
            let batch = client
                .sync(&opts.room_id, cursor.since.as_deref(), timeout)
                .await?;
            let more = !batch.events.is_empty() || batch.gap.is_some();
            cursor.since = Some(batch.next_batch);
            cursor.gap = batch.gap;
            (batch.events, more)
        };
        let decoded = downlink::decode(&events);
        report.rejected += decoded.rejected;
        report.malformed_bundles += decoded.malformed_bundles;
        let out = host.downlinked(decoded.events, cursor).await?;
        report.downloaded += out.stored;
        report.present += out.present;
        report.rejected += out.rejected;
        report.unauthorized += out.unauthorized;
        if out.stored > 0 {
            progress.downloaded(out.stored, report.downloaded);
        }
        if !more {
            return Ok(());
        }
        // Once something arrived, drain the rest without waiting.
        timeout = Duration::ZERO;
    }
}

/// Uploads until the homeserver queue is empty.
async fn uplink<H: SyncHost, P: Progress + ?Sized>(
    host: &mut H,
    client: &Client,
    opts: &mut SyncOptions,
    report: &mut SyncReport,
    progress: &mut P,
) -> Result<(), SyncError> {
    let queued = host.queued().await?;
    if queued > 0 {
        progress.upload_started(queued);
    }
    let mut done = 0u64;
    loop {
        let max_bytes = opts
            .max_bundle_bytes
            .clamp(MIN_UPLINK_BUNDLE_BYTES, MAX_BUNDLE_BYTES);
        let bundles = host
            .next_uplink(UPLINK_ROUND_BUNDLES.min(MAX_PENDING_BUNDLES), max_bytes)
            .await?;
        if bundles.is_empty() {
            return Ok(());
        }
        for b in &bundles {
            if !opts.send_delay.is_zero() {
                tokio::time::sleep(opts.send_delay).await;
            }
            match client
                .send(&opts.room_id, BUNDLE_EVENT_TYPE, b.txn_id(), &b.content())
                .await
            {
                Ok(matrix_id) => {
                    tracing::debug!(txn = b.txn_id(), %matrix_id, events = b.events().len(), "bundle sent");
                }
                Err(HomeserverError::TooLarge { message })
                    if b.encoded().len() > MIN_UPLINK_BUNDLE_BYTES =>
                {
                    // A stricter server: pack smaller bundles from now on.
                    tracing::warn!(%message, bytes = b.encoded().len(), "bundle too large for the homeserver; halving");
                    opts.max_bundle_bytes = (b.encoded().len() / 2).max(MIN_UPLINK_BUNDLE_BYTES);
                    for rest in &bundles {
                        host.discard(rest).await?;
                    }
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            if opts.abort_after_sends == Some(report.bundles + 1) {
                tracing::error!("test hook: aborting after an accepted send");
                std::process::abort();
            }
            host.uplinked(b).await?;
            let n = b.events().len() as u64;
            done += n;
            report.uploaded += n;
            report.bundles += 1;
            progress.uploaded(n, done, queued);
        }
    }
}

/// `meshrelay sync --once`: downloads everything new, then uploads the
/// whole queue, then returns what it did. Transient failures have already
/// been retried by the client; they end the sync with an error, and
/// nothing is lost (run it again).
pub async fn sync_once<H: SyncHost, P: Progress + ?Sized>(
    host: &mut H,
    client: &Client,
    opts: &SyncOptions,
    progress: &mut P,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let mut opts = opts.clone();
    // Down first: what the server already has is then not uploaded again.
    downlink(host, client, &opts, Duration::ZERO, &mut report, progress).await?;
    uplink(host, client, &mut opts, &mut report, progress).await?;
    progress.finished();
    Ok(report)
}

/// `meshrelay run --homeserver-sync`: rounds of upload and long-polling
/// download until `shutdown` resolves. Transient failures wait with
/// exponential backoff and jitter ([`CONTINUOUS_BACKOFF_MIN`] to
/// [`CONTINUOUS_BACKOFF_MAX`]) and try again; a rejected token
/// ([`HomeserverError::LoginRequired`]) or a store failure ends it with the
/// error. Progress goes to `progress`. Safe to cancel at any `.await`: compositions
/// are persisted before sending and acknowledgements after.
pub async fn run_continuous<H: SyncHost, P: Progress + ?Sized>(
    host: &mut H,
    client: &Client,
    opts: &SyncOptions,
    progress: &mut P,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SyncError> {
    let mut report = SyncReport::default();
    let mut opts = opts.clone();
    let mut failures = 0u32;
    let work = async {
        loop {
            let round = async {
                uplink(host, client, &mut opts, &mut report, progress).await?;
                downlink(host, client, &opts, CONTINUOUS_POLL, &mut report, progress).await
            }
            .await;
            match round {
                Ok(()) => failures = 0,
                Err(e) if e.is_transient() => {
                    failures = failures.saturating_add(1);
                    let policy = RetryPolicy {
                        base_delay: CONTINUOUS_BACKOFF_MIN,
                        max_delay: CONTINUOUS_BACKOFF_MAX,
                        ..RetryPolicy::default()
                    };
                    let wait =
                        policy.backoff(failures, &mut rand_core::UnwrapErr(rand::rngs::SysRng));
                    if let SyncError::Homeserver(he) = &e {
                        progress.retrying(he, u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                    }
                    tracing::warn!(error = %e, ?wait, "homeserver sync failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    tokio::select! {
        r = work => r,
        () = shutdown => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Device;
    use crate::store::RedbStore;
    use crate::sync::{DirectHost, NoProgress};

    fn assert_send<T: Send>(_: &T) {}

    /// The daemon can spawn the continuous sync on a multi-threaded runtime.
    #[test]
    fn continuous_sync_future_is_send() {
        fn check(host: &mut DirectHost<RedbStore>, client: &Client, opts: &SyncOptions) {
            {
                let mut p = NoProgress;
                let fut = run_continuous(host, client, opts, &mut p, std::future::pending());
                assert_send(&fut);
            }
            let mut p = NoProgress;
            assert_send(&sync_once(host, client, opts, &mut p));
        }
        let _ = check;
        let _: Option<Device<RedbStore>> = None;
    }
}
