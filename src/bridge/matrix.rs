//! What the bridge asks of the homeserver, as its application service
//! (`protocol-spec/bridge.md`, "Matrix side"): the bridge account and its
//! puppets act through the application-service token, a puppet chosen by
//! the `user_id` query parameter, a message's time by `ts`.

use reqwest::Method;
use serde_json::{Value, json};

use super::config::BridgeConfig;
use crate::room::content::Location;
use crate::transport::homeserver::{AccessToken, Client, HomeserverError, RetryPolicy};

/// The content field carrying the mesh event ID of a bridged message.
pub const MESH_EVENT_FIELD: &str = "org.meshrelay.event_id";
/// Largest message body posted to Matrix, in bytes; longer text is cut at
/// a character boundary and ends with [`TRUNCATED_MARKER`].
pub const MAX_MATRIX_BODY_BYTES: usize = 32 * 1024;
/// What ends a cut message.
pub const TRUNCATED_MARKER: &str = " [… truncated by the meshrelay bridge]";
/// Most events read back per room when checking, after a crash, whether a
/// send reached the room.
pub const MAX_DOUBT_SCAN_EVENTS: usize = 2000;

/// The homeserver as the bridge sees it.
#[derive(Debug)]
pub struct Matrix {
    client: Client,
    /// The bridge account.
    pub bot: String,
}

/// Bytes a character takes in a JSON string (control characters, quotes
/// and backslashes are escaped).
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// `text`, cut so that it takes at most `max` bytes as a JSON string
/// (escapes counted: a homeserver limits the encoded event), ending with
/// [`TRUNCATED_MARKER`] when cut.
pub fn truncate_with_marker(text: &str, max: usize) -> String {
    if text.chars().map(json_len).sum::<usize>() <= max {
        return text.to_owned();
    }
    let budget = max.saturating_sub(TRUNCATED_MARKER.len());
    let mut used = 0;
    let mut out = String::new();
    for c in text.chars() {
        used += json_len(c);
        if used > budget {
            break;
        }
        out.push(c);
    }
    out.push_str(TRUNCATED_MARKER);
    out
}

/// Whether the homeserver refused a request for what it holds (too large,
/// malformed, forbidden), so sending it again cannot succeed.
pub fn is_permanent(e: &HomeserverError) -> bool {
    match e {
        HomeserverError::TooLarge { .. } => true,
        HomeserverError::Matrix { status, .. } => (400..500).contains(status) && *status != 429,
        _ => false,
    }
}

fn is_errcode(e: &HomeserverError, code: &str) -> bool {
    match e {
        HomeserverError::Matrix { errcode, .. } | HomeserverError::Forbidden { errcode, .. } => {
            errcode == code
        }
        _ => false,
    }
}

fn as_user(user: &str) -> Vec<(&'static str, String)> {
    vec![("user_id", user.to_owned())]
}

impl Matrix {
    /// A client of the configured homeserver with the bridge's token.
    pub fn new(cfg: &BridgeConfig) -> Result<Self, HomeserverError> {
        let rng = rand::make_rng::<rand::rngs::StdRng>();
        let client = Client::new(&cfg.homeserver, RetryPolicy::default(), Box::new(rng))?
            .with_token(AccessToken::new(cfg.as_token.expose()));
        Ok(Matrix {
            client,
            bot: cfg.bot(),
        })
    }

