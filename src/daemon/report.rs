//! What `meshrelay peers` and `meshrelay status` print, and the daemon's
//! log lines for the core's application events (`protocol-spec/daemon.md`,
//! "Status").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::app::ROOM_KEYS_PREFIX;
use crate::proto::{AppEvent, LinkId, Node};
use crate::store::{Destination, MAX_LIST_LIMIT, RedbStore, Store, StoreError};

/// `peers`: one entry per connected link,
/// `{"link","kind","address","since","bytes_in","bytes_out"}` (`since` in
/// Unix milliseconds).
pub fn peers_json(node: &Node<RedbStore, StdRng>, addresses: &BTreeMap<LinkId, String>) -> Value {
    Value::Array(
        node.links()
            .iter()
            .map(|l| {
                json!({
                    "link": l.link.0,
                    "kind": l.kind.name(),
                    "address": addresses.get(&l.link).cloned().unwrap_or_default(),
                    "since": l.since_ms,
                    "bytes_in": l.bytes_in,
                    "bytes_out": l.bytes_out,
                })
            })
            .collect(),
    )
}

/// `peers` as printed: JSON, or one human line per link.
pub(super) fn peers(
    node: &Node<RedbStore, StdRng>,
    addresses: &BTreeMap<LinkId, String>,
    json: bool,
) -> String {
    let v = peers_json(node, addresses);
    if json {
        return format!("{v}\n");
    }
    let mut s = String::new();
    if node.links().is_empty() {
        s.push_str("no peers connected\n");
    }
    for l in node.links() {
        let _ = writeln!(
            s,
            "link {} {} {} since {} in {} B out {} B",
            l.link.0,
            l.kind.name(),
            addresses.get(&l.link).map_or("-", String::as_str),
            l.since_ms,
            l.bytes_in,
            l.bytes_out
        );
    }
    s
}

/// The store and queue part of `status`, shared with the no-daemon path.
pub fn store_status<S: Store>(store: &S) -> Result<(Value, Value, usize), StoreError> {
    let st = store.stats()?;
    let homeserver = store
        .undelivered(&Destination::Homeserver, None, MAX_LIST_LIMIT)?
        .len();
    let mesh = store
        .undelivered(&Destination::Mesh, None, MAX_LIST_LIMIT)?
        .len();
    let rooms = store.secret_keys(ROOM_KEYS_PREFIX)?.len();
    Ok((
        json!({
            "events": st.events,
            "bytes": st.bytes,
            "evicted": st.evictions,
            "forks": st.forks,
        }),
        json!({ "homeserver": homeserver, "mesh": mesh }),
        rooms,
    ))
}

/// `status` of a running daemon:
/// `{"device_id","rooms","store":{"events","bytes","evicted":{...},"forks"},
/// "queues":{...},"peers","ble","homeserver"}` plus `daemon` details.
pub(super) fn status(
    node: &Node<RedbStore, StdRng>,
    dir: &Path,
    listening: &[String],
    started_ms: u64,
    homeserver_sync: &str,
    ble: &Value,
    json: bool,
) -> Result<String, String> {
    let (identity, _) = crate::app::load_identity(dir).map_err(|e| e.to_string())?;
    let (store, queues, rooms) = store_status(node.store()).map_err(|e| e.to_string())?;
    let stats = node.stats();
    let v = json!({
        "device_id": identity.device_id().to_string(),
        "rooms": rooms,
        "store": store,
        "queues": queues,
        "peers": node.links().len(),
        "ble": ble,
        "homeserver": homeserver_state(dir, homeserver_sync),
        "daemon": {
            "running": true,
            "pid": std::process::id(),
            "started_ms": started_ms,
            "listening": listening,
            "events_stored": stats.events_stored,
            "duplicates": stats.duplicates,
            "invalid_events": stats.invalid_events,
            "links_penalised": stats.links_penalised,
            "links_refused": stats.links_refused,
        },
    });
    Ok(render_status(&v, json))
}

/// The `homeserver` field: `"off"` without a configuration, else the
/// configuration and the sync's state (`off` unless `--homeserver-sync`).
pub fn homeserver_state(dir: &Path, sync: &str) -> Value {
    let configured = crate::cli::homeserver::status_summary(dir);
    if configured == "off" {
        return json!("off");
    }
    json!({ "config": configured, "sync": sync })
}

/// `status` as printed: JSON, or a few human lines.
pub fn render_status(v: &Value, json: bool) -> String {
    if json {
        return format!("{v}\n");
    }
    let mut s = String::new();
    let _ = writeln!(s, "device:     {}", v["device_id"].as_str().unwrap_or("?"));
    let daemon = if v["daemon"]["running"].as_bool() == Some(true) {
        format!("running (pid {})", v["daemon"]["pid"])
    } else {
        "not running".to_owned()
    };
    let _ = writeln!(s, "daemon:     {daemon}");
    let _ = writeln!(s, "rooms:      {}", v["rooms"]);
    let _ = writeln!(
        s,
        "store:      {} events, {} bytes, {} forks",
        v["store"]["events"], v["store"]["bytes"], v["store"]["forks"]
    );
    let _ = writeln!(
        s,
        "queues:     {} for the homeserver, {} for the mesh",
        v["queues"]["homeserver"], v["queues"]["mesh"]
    );
    let _ = writeln!(s, "peers:      {}", v["peers"]);
    let ble = match &v["ble"] {
        Value::String(t) => t.clone(),
        other => match other["state"].as_str() {
            Some("unavailable") => {
                format!("unavailable: {}", other["reason"].as_str().unwrap_or("?"))
            }
            Some(state) => format!(
                "{state} on {} ({} links, privacy: {}, advertising: {})",
                other["adapter"].as_str().unwrap_or("?"),
                other["links"].as_array().map_or(0, Vec::len),
                other["privacy"].as_str().unwrap_or("?"),
                other["advertising"].as_str().unwrap_or("?")
            ),
            None => "?".to_owned(),
        },
    };
    let _ = writeln!(s, "ble:        {ble}");
    let hs = match &v["homeserver"] {
        Value::String(t) => t.clone(),
        other => format!(
            "{} (sync {})",
            other["config"].as_str().unwrap_or("?"),
            other["sync"].as_str().unwrap_or("?")
        ),
    };
    let _ = writeln!(s, "homeserver: {hs}");
    s
}

/// Logs what the core noticed.
pub(super) fn log_app_event(ev: &AppEvent) {
    match ev {
        AppEvent::EventStored { id, room } => tracing::debug!(%id, %room, "event stored"),
        AppEvent::GapDetected {
            room,
            sender,
            from_seq,
            to_seq,
        } => tracing::info!(%room, %sender, from_seq, to_seq, "sequence gap"),
        AppEvent::ForkDetected { room, sender, seq } => {
            tracing::warn!(%room, %sender, seq, "fork: two events claim one sequence number")
        }
        AppEvent::PeerPenalised { link, reason } => {
            tracing::warn!(link = link.0, %reason, "peer penalised")
        }
    }
}
