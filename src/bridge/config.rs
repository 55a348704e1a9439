//! The bridge's registration (`protocol-spec/bridge.md`, "Registration"):
//! the application-service tokens and namespaces, kept in the data
//! directory (`bridge.json`, mode 0600) and printed as the YAML file the
//! homeserver loads.

use std::net::SocketAddr;

use rand::SeedableRng as _;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use super::BridgeError;
use crate::datadir::DataDir;
use crate::homeserver_config::Secret;

/// The file in the data directory holding the registration.
pub const BRIDGE_FILE: &str = "bridge.json";
/// Where the application-service API listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8643";
/// Default prefix of puppets' user IDs and of room aliases.
pub const DEFAULT_PREFIX: &str = "meshrelay_";
/// Longest prefix, in bytes.
pub const MAX_PREFIX_BYTES: usize = 32;
/// Longest homeserver domain, in bytes.
pub const MAX_DOMAIN_BYTES: usize = 200;
/// Random bytes in each token (shown as hex).
pub const TOKEN_BYTES: usize = 32;
/// Hex digits of the mesh room ID in a bridged room's alias.
pub const ALIAS_ROOM_HEX: usize = 16;
/// Characters of a device ID (`mr1…`) in its puppet's user ID.
pub const PUPPET_DEVICE_CHARS: usize = 19;
/// The bridge account's localpart after the prefix.
pub const BOT_SUFFIX: &str = "bridge";

/// The registration of one bridge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The homeserver's client-server API base URL.
    pub homeserver: String,
    /// The homeserver's domain (the part after `:` in user IDs).
    pub domain: String,
    /// Where the application-service API listens.
    pub listen: SocketAddr,
    /// Prefix of puppets' localparts and of room alias localparts.
    pub prefix: String,
    /// The token the bridge presents to the homeserver.
    pub as_token: Secret,
    /// The token the homeserver presents to the bridge.
    pub hs_token: Secret,
}

fn token<R: CryptoRng + ?Sized>(rng: &mut R) -> Secret {
    let mut b = zeroize::Zeroizing::new([0u8; TOKEN_BYTES]);
    rng.fill_bytes(&mut b[..]);
    Secret::new(data_encoding::HEXLOWER.encode(&b[..]))
}

/// Whether `s` is usable in a Matrix localpart (the historical grammar
/// minus `/`, so it is safe in URL paths and regexes).
fn localpart_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-".contains(&b))
}

impl BridgeConfig {
    /// A new registration with fresh tokens.
    pub fn new<R: CryptoRng + ?Sized>(
        homeserver: &str,
        domain: &str,
        listen: SocketAddr,
        prefix: &str,
        rng: &mut R,
    ) -> Result<Self, BridgeError> {
        let bad = |m: String| Err(BridgeError::BadInput(m));
        if prefix.is_empty() || prefix.len() > MAX_PREFIX_BYTES || !localpart_chars(prefix) {
            return bad(format!(
                "--prefix {prefix:?}: 1 to {MAX_PREFIX_BYTES} characters of a-z, 0-9, '.', '_', '=', '-'"
            ));
        }
        let domain_ok = !domain.is_empty()
            && domain.len() <= MAX_DOMAIN_BYTES
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !domain_ok {
            return bad(format!("--domain {domain:?} is not a homeserver domain"));
        }
        // The same URL rules as the homeserver transport: https, or http
        // on loopback only.
        crate::transport::homeserver::Client::new(
            homeserver,
            crate::transport::homeserver::RetryPolicy::default(),
            Box::new(rand::rngs::StdRng::from_seed([0; 32])),
        )
        .map_err(|e| BridgeError::BadInput(format!("--homeserver: {e}")))?;
        Ok(BridgeConfig {
            homeserver: homeserver.trim_end_matches('/').to_owned(),
            domain: domain.to_owned(),
            listen,
            prefix: prefix.to_owned(),
            as_token: token(rng),
            hs_token: token(rng),
        })
    }

