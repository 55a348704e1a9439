//! The data of the `peers` and `status` operations of the control API, and
//! the daemon's log lines for the core's application events
//! (`protocol-spec/daemon.md`, "Status"). How they are printed is the
//! client's business (`crate::cli::status`).

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::app::ROOM_KEYS_PREFIX;
use crate::control::PeerInfo;
use crate::proto::{AppEvent, LinkId, Node, SyncProgress};
use crate::store::{Destination, MAX_LIST_LIMIT, RedbStore, Store, StoreError};

/// `peers`: one entry per connected link (`since` in Unix milliseconds).
pub fn peers(
    node: &Node<RedbStore, StdRng>,
    addresses: &BTreeMap<LinkId, String>,
) -> Vec<PeerInfo> {
    node.links()
        .iter()
        .map(|l| PeerInfo {
            link: l.link.0,
            kind: l.kind.name().to_owned(),
            address: addresses.get(&l.link).cloned().unwrap_or_default(),
            since: l.since_ms,
            bytes_in: l.bytes_in,
            bytes_out: l.bytes_out,
        })
        .collect()
}

/// The store and queue part of `status`, shared with the no-daemon path.
pub fn store_status<S: Store>(store: &S) -> Result<(Value, Value, usize), StoreError> {
    let st = store.stats()?;
    let homeserver = store.queue_len(&Destination::Homeserver, MAX_LIST_LIMIT)?;
    let mesh = store.queue_len(&Destination::Mesh, MAX_LIST_LIMIT)?;
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
/// "queues":{...},"peers","ble","homeserver"}` plus `daemon` details (the
/// driver adds `disk` and `syncing`).
pub(super) fn status(
    node: &Node<RedbStore, StdRng>,
    dir: &Path,
    listening: &[String],
    started_ms: u64,
    homeserver_sync: &str,
    ble: &Value,
) -> Result<Value, String> {
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
            "refused_events": stats.refused_events,
            "links_penalised": stats.links_penalised,
            "links_refused": stats.links_refused,
        },
    });
    Ok(v)
}

/// The `syncing` field: `[{"room_id","have","estimate"}]`, one entry per
/// own or expected room holding fewer events than a peer reported.
pub fn syncing_json(rooms: &[SyncProgress]) -> Value {
    Value::Array(
        rooms
            .iter()
            .map(|p| json!({ "room_id": p.room_id.to_string(), "have": p.have, "estimate": p.estimate }))
            .collect(),
    )
}

/// The `homeserver` field: `"off"` without a configuration, else the
/// configuration and the sync's state (`off` unless `--homeserver-sync`).
pub fn homeserver_state(dir: &Path, sync: &str) -> Value {
    let configured = crate::homeserver_config::status_summary(dir);
    if configured == "off" {
        return json!("off");
    }
    json!({ "config": configured, "sync": sync })
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
        // Taken by the device core before the driver sees outputs.
        AppEvent::PeerHolds { room, .. } | AppEvent::PeerHas { room, .. } => {
            tracing::debug!(%room, "peer holds")
        }
    }
}
