//! Pairing and sessions of a web app served on a non-loopback address
//! (`protocol-spec/web.md`, "Pairing").
//!
//! A browser pairs by opening a one-time pairing URL
//! (`http://ADDR/pair?t=TOKEN`, 128-bit token, valid for
//! [`PAIRING_TTL_MS`]) and gets a session cookie ([`COOKIE`]: `ID.SECRET`,
//! `HttpOnly`, `SameSite=Strict`). Both live in files of the data directory
//! (mode 0600, written atomically), so the CLI (`meshrelay web pair`,
//! `web sessions`, `web revoke ID`) and the daemon's app share them without
//! a daemon operation, and sessions survive restarts:
//!
//! - [`PAIRING_FILE`]: the current pairing URL, the SHA-256 of its token and
//!   its expiry; redeeming it deletes it (one use);
//! - [`SESSIONS_FILE`]: each session's ID, the SHA-256 of its secret, when it
//!   was made and the browser's `User-Agent` (bounded, for people to tell
//!   sessions apart); at most [`MAX_WEB_SESSIONS`], the oldest dropped.
//!
//! Neither the token nor a secret is ever logged.

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use rand_core::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::datadir::{DataDir, DataDirError};

/// The sessions file in the data directory.
pub const SESSIONS_FILE: &str = "web-sessions.json";
/// The pairing file in the data directory.
pub const PAIRING_FILE: &str = "web-pairing.json";
/// Most sessions kept; pairing another drops the oldest.
pub const MAX_WEB_SESSIONS: usize = 32;
/// How long a pairing URL is valid.
pub const PAIRING_TTL_MS: u64 = 10 * 60 * 1000;
/// The session cookie's name.
pub const COOKIE: &str = "mr_session";
/// Longest `User-Agent` kept with a session (characters).
pub const MAX_AGENT_CHARS: usize = 120;

/// Errors of the pairing and session files.
#[derive(Debug, Error)]
pub enum AccessError {
    /// A file could not be read or written.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// A file is not what this version writes.
    #[error("{file}: not a valid file of this version: {reason}")]
    Corrupt {
        /// The file.
        file: &'static str,
        /// Why.
        reason: String,
    },
}

/// One browser session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its ID (16 hex digits), as `web sessions` lists it.
    pub id: String,
    /// SHA-256 of its secret, hex.
    secret_sha256: String,
    /// When it was made (Unix ms).
    pub created_ms: u64,
    /// The browser's `User-Agent`, bounded.
    pub agent: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pairing {
    /// Where the app is reached (`http://HOST:PORT`).
    base: String,
    /// The current pairing URL and the SHA-256 of its token; `None` once
    /// redeemed.
    url: Option<String>,
    token_sha256: Option<String>,
    expires_ms: u64,
}

fn sha256_hex(s: &str) -> String {
    HEXLOWER.encode(&Sha256::digest(s.as_bytes()))
}

fn read_json<T: for<'de> Deserialize<'de>>(
    dir: &DataDir,
    file: &'static str,
) -> Result<Option<T>, AccessError> {
    match dir.read_optional(file)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AccessError::Corrupt {
                file,
                reason: e.to_string(),
            }),
    }
}

fn write_json<T: Serialize>(dir: &DataDir, file: &str, v: &T) -> Result<(), AccessError> {
    let bytes = serde_json::to_vec_pretty(v).map_err(|e| AccessError::Corrupt {
        file: "(encoding)",
        reason: e.to_string(),
    })?;
    Ok(dir.write_atomic(file, &bytes)?)
}

/// Makes a new one-time pairing URL under `base` (`http://HOST:PORT`),
/// replacing any earlier one; returns the URL.
pub fn new_pairing<R: Rng + CryptoRng>(
    dir: &DataDir,
    base: &str,
    now_ms: u64,
    rng: &mut R,
) -> Result<String, AccessError> {
    let mut token = [0u8; 16];
    rng.fill_bytes(&mut token);
    let token = BASE32_NOPAD.encode(&token);
    let url = format!("{base}/pair?t={token}");
    write_json(
        dir,
        PAIRING_FILE,
        &Pairing {
            base: base.to_owned(),
            url: Some(url.clone()),
            token_sha256: Some(sha256_hex(&token)),
            expires_ms: now_ms.saturating_add(PAIRING_TTL_MS),
        },
    )?;
    Ok(url)
}

/// Where the app was last served with pairing (`http://HOST:PORT`), for
/// `meshrelay web pair`.
pub fn pairing_base(dir: &DataDir) -> Result<Option<String>, AccessError> {
    Ok(read_json::<Pairing>(dir, PAIRING_FILE)?.map(|p| p.base))
}

