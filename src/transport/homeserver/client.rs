//! A typed client for the parts of the Matrix Client-Server API that the
//! transport room needs (`protocol-spec/homeserver.md`, "Client").
//!
//! Every request goes through one retry loop: transport errors and `5xx`
//! back off exponentially with jitter (randomness from the RNG given to
//! [`Client::new`]), `429` waits as long as the server asks, `401` /
//! `M_UNKNOWN_TOKEN` and `413` fail at once with their own error.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use rand_core::Rng;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::bundle::BUNDLE_EVENT_TYPE;
use super::error::HomeserverError;
use super::retry::{RetryPolicy, retry_after};

/// Timeout of an ordinary request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time a `/sync` request gets beyond its long-poll timeout.
pub const SYNC_GRACE: Duration = Duration::from_secs(30);
/// Most timeline events asked for per `/sync` (Synapse caps at 100).
pub const SYNC_TIMELINE_LIMIT: u32 = 100;
/// Most events asked for per `/messages` page.
pub const MESSAGES_PAGE_LIMIT: u32 = 100;
/// Room version used for new transport rooms.
pub const TRANSPORT_ROOM_VERSION: &str = "12";

/// A Matrix access token: a secret, so its `Debug` is redacted and its
/// memory is zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Zeroizing<String>);

impl AccessToken {
    /// Wraps a token string.
    pub fn new(token: impl Into<String>) -> Self {
        AccessToken(Zeroizing::new(token.into()))
    }

    /// The token text, for storing it (mode 0600) or sending it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// What a login returns.
#[derive(Debug, Clone)]
pub struct Session {
    /// Full Matrix user ID, `@user:server`.
    pub user_id: String,
    /// The device the token belongs to; transaction IDs are remembered per
    /// user and device.
    pub device_id: String,
    /// The access token.
    pub access_token: AccessToken,
}

/// One event of the transport room as the homeserver delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomEvent {
    /// The homeserver's event ID (`$...`).
    pub event_id: String,
    /// Matrix event type.
    pub event_type: String,
    /// Sending Matrix user.
    pub sender: String,
    /// Event content (still untrusted).
    pub content: Value,
}

/// A stretch of room history that `/sync` skipped (`limited: true`), to be
/// fetched backwards with [`Client::backfill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The room.
    pub room_id: String,
    /// Pagination token to read backwards from.
    pub from: String,
    /// Token to stop at: the `since` of the sync that found the gap, or
    /// `None` to read back to the start of the room.
    pub to: Option<String>,
}

/// The transport room's part of one `/sync` response.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncBatch {
    /// Token for the next `/sync` (persist it after handling `events`
    /// and the gap).
    pub next_batch: String,
    /// Timeline events of the transport room, oldest first.
    pub events: Vec<RoomEvent>,
    /// Set when the timeline was `limited`: older events to backfill.
    pub gap: Option<Gap>,
}

/// One page of backfill.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillPage {
    /// Events of this page, oldest first.
    pub events: Vec<RoomEvent>,
    /// What is left of the gap, or `None` when it is filled.
    pub rest: Option<Gap>,
}

/// Matrix Client-Server API client for one account.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<AccessToken>,
    policy: RetryPolicy,
    rng: Mutex<Box<dyn Rng + Send>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct MatrixErrorBody {
    #[serde(default)]
    errcode: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
    #[serde(default)]
    soft_logout: bool,
}

