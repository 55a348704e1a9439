//! `meshrelay run --metrics ADDR`: Prometheus text exposition (format
//! 0.0.4) on `GET /metrics` (`protocol-spec/daemon.md`, "Metrics").
//!
//! The HTTP server (axum) runs in its own task and owns nothing: each
//! scrape sends a [`Scrape`] to the run loop, which renders the node's and
//! the store's counters between two cycles ([`render`]) and answers. A
//! scrape therefore sees one consistent state, and a stalled run loop shows
//! as a scrape timeout.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};

use crate::proto::{LinkKind, Node};
use crate::store::roles::*;
use crate::store::{Destination, MAX_LIST_LIMIT, RedbStore};

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Scrapes queued for the run loop at once; more are answered 503.
pub const MAX_PENDING_SCRAPES: usize = 4;

/// A scrape waits this long for the run loop before answering 503.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// A scrape for the run loop to answer with [`render`]'s text.
pub(super) type Scrape = oneshot::Sender<String>;

/// Binds `addr` and serves `/metrics` until the task is aborted. Returns the
/// task and the receiver of scrapes for the run loop.
pub(super) async fn spawn(
    addr: SocketAddr,
) -> std::io::Result<(
    tokio::task::JoinHandle<()>,
    mpsc::Receiver<Scrape>,
    SocketAddr,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel::<Scrape>(MAX_PENDING_SCRAPES);
    let app = Router::new().route("/metrics", get(scrape)).with_state(tx);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok((task, rx, local))
}

async fn scrape(State(tx): State<mpsc::Sender<Scrape>>) -> impl IntoResponse {
    let (reply, answer) = oneshot::channel();
    let unavailable = (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "the daemon is busy\n".to_owned(),
    );
    if tx.try_send(reply).is_err() {
        return unavailable;
    }
    match tokio::time::timeout(SCRAPE_TIMEOUT, answer).await {
        Ok(Ok(text)) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text),
        _ => unavailable,
    }
}

/// What the run loop knows beyond the node.
pub(super) struct DaemonFacts<'a> {
    /// The data directory (the store file's age tells the last commit).
    pub dir: &'a Path,
    /// When the daemon started, Unix milliseconds.
    pub started_ms: u64,
    /// The homeserver sync's state (`off`, `running`, `stopped: ...`).
    pub homeserver: &'a str,
    /// Free space and the disk level.
    pub disk: &'a super::disk::DiskWatch,
}