    /// The stored registration; [`BridgeError::NotRegistered`] when there
    /// is none.
    pub fn load(dir: &DataDir) -> Result<Self, BridgeError> {
        let bytes = dir
            .read_optional(BRIDGE_FILE)?
            .ok_or(BridgeError::NotRegistered)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| BridgeError::Corrupt(format!("{BRIDGE_FILE}: {e}")))
    }

    /// Stores the registration (mode 0600, atomically).
    pub fn save(&self, dir: &DataDir) -> Result<(), BridgeError> {
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(self)
                .map_err(|e| BridgeError::Corrupt(format!("{BRIDGE_FILE}: {e}")))?,
        );
        dir.write_atomic(BRIDGE_FILE, &json)?;
        Ok(())
    }

    /// The application-service registration the homeserver loads.
    pub fn registration_yaml(&self) -> String {
        // JSON strings are YAML double-quoted scalars.
        let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let esc = |s: &str| s.replace('.', "\\.");
        format!(
            "# meshrelay bridge: load this file in the homeserver's app_service_config_files\n\
             id: {id}\n\
             url: {url}\n\
             as_token: {as_token}\n\
             hs_token: {hs_token}\n\
             sender_localpart: {bot}\n\
             rate_limited: false\n\
             namespaces:\n  \
               users:\n    \
                 - exclusive: true\n      \
                   regex: {users}\n  \
               aliases:\n    \
                 - exclusive: true\n      \
                   regex: {aliases}\n  \
               rooms: []\n",
            id = q(&format!("{}meshrelay", self.prefix)),
            url = q(&format!("http://{}", self.listen)),
            as_token = q(self.as_token.expose()),
            hs_token = q(self.hs_token.expose()),
            bot = q(&format!("{}{BOT_SUFFIX}", self.prefix)),
            users = q(&format!("@{}.*:{}", esc(&self.prefix), esc(&self.domain))),
            aliases = q(&format!("#{}.*:{}", esc(&self.prefix), esc(&self.domain))),
        )
    }

    /// The bridge account's user ID.
    pub fn bot(&self) -> String {
        format!("@{}{BOT_SUFFIX}:{}", self.prefix, self.domain)
    }

    /// The puppet user ID of a mesh device (`mr1…`).
    pub fn puppet(&self, device_id: &str) -> String {
        let short: String = device_id.chars().take(PUPPET_DEVICE_CHARS).collect();
        format!(
            "@{}{}:{}",
            self.prefix,
            short.to_ascii_lowercase(),
            self.domain
        )
    }

    /// The alias of a mesh room's Matrix room (room ID in hex).
    pub fn alias(&self, room_hex: &str) -> String {
        format!("#{}:{}", self.alias_localpart(room_hex), self.domain)
    }

    /// The alias's localpart (`createRoom`'s `room_alias_name`).
    pub fn alias_localpart(&self, room_hex: &str) -> String {
        let short: String = room_hex.chars().take(ALIAS_ROOM_HEX).collect();
        format!("{}{short}", self.prefix)
    }

    /// Whether a user ID belongs to the bridge (a puppet or the bot): its
    /// messages are never sent to the mesh.
    pub fn is_ours(&self, user_id: &str) -> bool {
        user_id
            .strip_prefix('@')
            .and_then(|u| u.strip_prefix(self.prefix.as_str()))
            .and_then(|u| u.rsplit_once(':'))
            .is_some_and(|(_, d)| d == self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cfg() -> BridgeConfig {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        BridgeConfig::new(
            "http://127.0.0.1:8008",
            "hq.example.org",
            DEFAULT_LISTEN.parse().unwrap(),
            DEFAULT_PREFIX,
            &mut rng,
        )
        .unwrap()
    }

    #[test]
    fn registration_names_the_namespaces_and_fresh_tokens() {
        let c = cfg();
        let y = c.registration_yaml();
        assert!(
            y.contains(r#"regex: "@meshrelay_.*:hq\\.example\\.org""#),
            "{y}"
        );
        assert!(
            y.contains(r##"regex: "#meshrelay_.*:hq\\.example\\.org""##),
            "{y}"
        );
        assert!(y.contains("rate_limited: false"));
        assert!(y.contains(c.as_token.expose()) && y.contains(c.hs_token.expose()));
        assert_ne!(c.as_token, c.hs_token);
        assert_eq!(c.as_token.expose().len(), 2 * TOKEN_BYTES);
        assert!(
            !format!("{c:?}").contains(c.as_token.expose()),
            "tokens redacted"
        );
    }

    #[test]
    fn names_puppets_aliases_and_recognises_its_own_users() {
        let c = cfg();
        assert_eq!(c.bot(), "@meshrelay_bridge:hq.example.org");
        let p = c.puppet("mr1abcdefghijklmnopqrstuvwxyz");
        assert_eq!(p, "@meshrelay_mr1abcdefghijklmnop:hq.example.org");
        assert!(c.is_ours(&p) && c.is_ours(&c.bot()));
        assert!(!c.is_ours("@alice:hq.example.org"));
        assert!(!c.is_ours("@meshrelay_x:evil.example.org"));
        assert_eq!(
            c.alias("00112233445566778899aabbccddeeff"),
            "#meshrelay_0011223344556677:hq.example.org"
        );
    }

    #[test]
    fn refuses_bad_prefixes_domains_and_plain_http_off_loopback() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let l = DEFAULT_LISTEN.parse().unwrap();
        for (hs, domain, prefix) in [
            ("http://127.0.0.1:8008", "hq", "Upper_"),
            ("http://127.0.0.1:8008", "hq", "a/b"),
            ("http://127.0.0.1:8008", "hq", ""),
            ("http://127.0.0.1:8008", "bad domain", "m_"),
            ("http://matrix.example.org", "hq", "m_"),
        ] {
            assert!(matches!(
                BridgeConfig::new(hs, domain, l, prefix, &mut rng),
                Err(BridgeError::BadInput(_))
            ));
        }
    }
}