impl Client {
    /// A client for the homeserver at `base_url` (e.g.
    /// `https://matrix.example.org`), without a token yet. `rng` feeds the
    /// backoff jitter.
    pub fn new(
        base_url: &str,
        policy: RetryPolicy,
        rng: Box<dyn Rng + Send>,
    ) -> Result<Client, HomeserverError> {
        let base = Url::parse(base_url.trim_end_matches('/'))
            .map_err(|_| HomeserverError::InvalidUrl(base_url.into()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(HomeserverError::InvalidUrl(base_url.into()));
        }
        if base.scheme() == "http" && !is_loopback_host(base.host_str().unwrap_or_default()) {
            return Err(HomeserverError::InsecureUrl(base_url.into()));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("meshrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HomeserverError::BadResponse(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: None,
            policy: RetryPolicy {
                max_attempts: policy.max_attempts.max(1),
                ..policy
            },
            rng: Mutex::new(rng),
        })
    }

    /// Sets the access token used for every later request.
    pub fn with_token(mut self, token: AccessToken) -> Self {
        self.token = Some(token);
        self
    }

    /// The homeserver base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty();
            p.extend(segments);
        }
        url
    }

    fn backoff(&self, failures: u32) -> Duration {
        match self.rng.lock() {
            Ok(mut rng) => self.policy.backoff(failures, &mut **rng),
            Err(poisoned) => self.policy.backoff(failures, &mut **poisoned.into_inner()),
        }
    }

    /// Sends one request with retries and returns the JSON body of the
    /// first success.
    async fn request(
        &self,
        method: Method,
        url: Url,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, HomeserverError> {
        let mut attempt = 0u32;
        let mut failures = 0u32;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .query(query)
                .timeout(timeout);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t.expose());
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    failures += 1;
                    if attempt >= self.policy.max_attempts {
                        return Err(HomeserverError::Network {
                            attempts: attempt,
                            message: e.to_string(),
                        });
                    }
                    tracing::debug!(%e, attempt, "homeserver request failed; backing off");
                    tokio::time::sleep(self.backoff(failures)).await;
                    continue;
                }
            };
            let status = resp.status();
            let header_retry = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    failures += 1;
                    if attempt >= self.policy.max_attempts {
                        return Err(HomeserverError::Network {
                            attempts: attempt,
                            message: e.to_string(),
                        });
                    }
                    tokio::time::sleep(self.backoff(failures)).await;
                    continue;
                }
            };
            if status.is_success() {
                return serde_json::from_slice(&bytes)
                    .map_err(|e| HomeserverError::BadResponse(format!("{url}: {e}")));
            }
            let err: MatrixErrorBody = serde_json::from_slice(&bytes).unwrap_or(MatrixErrorBody {
                errcode: String::new(),
                error: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                retry_after_ms: None,
                soft_logout: false,
            });
            if status == StatusCode::TOO_MANY_REQUESTS || err.errcode == "M_LIMIT_EXCEEDED" {
                let hint = retry_after(err.retry_after_ms, header_retry.as_deref());
                let wait = match hint {
                    Some(w) => w,
                    None => {
                        failures += 1;
                        self.backoff(failures)
                    }
                };
                let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                if attempt >= self.policy.max_attempts || wait > self.policy.max_retry_after {
                    return Err(HomeserverError::RateLimited {
                        retry_after_ms: wait_ms,
                    });
                }
                tracing::debug!(wait_ms, attempt, "homeserver rate limit; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED
                || matches!(err.errcode.as_str(), "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN")
            {
                return Err(HomeserverError::LoginRequired {
                    errcode: err.errcode,
                    soft_logout: err.soft_logout,
                });
            }
            if status == StatusCode::PAYLOAD_TOO_LARGE || err.errcode == "M_TOO_LARGE" {
                return Err(HomeserverError::TooLarge { message: err.error });
            }
            if status == StatusCode::FORBIDDEN {
                return Err(HomeserverError::Forbidden {
                    errcode: err.errcode,
                    message: err.error,
                });
            }
            if status.is_server_error() {
                failures += 1;
                if attempt >= self.policy.max_attempts {
                    return Err(HomeserverError::Server {
                        status: status.as_u16(),
                        attempts: attempt,
                    });
                }
                tokio::time::sleep(self.backoff(failures)).await;
                continue;
            }
            return Err(HomeserverError::Matrix {
                status: status.as_u16(),
                errcode: err.errcode,
                message: err.error,
            });
        }
    }

    /// One Client-Server API request (`/_matrix/client/v3/SEGMENTS`) with
    /// the client's token and retries; the JSON body of the success.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, HomeserverError> {
        let mut all = vec!["_matrix", "client", "v3"];
        all.extend_from_slice(segments);
        self.request(method, self.url(&all), query, body, REQUEST_TIMEOUT)
            .await
    }

    /// Logs in with a password (`m.login.password`), returning the session.
    /// The client keeps using whatever token it had; build a new one with
    /// [`Client::with_token`].
    pub async fn login_password(
        &self,
        user: &str,
        password: &str,
        device_display_name: &str,
    ) -> Result<Session, HomeserverError> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
            "initial_device_display_name": device_display_name,
        });
        let v = self
            .call(Method::POST, &["login"], &[], Some(&body))
            .await?;
        Ok(Session {
            user_id: str_field(&v, "user_id")?,
            device_id: str_field(&v, "device_id")?,
            access_token: AccessToken::new(str_field(&v, "access_token")?),
        })
    }

    /// The user and device the token belongs to (`/account/whoami`).
    pub async fn whoami(&self) -> Result<(String, Option<String>), HomeserverError> {
        let v = self
            .call(Method::GET, &["account", "whoami"], &[], None)
            .await?;
        let device = v.get("device_id").and_then(Value::as_str).map(Into::into);
        Ok((str_field(&v, "user_id")?, device))
    }

    /// Creates a private transport room (room version 12) inviting
    /// `invite` (Matrix user IDs); returns its room ID. Version 12 room IDs
    /// have no `:server` part, so treat them as opaque strings.
    pub async fn create_room(&self, invite: &[&str]) -> Result<String, HomeserverError> {
        let body = json!({
            "preset": "private_chat",
            "room_version": TRANSPORT_ROOM_VERSION,
            "name": "meshrelay transport",
            "invite": invite,
        });
        let v = self
            .call(Method::POST, &["createRoom"], &[], Some(&body))
            .await?;
        str_field(&v, "room_id")
    }

    /// Invites a user to a room.
    pub async fn invite(&self, room_id: &str, user_id: &str) -> Result<(), HomeserverError> {
        let body = json!({ "user_id": user_id });
        self.call(
            Method::POST,
            &["rooms", room_id, "invite"],
            &[],
            Some(&body),
        )
        .await?;
        Ok(())
    }

    /// Joins a room by ID or alias; returns the room ID.
    pub async fn join_room(&self, room_id_or_alias: &str) -> Result<String, HomeserverError> {
        let v = self
            .call(
                Method::POST,
                &["join", room_id_or_alias],
                &[],
                Some(&json!({})),
            )
            .await?;
        str_field(&v, "room_id")
    }

    /// Sends one event of `event_type` under the caller's transaction ID
    /// (`PUT /rooms/{room}/send/{type}/{txn}`); returns the homeserver's
    /// event ID. Re-sending the same transaction ID from the same device
    /// returns the original event ID instead of creating a new event.
    pub async fn send(
        &self,
        room_id: &str,
        event_type: &str,
        txn_id: &str,
        content: &Value,
    ) -> Result<String, HomeserverError> {
        let v = self
            .call(
                Method::PUT,
                &["rooms", room_id, "send", event_type, txn_id],
                &[],
                Some(content),
            )
            .await?;
        str_field(&v, "event_id")
    }

    /// The `/sync` filter selecting only the transport room's bundle events.
    fn sync_filter(room_id: &str) -> Value {
        json!({
            "presence": { "types": [] },
            "account_data": { "types": [] },
            "room": {
                "rooms": [room_id],
                "timeline": { "limit": SYNC_TIMELINE_LIMIT, "types": [BUNDLE_EVENT_TYPE] },
                "state": { "types": [], "lazy_load_members": true },
                "ephemeral": { "types": [] },
                "account_data": { "types": [] },
            },
        })
    }

    /// One long-polling `/sync` for the transport room. `since` is the
    /// persisted token (none on first sync); `timeout` is how long the
    /// server may hold the request when nothing is new. If the timeline
    /// was `limited`, [`SyncBatch::gap`] says what to backfill.
    pub async fn sync(
        &self,
        room_id: &str,
        since: Option<&str>,
        timeout: Duration,
    ) -> Result<SyncBatch, HomeserverError> {
        let mut query = vec![
            ("filter", Self::sync_filter(room_id).to_string()),
            ("timeout", timeout.as_millis().to_string()),
        ];
        if let Some(s) = since {
            query.push(("since", s.to_owned()));
        }
        let url = self.url(&["_matrix", "client", "v3", "sync"]);
        let v = self
            .request(Method::GET, url, &query, None, timeout + SYNC_GRACE)
            .await?;
        let next_batch = str_field(&v, "next_batch")?;
        let timeline = v
            .get("rooms")
            .and_then(|r| r.get("join"))
            .and_then(|j| j.get(room_id))
            .and_then(|r| r.get("timeline"));
        let Some(timeline) = timeline else {
            return Ok(SyncBatch {
                next_batch,
                events: Vec::new(),
                gap: None,
            });
        };
        let events = parse_events(timeline.get("events"));
        let limited = timeline
            .get("limited")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let gap = match (limited, timeline.get("prev_batch").and_then(Value::as_str)) {
            (true, Some(prev)) => Some(Gap {
                room_id: room_id.to_owned(),
                from: prev.to_owned(),
                to: since.map(str::to_owned),
            }),
            _ => None,
        };
        Ok(SyncBatch {
            next_batch,
            events,
            gap,
        })
    }

    /// Reads one page of a gap backwards through `/messages`.
    pub async fn backfill(&self, gap: &Gap) -> Result<BackfillPage, HomeserverError> {
        let filter = json!({ "types": [BUNDLE_EVENT_TYPE], "lazy_load_members": true });
        let mut query = vec![
            ("dir", "b".to_owned()),
            ("from", gap.from.clone()),
            ("limit", MESSAGES_PAGE_LIMIT.to_string()),
            ("filter", filter.to_string()),
        ];
        if let Some(to) = &gap.to {
            query.push(("to", to.clone()));
        }
        let v = self
            .call(
                Method::GET,
                &["rooms", &gap.room_id, "messages"],
                &query,
                None,
            )
            .await?;
        let mut events = parse_events(v.get("chunk"));
        events.reverse();
        let end = v.get("end").and_then(Value::as_str);
        // A filtered page may be empty while history continues, so only a
        // missing or unchanged `end` ends the gap.
        let rest = match end {
            Some(end) if end != gap.from => Some(Gap {
                room_id: gap.room_id.clone(),
                from: end.to_owned(),
                to: gap.to.clone(),
            }),
            _ => None,
        };
        Ok(BackfillPage { events, rest })
    }

    /// `/sync` and, if it was limited, backfill of the whole gap (at most
    /// `max_pages` pages; `gap` in the result is what is left). Events come
    /// oldest first. The caller persists `next_batch` only after storing
    /// everything, and persists a remaining gap if there is one.
    pub async fn sync_filling_gaps(
        &self,
        room_id: &str,
        since: Option<&str>,
        timeout: Duration,
        max_pages: usize,
    ) -> Result<SyncBatch, HomeserverError> {
        let mut batch = self.sync(room_id, since, timeout).await?;
        let mut older: Vec<Vec<RoomEvent>> = Vec::new();
        let mut pages = 0;
        while let Some(gap) = batch.gap.take() {
            if pages >= max_pages {
                batch.gap = Some(gap);
                break;
            }
            let page = self.backfill(&gap).await?;
            pages += 1;
            older.push(page.events);
            batch.gap = page.rest;
        }
        let mut events: Vec<RoomEvent> = older.into_iter().rev().flatten().collect();
        // Backfill may overlap the timeline; keep the first copy.
        let mut seen = std::collections::BTreeSet::new();
        events.append(&mut batch.events);
        events.retain(|e| seen.insert(e.event_id.clone()));
        batch.events = events;
        Ok(batch)
    }
}