/// One metric family: its help and type lines, then samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    family(out, name, kind, help, &[(String::new(), v)]);
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text for the node, its store and the daemon.
pub(super) fn render(
    node: &Node<RedbStore, StdRng>,
    facts: &DaemonFacts<'_>,
    now_ms: u64,
) -> String {
    let mut out = String::new();
    let links = node.links();
    let kinds = [LinkKind::Lan, LinkKind::Ble, LinkKind::Memory];
    let by_kind = |f: &dyn Fn(&crate::proto::node::LinkInfo) -> u64| -> Vec<(String, u64)> {
        kinds
            .iter()
            .map(|k| {
                let v = links.iter().filter(|l| l.kind == *k).map(f).sum();
                (format!("kind=\"{}\"", k.name()), v)
            })
            .collect()
    };
    family(
        &mut out,
        "meshrelay_links",
        "gauge",
        "Connected links by kind.",
        &by_kind(&|_| 1),
    );
    family(
        &mut out,
        "meshrelay_link_received_bytes",
        "gauge",
        "Bytes received over the links connected now, by kind.",
        &by_kind(&|l| l.bytes_in),
    );
    family(
        &mut out,
        "meshrelay_link_sent_bytes",
        "gauge",
        "Bytes sent over the links connected now, by kind.",
        &by_kind(&|l| l.bytes_out),
    );
    let s = node.stats();
    one(
        &mut out,
        "meshrelay_events_stored_total",
        "counter",
        "Events newly stored since the daemon started.",
        s.events_stored,
    );
    one(
        &mut out,
        "meshrelay_events_duplicate_total",
        "counter",
        "Events received that were already held.",
        s.duplicates,
    );
    one(
        &mut out,
        "meshrelay_events_invalid_total",
        "counter",
        "Events rejected as invalid.",
        s.invalid_events,
    );
    one(
        &mut out,
        "meshrelay_events_refused_total",
        "counter",
        "Events the store refused (budget, expiry).",
        s.refused_events,
    );
    one(
        &mut out,
        "meshrelay_events_sent_total",
        "counter",
        "Full events sent to peers.",
        s.events_sent,
    );
    one(
        &mut out,
        "meshrelay_links_penalised_total",
        "counter",
        "Links closed for misbehaviour (penalties).",
        s.links_penalised,
    );
    one(
        &mut out,
        "meshrelay_links_refused_total",
        "counter",
        "Links refused at link-up (busy, penalised, over the new-link budget).",
        s.links_refused,
    );
    one(
        &mut out,
        "meshrelay_events_shed_total",
        "counter",
        "Events not stored because the disk is low (strangers) or full (all).",
        s.shed_events,
    );
    let disk = facts.disk;
    one(
        &mut out,
        "meshrelay_disk_free_bytes",
        "gauge",
        "Free bytes on the data directory's file system at the last check.",
        disk.free(),
    );
    one(
        &mut out,
        "meshrelay_disk_full",
        "gauge",
        "1 while the disk is full: nothing new is stored, own messages are refused.",
        u64::from(disk.level() == super::disk::DiskLevel::Full),
    );
    one(
        &mut out,
        "meshrelay_disk_low",
        "gauge",
        "1 while the disk is low or full: stranger traffic is shed.",
        u64::from(disk.level() >= super::disk::DiskLevel::Low),
    );
    one(
        &mut out,
        "meshrelay_commits_failed_no_space_total",
        "counter",
        "Commits that failed for lack of space (rolled back, nothing acknowledged).",
        disk.failed_commits,
    );
    let store = node.store();
    match store.stats() {
        Ok(st) => {
            one(
                &mut out,
                "meshrelay_store_events",
                "gauge",
                "Events held in the store.",
                st.events,
            );
            one(
                &mut out,
                "meshrelay_store_bytes",
                "gauge",
                "Bytes charged for held events.",
                st.bytes,
            );
            one(
                &mut out,
                "meshrelay_store_forks_total",
                "counter",
                "Forks detected.",
                st.forks,
            );
            let e = st.evictions;
            family(
                &mut out,
                "meshrelay_store_evictions_total",
                "counter",
                "Events evicted from the store, by reason.",
                &[
                    ("reason=\"expired\"".into(), e.expired),
                    ("reason=\"stranger_pool\"".into(), e.stranger_pool),
                    ("reason=\"budget\"".into(), e.budget),
                    ("reason=\"delivered\"".into(), e.delivered),
                ],
            );
            let r = st.rejections;
            family(
                &mut out,
                "meshrelay_store_rejections_total",
                "counter",
                "Events refused at intake, by reason.",
                &[
                    ("reason=\"expired\"".into(), r.expired),
                    ("reason=\"from_future\"".into(), r.from_future),
                    ("reason=\"link_budget\"".into(), r.link_budget),
                    ("reason=\"key_budget\"".into(), r.key_budget),
                    ("reason=\"full\"".into(), r.full),
                ],
            );
        }
        Err(e) => tracing::warn!(error = %e, "metrics: store statistics unavailable"),
    }
    let queue = |d: &Destination| {
        store
            .queue_len(d, MAX_LIST_LIMIT)
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
    };
    if let (Ok(hs), Ok(mesh)) = (queue(&Destination::Homeserver), queue(&Destination::Mesh)) {
        family(
            &mut out,
            "meshrelay_queue_length",
            "gauge",
            "Undelivered events per destination (counted up to the list limit).",
            &[
                ("destination=\"homeserver\"".into(), hs),
                ("destination=\"mesh\"".into(), mesh),
            ],
        );
    }
    let state = match facts.homeserver {
        s if s.starts_with("stopped") => "stopped",
        s => s,
    };
    family(
        &mut out,
        "meshrelay_homeserver_sync",
        "gauge",
        "The homeserver sync's state (1 for the current one).",
        &["off", "running", "stopped"]
            .iter()
            .map(|s| (format!("state=\"{}\"", label(s)), u64::from(*s == state)))
            .collect::<Vec<_>>(),
    );
    let store_file = facts.dir.join(crate::store::redb_backend::STORE_FILE_NAME);
    if let Some(age) = std::fs::metadata(&store_file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
    {
        one(
            &mut out,
            "meshrelay_last_commit_age_seconds",
            "gauge",
            "Seconds since the store file was last written (the last commit).",
            age.as_secs(),
        );
    }
    one(
        &mut out,
        "meshrelay_start_time_seconds",
        "gauge",
        "When the daemon started, Unix seconds.",
        facts.started_ms / 1000,
    );
    one(
        &mut out,
        "meshrelay_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        now_ms.saturating_sub(facts.started_ms) / 1000,
    );
    out
}