    /// Makes a puppet account (an existing one is fine).
    pub async fn register(&self, localpart: &str) -> Result<(), HomeserverError> {
        let body = json!({"type": "m.login.application_service", "username": localpart});
        match self
            .client
            .call(Method::POST, &["register"], &[], Some(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_errcode(&e, "M_USER_IN_USE") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets a puppet's display name.
    pub async fn set_display_name(&self, user: &str, name: &str) -> Result<(), HomeserverError> {
        self.client
            .call(
                Method::PUT,
                &["profile", user, "displayname"],
                &as_user(user),
                Some(&json!({ "displayname": name })),
            )
            .await
            .map(drop)
    }

    /// Creates a private, invite-only room with an alias, or finds the
    /// room that already has the alias (a bridge whose state was lost).
    pub async fn create_room(
        &self,
        alias_localpart: &str,
        alias: &str,
        name: &str,
        topic: &str,
    ) -> Result<String, HomeserverError> {
        let body = json!({
            "preset": "private_chat",
            "visibility": "private",
            "room_alias_name": alias_localpart,
            "name": name,
            "topic": topic,
        });
        match self
            .client
            .call(Method::POST, &["createRoom"], &[], Some(&body))
            .await
        {
            Ok(v) => str_field(&v, "room_id"),
            Err(e) if is_errcode(&e, "M_ROOM_IN_USE") => {
                let v = self
                    .client
                    .call(Method::GET, &["directory", "room", alias], &[], None)
                    .await?;
                let room = str_field(&v, "room_id")?;
                self.join(&room, &self.bot.clone()).await?;
                Ok(room)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets a room's name.
    pub async fn set_name(&self, room: &str, name: &str) -> Result<(), HomeserverError> {
        self.client
            .call(
                Method::PUT,
                &["rooms", room, "state", "m.room.name", ""],
                &[],
                Some(&json!({ "name": name })),
            )
            .await
            .map(drop)
    }

    /// The bridge account invites a user (one already in the room, or
    /// already invited, is fine).
    pub async fn invite(&self, room: &str, user: &str) -> Result<(), HomeserverError> {
        match self
            .client
            .call(
                Method::POST,
                &["rooms", room, "invite"],
                &[],
                Some(&json!({ "user_id": user })),
            )
            .await
        {
            Ok(_) => Ok(()),
            // "already in the room" / "already invited".
            Err(HomeserverError::Forbidden { message, .. })
                if message.contains("already") || message.contains("is in the room") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `user` (the bot or a puppet) joins a room.
    pub async fn join(&self, room: &str, user: &str) -> Result<(), HomeserverError> {
        self.client
            .call(
                Method::POST,
                &["join", room],
                &as_user(user),
                Some(&json!({})),
            )
            .await
            .map(drop)
    }

    /// A puppet leaves a room.
    pub async fn leave(&self, room: &str, user: &str) -> Result<(), HomeserverError> {
        self.client
            .call(
                Method::POST,
                &["rooms", room, "leave"],
                &as_user(user),
                Some(&json!({})),
            )
            .await
            .map(drop)
    }

    /// Posts a mesh message as its sender's puppet at its original time;
    /// returns the Matrix event ID. The transaction ID is the mesh event
    /// ID, so a retry by the same puppet is answered with the same event.
    pub async fn post(
        &self,
        room: &str,
        puppet: &str,
        mesh_event: &str,
        ts_ms: u64,
        text: &str,
        location: Option<&Location>,
    ) -> Result<String, HomeserverError> {
        let body = truncate_with_marker(text, MAX_MATRIX_BODY_BYTES);
        let content = match location {
            // A pin: Matrix's own location message, its text in the body.
            Some(at) => {
                let mut geo = format!("geo:{},{}", at.lat_e7 as f64 / 1e7, at.lon_e7 as f64 / 1e7);
                if at.accuracy_m > 0 {
                    geo.push_str(&format!(";u={}", at.accuracy_m));
                }
                let body = if body.is_empty() {
                    format!("Location: {}", at.degrees())
                } else {
                    format!("{body} (location: {})", at.degrees())
                };
                json!({
                    "msgtype": "m.location",
                    "body": body,
                    "geo_uri": geo,
                    MESH_EVENT_FIELD: mesh_event,
                })
            }
            None => json!({
                "msgtype": "m.text",
                "body": body,
                MESH_EVENT_FIELD: mesh_event,
            }),
        };
        let query = vec![("user_id", puppet.to_owned()), ("ts", ts_ms.to_string())];
        let v = self
            .client
            .call(
                Method::PUT,
                &["rooms", room, "send", "m.room.message", mesh_event],
                &query,
                Some(&content),
            )
            .await?;
        str_field(&v, "event_id")
    }

    /// After a crash: the Matrix event that carries `mesh_event`, if the
    /// room's latest [`MAX_DOUBT_SCAN_EVENTS`] events hold one.
    pub async fn find_posted(
        &self,
        room: &str,
        mesh_event: &str,
    ) -> Result<Option<String>, HomeserverError> {
        let mut from: Option<String> = None;
        let mut seen = 0;
        while seen < MAX_DOUBT_SCAN_EVENTS {
            let mut q = vec![("dir", "b".to_owned()), ("limit", "100".to_owned())];
            if let Some(f) = &from {
                q.push(("from", f.clone()));
            }
            let v = self
                .client
                .call(Method::GET, &["rooms", room, "messages"], &q, None)
                .await?;
            let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
            for e in &chunk {
                if e["content"][MESH_EVENT_FIELD].as_str() == Some(mesh_event) {
                    return Ok(e["event_id"].as_str().map(str::to_owned));
                }
            }
            seen += chunk.len();
            match v["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        Ok(None)
    }

    /// A room member's display name (empty when unknown).
    pub async fn member_name(&self, room: &str, user: &str) -> String {
        self.client
            .call(
                Method::GET,
                &["rooms", room, "state", "m.room.member", user],
                &[],
                None,
            )
            .await
            .ok()
            .and_then(|v| v["displayname"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

fn str_field(v: &Value, field: &str) -> Result<String, HomeserverError> {
    v[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| HomeserverError::BadResponse(format!("no {field} in the response")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_with_the_marker() {
        assert_eq!(truncate_with_marker("short", 100), "short");
        let long = "é".repeat(100);
        let cut = truncate_with_marker(&long, 60);
        assert!(cut.len() <= 60 && cut.ends_with(TRUNCATED_MARKER), "{cut}");
        // Control characters count as their JSON escapes.
        let ctl = "\u{1}".repeat(1000);
        let cut = truncate_with_marker(&ctl, 600);
        assert!(
            serde_json::to_string(&cut).unwrap().len() <= 602,
            "{}",
            cut.len()
        );
    }
}
