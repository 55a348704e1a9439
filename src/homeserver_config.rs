//! The homeserver configuration file, `homeserver.toml` in the data
//! directory (`protocol-spec/homeserver.md`, "Configuration").
//!
//! ```toml
//! url = "https://matrix.example.org"
//! user_id = "@gateway:example.org"
//! device_id = "ABCDEFGHIJ"          # secret
//! access_token = "syt_..."          # secret
//! transport_room = "!opaque-room-id"
//! ```
//!
//! The access token and the device ID are secrets: the file is created
//! with mode 0600 and replaced atomically ([`DataDir::write_atomic`]); in
//! memory they are [`Secret`]s, redacted in `Debug` and zeroized on drop.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::datadir::{DataDir, DataDirError};
use crate::transport::homeserver::AccessToken;

pub use crate::datadir::HOMESERVER_CONFIG_FILE;

/// Largest configuration file read back, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// A secret string: redacted in `Debug`, zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Zeroizing::new(s.into()))
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Secret(Zeroizing::new(s)))
    }
}

/// The homeserver account and transport room of this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Base URL of the homeserver.
    pub url: String,
    /// Matrix user ID of the gateway account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Device the access token belongs to (transaction IDs are remembered
    /// per user and device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<Secret>,
    /// The access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
    /// The transport room's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_room: Option<String>,
}

/// Why the configuration could not be read or written.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The file is not valid TOML of the expected shape.
    #[error("{file} is invalid: {0}", file = HOMESERVER_CONFIG_FILE)]
    Parse(String),
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("{HOMESERVER_CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge,
    /// No homeserver is configured.
    #[error(
        "no homeserver configured: run `meshrelay homeserver login URL USER --password-stdin` or `meshrelay homeserver set-token URL TOKEN`"
    )]
    NotConfigured,
    /// Logged in, but no transport room yet.
    #[error(
        "no transport room: run `meshrelay homeserver transport MATRIX_ROOM_ID` or `meshrelay homeserver transport --create`"
    )]
    NoTransportRoom,
}

impl HomeserverConfig {
    /// Reads the configuration of `dir`, or `None` if there is none.
    pub fn load(dir: &DataDir) -> Result<Option<Self>, ConfigError> {
        let Some(bytes) = dir.read_optional(HOMESERVER_CONFIG_FILE)? else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(bytes);
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge);
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| ConfigError::Parse(e.to_string()))?;
        toml::from_str(text)
            .map(Some)
            .map_err(|e| ConfigError::Parse(e.message().to_owned()))
    }

    /// Reads the configuration, failing if there is none.
    pub fn require(dir: &DataDir) -> Result<Self, ConfigError> {
        Self::load(dir)?.ok_or(ConfigError::NotConfigured)
    }

    /// Writes the configuration atomically with mode 0600.
    pub fn save(&self, dir: &DataDir) -> Result<(), ConfigError> {
        dir.create()?;
        let text =
            Zeroizing::new(toml::to_string(self).map_err(|e| ConfigError::Parse(e.to_string()))?);
        dir.write_atomic(HOMESERVER_CONFIG_FILE, text.as_bytes())?;
        Ok(())
    }

    /// The access token, if logged in.
    pub fn token(&self) -> Option<AccessToken> {
        self.access_token
            .as_ref()
            .map(|t| AccessToken::new(t.expose()))
    }

    /// The transport room, or the error telling the user how to set it.
    pub fn room(&self) -> Result<&str, ConfigError> {
        self.transport_room
            .as_deref()
            .ok_or(ConfigError::NoTransportRoom)
    }
}

/// One line on the homeserver state, for `meshrelay status`: `off` without
/// a configuration, else the account, server and transport room.
pub fn status_summary(dir: &std::path::Path) -> String {
    match HomeserverConfig::load(&DataDir::new(dir)) {
        Ok(None) => "off".into(),
        Ok(Some(cfg)) => match (
            &cfg.user_id,
            &cfg.transport_room,
            cfg.access_token.is_some(),
        ) {
            (Some(u), Some(r), true) => format!("{u} on {} (transport room {r})", cfg.url),
            (Some(u), None, true) => format!("{u} on {} (no transport room)", cfg.url),
            _ => format!("{} (not logged in)", cfg.url),
        },
        Err(e) => format!("configuration error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_mode_and_redaction() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = DataDir::new(tmp.path().join("d"));
        assert_eq!(HomeserverConfig::load(&dir).expect("load"), None);
        let cfg = HomeserverConfig {
            url: "http://127.0.0.1:8008".into(),
            user_id: Some("@a:localhost".into()),
            device_id: Some(Secret::new("DEVICEX")),
            access_token: Some(Secret::new("syt_topsecret")),
            transport_room: Some("!room".into()),
        };
        cfg.save(&dir).expect("save");
        let path = dir.path(HOMESERVER_CONFIG_FILE);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = HomeserverConfig::load(&dir).expect("load").expect("some");
        assert_eq!(back, cfg);
        let dbg = format!("{back:?}");
        assert!(
            !dbg.contains("syt_topsecret") && !dbg.contains("DEVICEX"),
            "{dbg}"
        );
        assert_eq!(back.room().expect("room"), "!room");
        std::fs::write(&path, "url = 3\n").expect("write");
        assert!(matches!(
            HomeserverConfig::load(&dir),
            Err(ConfigError::Parse(_))
        ));
    }
}