fn str_field(v: &Value, key: &str) -> Result<String, HomeserverError> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| HomeserverError::BadResponse(format!("missing string field {key:?}")))
}

/// Parses a JSON array of client events, skipping entries without the
/// fields we need (the server is untrusted; malformed entries are ignored).
fn parse_events(v: Option<&Value>) -> Vec<RoomEvent> {
    v.and_then(Value::as_array)
        .map(|arr| {
            arr.iter()
                .filter_map(|e| {
                    Some(RoomEvent {
                        event_id: e.get("event_id")?.as_str()?.to_owned(),
                        event_type: e.get("type")?.as_str()?.to_owned(),
                        sender: e.get("sender")?.as_str()?.to_owned(),
                        content: e.get("content")?.clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `host` (as [`Url::host_str`] gives it) is a loopback host:
/// `localhost`, an address in 127.0.0.0/8, or `::1`. Only these may be
/// reached over plain `http://` (`protocol-spec/homeserver.md`).
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_is_redacted() {
        let t = AccessToken::new("syt_secret");
        assert_eq!(format!("{t:?}"), "AccessToken(<redacted>)");
        assert_eq!(t.expose(), "syt_secret");
    }

    #[test]
    fn urls_percent_encode_room_ids() {
        let c = Client::new(
            "http://127.0.0.1:8008/",
            RetryPolicy::default(),
            Box::new(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1)),
        )
        .expect("client");
        let u = c.url(&["_matrix", "client", "v3", "rooms", "!ab/c:x", "send"]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8008/_matrix/client/v3/rooms/!ab%2Fc:x/send"
        );
        assert!(
            Client::new(
                "ftp://x",
                RetryPolicy::default(),
                Box::new(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1))
            )
            .is_err()
        );
    }
}
