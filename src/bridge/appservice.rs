//! The application-service API the homeserver calls
//! (`protocol-spec/bridge.md`, "Application-service API"): transactions of
//! room events, authenticated by `hs_token`. A transaction is answered 200
//! only once its Matrix messages for the mesh are committed to the
//! bridge's state, and a transaction ID or Matrix event seen before
//! changes nothing, so the homeserver's retries are harmless. Every other
//! request, and every request without the token, is refused.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post, put};
use serde_json::{Value, json};

use super::Shared;
use super::state::Inbound;

/// Largest transaction body accepted, in bytes.
pub const MAX_TRANSACTION_BYTES: usize = 8 * 1024 * 1024;
/// Most events read from one transaction (the rest are skipped, logged).
pub const MAX_TRANSACTION_EVENTS: usize = 10_000;

/// The routes, for the shared bridge state.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
        .route("/transactions/{txn}", put(transaction))
        .route("/_matrix/app/v1/ping", post(ping))
        .route("/_matrix/app/v1/users/{id}", any(not_found))
        .route("/_matrix/app/v1/rooms/{id}", any(not_found))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_TRANSACTION_BYTES))
        .with_state(shared)
}

fn matrix_error(status: StatusCode, errcode: &str, msg: &str) -> Response {
    (
        status,
        axum::Json(json!({"errcode": errcode, "error": msg})),
    )
        .into_response()
}

/// Constant-time comparison of a presented token with the expected one.
fn same_token(given: &str, want: &str) -> bool {
    given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Checks `hs_token` (`Authorization: Bearer` or the `access_token` query
/// parameter of older homeservers): the refusal to answer, if any.
fn refusal(shared: &Shared, headers: &HeaderMap, uri: &Uri) -> Option<Response> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .map(str::to_owned)
    });
    match bearer.or(query) {
        None => Some(matrix_error(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            "no token",
        )),
        Some(t) if same_token(&t, shared.cfg.hs_token.expose()) => None,
        Some(_) => {
            tracing::warn!(path = %uri.path(), "bridge: request with a wrong hs_token refused");
            Some(matrix_error(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                "wrong token",
            ))
        }
    }
}

async fn ping(AxState(shared): AxState<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    refusal(&shared, &headers, &uri).unwrap_or_else(|| axum::Json(json!({})).into_response())
}

async fn not_found(
    AxState(shared): AxState<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(r) = refusal(&shared, &headers, &uri) {
        return r;
    }
    matrix_error(StatusCode::NOT_FOUND, "M_NOT_FOUND", "not here")
}

/// The Matrix messages of a transaction that go to the mesh: text from
/// real users (never the bridge's own puppets) in bridged rooms.
fn messages_for_mesh(shared: &Shared, body: &Value) -> Vec<Inbound> {
    let Some(events) = body["events"].as_array() else {
        tracing::warn!("bridge: transaction without an events array skipped");
        return Vec::new();
    };
    if events.len() > MAX_TRANSACTION_EVENTS {
        tracing::warn!(
            events = events.len(),
            "bridge: transaction over {MAX_TRANSACTION_EVENTS} events; the rest skipped"
        );
    }
    let mut out = Vec::new();
    for e in events.iter().take(MAX_TRANSACTION_EVENTS) {
        if e["type"].as_str() != Some("m.room.message") {
            continue;
        }
        let (Some(id), Some(sender), Some(room)) = (
            e["event_id"].as_str(),
            e["sender"].as_str(),
            e["room_id"].as_str(),
        ) else {
            tracing::warn!("bridge: malformed message event skipped");
            continue;
        };
        if shared.cfg.is_ours(sender) {
            continue; // a puppet's (or the bridge's) own message: never echoed
        }
        let body = e["content"]["body"].as_str();
        let text = match (e["content"]["msgtype"].as_str(), body) {
            (Some("m.text" | "m.notice"), Some(b)) => b.to_owned(),
            (Some("m.emote"), Some(b)) => format!("* {b}"),
            _ => continue, // files, edits without text, redactions…
        };
        let mesh_room = match shared.state.mesh_room(room) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(%err, "bridge: state read failed");
                continue;
            }
        };
        out.push(Inbound {
            matrix_event: id.to_owned(),
            room: mesh_room,
            user: sender.to_owned(),
            text,
            sending: false,
        });
    }
    out
}

async fn transaction(
    AxState(shared): AxState<Arc<Shared>>,
    Path(txn): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Some(r) = refusal(&shared, &headers, &uri) {
        return r;
    }
    // Parsing, the state reads and the commit run off the runtime's
    // threads, at once.
    let worker = shared.clone();
    let committed = tokio::task::spawn_blocking(move || {
        if worker.state.txn_done(&txn)? {
            return Ok(0);
        }
        let parsed: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            // Answered, or the homeserver would retry it for ever.
            tracing::warn!(%e, txn, "bridge: malformed transaction skipped");
            Value::Null
        });
        let msgs = messages_for_mesh(&worker, &parsed);
        worker.state.commit_txn(&txn, &msgs)
    })
    .await;
    match committed {
        Ok(Ok(n)) => {
            if n > 0 {
                shared.wake.notify_one();
            }
            axum::Json(json!({})).into_response()
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(%e, "bridge: transaction not committed; the homeserver will retry");
    matrix_error(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "try again")
}