/// The current pairing URL, if one is valid at `now_ms`.
pub fn current_pairing(dir: &DataDir, now_ms: u64) -> Result<Option<String>, AccessError> {
    Ok(read_json::<Pairing>(dir, PAIRING_FILE)?
        .filter(|p| p.expires_ms > now_ms)
        .and_then(|p| p.url))
}

/// Redeems a pairing token: when it is the current, unexpired one, the
/// pairing is used up and a new session made; returns the cookie value
/// (`ID.SECRET`).
pub fn redeem<R: Rng + CryptoRng>(
    dir: &DataDir,
    token: &str,
    agent: &str,
    now_ms: u64,
    rng: &mut R,
) -> Result<Option<String>, AccessError> {
    let Some(mut p) = read_json::<Pairing>(dir, PAIRING_FILE)? else {
        return Ok(None);
    };
    if p.expires_ms <= now_ms || p.token_sha256.as_deref() != Some(&sha256_hex(token)) {
        return Ok(None);
    }
    // Used up before the session exists: a crash in between loses the
    // pairing, never grants a second session.
    p.url = None;
    p.token_sha256 = None;
    write_json(dir, PAIRING_FILE, &p)?;
    let mut id = [0u8; 8];
    let mut secret = [0u8; 16];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = HEXLOWER.encode(&id);
    let secret = HEXLOWER.encode(&secret);
    let mut all = sessions(dir)?;
    all.push(Session {
        id: id.clone(),
        secret_sha256: sha256_hex(&secret),
        created_ms: now_ms,
        agent: agent
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_AGENT_CHARS)
            .collect(),
    });
    let excess = all.len().saturating_sub(MAX_WEB_SESSIONS);
    all.drain(..excess);
    write_json(dir, SESSIONS_FILE, &all)?;
    Ok(Some(format!("{id}.{secret}")))
}

/// Every session, oldest first.
pub fn sessions(dir: &DataDir) -> Result<Vec<Session>, AccessError> {
    Ok(read_json(dir, SESSIONS_FILE)?.unwrap_or_default())
}

/// Revokes session `id`; whether it existed.
pub fn revoke(dir: &DataDir, id: &str) -> Result<bool, AccessError> {
    let mut all = sessions(dir)?;
    let before = all.len();
    all.retain(|s| s.id != id);
    if all.len() == before {
        return Ok(false);
    }
    write_json(dir, SESSIONS_FILE, &all)?;
    Ok(true)
}

/// Whether a cookie value (`ID.SECRET`) names a live session.
pub fn admits(dir: &DataDir, cookie: &str) -> bool {
    let Some((id, secret)) = cookie.split_once('.') else {
        return false;
    };
    let Ok(all) = sessions(dir) else {
        return false;
    };
    let hash = sha256_hex(secret);
    all.iter().any(|s| s.id == id && s.secret_sha256 == hash)
}

/// The value of cookie [`COOKIE`] in a `Cookie` header.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pairing_makes_one_session_once_and_revocation_ends_it() {
        let t = tempfile::tempdir().unwrap();
        let dir = DataDir::new(t.path());
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let url = new_pairing(&dir, "http://10.0.0.5:8642", 1_000, &mut rng).unwrap();
        let token = url.split_once("?t=").unwrap().1.to_owned();
        assert_eq!(current_pairing(&dir, 2_000).unwrap(), Some(url.clone()));
        assert_eq!(redeem(&dir, "wrong", "x", 2_000, &mut rng).unwrap(), None);
        let cookie = redeem(&dir, &token, "Phone\u{1b}[31m", 2_000, &mut rng)
            .unwrap()
            .expect("session");
        assert!(admits(&dir, &cookie));
        assert!(!admits(&dir, "0000.0000"));
        // One use.
        assert_eq!(redeem(&dir, &token, "x", 2_000, &mut rng).unwrap(), None);
        let s = sessions(&dir).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].agent, "Phone[31m");
        let raw = std::fs::read_to_string(dir.path(SESSIONS_FILE)).unwrap();
        assert!(
            !raw.contains(cookie.split_once('.').unwrap().1),
            "secret stored"
        );
        assert!(revoke(&dir, &s[0].id).unwrap());
        assert!(!admits(&dir, &cookie));
        // Expiry.
        let url = new_pairing(&dir, "http://h:1", 1_000, &mut rng).unwrap();
        let token = url.split_once("?t=").unwrap().1.to_owned();
        assert_eq!(current_pairing(&dir, 1_000 + PAIRING_TTL_MS).unwrap(), None);
        assert_eq!(
            redeem(&dir, &token, "x", 1_000 + PAIRING_TTL_MS, &mut rng).unwrap(),
            None
        );
        assert_eq!(cookie_value("a=1; mr_session=ab.cd; b=2"), Some("ab.cd"));
    }

    use rand::SeedableRng;
}
