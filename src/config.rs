//! The run configuration: `meshrelay run`'s flags, its TOML file
//! (`--config FILE`, else `meshrelay.toml` in the data directory) and the
//! power profiles (`protocol-spec/daemon.md`, "Configuration file" and
//! "Power profiles").
//!
//! Every `run` flag has a key of the same name (`--link-budget-kib N` is
//! `link-budget-kib = N`). Precedence, lowest first: built-in defaults, the
//! profile's presets, the file's keys, the command-line flags. The file is
//! flat (no tables); an unknown key or a bad value is an error that names
//! the file, the line and the key. `packaging/meshrelay.toml` documents
//! every key, and a test parses it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use libp2p::Multiaddr;
use thiserror::Error;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::daemon::DaemonOptions;
use crate::proto::NodeConfig;
use crate::transport::ble::BleConfig;
use crate::transport::lan::LanConfig;
use crate::wire::MAX_COPY_BUDGET;

/// The configuration file read when `--config` is not given and it exists
/// in the data directory.
pub const CONFIG_FILE_NAME: &str = "meshrelay.toml";

/// Largest configuration file read (a documented example is ~5 KiB).
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// Smallest `link-budget-kib`.
pub const MIN_LINK_BUDGET_KIB: u64 = 16;
/// Largest `link-budget-kib` (1 GiB/s).
pub const MAX_LINK_BUDGET_KIB: u64 = 1_048_576;

/// Seconds of burst the intake budget allows (`--link-budget-kib`).
pub const LINK_BURST_SECONDS: u64 = 8;

/// `battery` profile: anti-entropy rerun interval per link.
pub const BATTERY_ANTI_ENTROPY_MS: u64 = 300_000;
/// `battery` profile: intake budget per link, KiB/s.
pub const BATTERY_LINK_BUDGET_KIB: u64 = 128;
/// `battery` profile: BLE scan window per interval.
pub const BATTERY_SCAN_WINDOW_MS: u64 = 1_000;
/// `battery` profile: BLE scan interval (1 s in 30 s: a 3.3 % duty cycle).
pub const BATTERY_SCAN_INTERVAL_MS: u64 = 30_000;
/// `battery` profile: most BLE links at once.
pub const BATTERY_MAX_BLE_LINKS: usize = 3;

/// Every key the file accepts, in the order the example documents them.
pub const KEYS: [&str; 13] = [
    "listen",
    "peer",
    "no-mdns",
    "no-ble",
    "ble-adapter",
    "link-budget-kib",
    "copy-budget",
    "homeserver-sync",
    "profile",
    "log-format",
    "metrics",
    "web",
    "bridge",
];

/// How the daemon writes its log to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when standard error is a
    /// terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Presets for the radio and the protocol timers
/// (`protocol-spec/daemon.md`, "Power profiles").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Mains or a large battery: the defaults (BLE scanning 20 % of the
    /// time, anti-entropy every minute, 512 KiB/s per link).
    #[default]
    Relay,
    /// Weeks on a small battery or solar: BLE scanning 3.3 % of the time,
    /// anti-entropy every five minutes, 128 KiB/s and 3 BLE links.
    Battery,
}

impl Profile {
    /// Applies the preset to the node and BLE tunables.
    pub fn apply(self, node: &mut NodeConfig, ble: &mut BleConfig) {
        match self {
            Profile::Relay => {}
            Profile::Battery => {
                node.anti_entropy_interval_ms = BATTERY_ANTI_ENTROPY_MS;
                set_link_budget(node, BATTERY_LINK_BUDGET_KIB);
                ble.policy.scan_window_ms = BATTERY_SCAN_WINDOW_MS;
                ble.policy.scan_interval_ms = BATTERY_SCAN_INTERVAL_MS;
                ble.policy.max_links = BATTERY_MAX_BLE_LINKS;
            }
        }
    }
}

fn set_link_budget(node: &mut NodeConfig, kib: u64) {
    node.link_bytes_per_s = kib * 1024;
    node.link_burst_bytes = node.link_bytes_per_s * LINK_BURST_SECONDS;
}

/// `meshrelay run`'s flags. Each has a key of the same name in the
/// configuration file; a flag given on the command line wins.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunFlags {
    /// Configuration file (TOML; default: meshrelay.toml in the data
    /// directory, when present). Flags override its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address (repeatable). Default: every interface, random TCP and QUIC ports.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// Static peer (repeatable), redialled with backoff; no /p2p/ suffix needed.
    #[arg(long, value_name = "MULTIADDR")]
    pub peer: Vec<String>,
    /// Do not discover peers with mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Intake budget per link, KiB per second (default 512: suits phones
    /// and small boards; a wired LAN relay may raise it).
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u64).range(MIN_LINK_BUDGET_KIB..=MAX_LINK_BUDGET_KIB))]
    pub link_budget_kib: Option<u64>,
    /// Copies of each carried event handed to devices outside its room
    /// (binary spray; default 18; 0: no budget, every carrier hands every
    /// event to every peer).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=MAX_COPY_BUDGET as i64))]
    pub copy_budget: Option<u8>,
    /// Do not use Bluetooth LE.
    #[arg(long)]
    pub no_ble: bool,
    /// The Bluetooth controller to use (default: the first one).
    #[arg(long, value_name = "hciN")]
    pub ble_adapter: Option<String>,
    /// Sync the store with the configured Matrix homeserver continuously
    /// (see `meshrelay homeserver login` and `homeserver transport`).
    #[arg(long)]
    pub homeserver_sync: bool,
    /// Power profile: radio duty cycle, anti-entropy period and link
    /// budget presets (default: relay).
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub profile: Option<Profile>,
    /// Log format on standard error (default: text, without colours
    /// unless standard error is a terminal).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics on http://ADDR/metrics (default: off).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Serve the web app on http://ADDR/ (default: off; a loopback address
    /// such as 127.0.0.1:8642)
    #[arg(long, value_name = "ADDR")]
    pub web: Option<SocketAddr>,
    /// Run the Matrix bridge of this data directory (see `meshrelay bridge
    /// registration`): its application-service API and its loop.
    #[arg(long)]
    pub bridge: bool,
}

/// `meshrelay config`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file without starting the daemon.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// The keys a configuration file set (`None`: not set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// `listen`.
    pub listen: Option<Vec<Multiaddr>>,
    /// `peer`.
    pub peer: Option<Vec<Multiaddr>>,
    /// `no-mdns`.
    pub no_mdns: Option<bool>,
    /// `no-ble`.
    pub no_ble: Option<bool>,
    /// `ble-adapter`.
    pub ble_adapter: Option<String>,
    /// `link-budget-kib`.
    pub link_budget_kib: Option<u64>,
    /// `copy-budget`.
    pub copy_budget: Option<u8>,
    /// `homeserver-sync`.
    pub homeserver_sync: Option<bool>,
    /// `profile`.
    pub profile: Option<Profile>,
    /// `log-format`.
    pub log_format: Option<LogFormat>,
    /// `metrics`.
    pub metrics: Option<SocketAddr>,
    /// `web`.
    pub web: Option<SocketAddr>,
    /// `bridge`.
    pub bridge: Option<bool>,
}

/// What `meshrelay run` runs with, flags and file merged.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The daemon's options.
    pub options: DaemonOptions,
    /// The log format.
    pub log_format: LogFormat,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    /// Where the web app is served (`--web`; a client of the daemon, not
    /// one of its options).
    pub web: Option<SocketAddr>,
    /// Whether the Matrix bridge runs (`--bridge`; a client of the daemon
    /// too).
    pub bridge: bool,
}

/// Why a configuration could not be used (exit code 2).
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("{}: larger than {MAX_CONFIG_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}: not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A key this version does not know.
    #[error("{}:{line}: unknown key `{key}` (known keys: {})", path.display(), KEYS.join(", "))]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key.
        key: String,
    },
    /// A known key with a value of the wrong type or out of range.
    #[error("{}:{line}: key `{key}`: {message}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A command-line flag's value is unusable.
    #[error("{flag} {value}: {message}")]
    BadFlag {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(at)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse(path, &text)
}

/// Parses a configuration file's text (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let table = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e.message().trim().to_owned(),
    })?;
    let mut cfg = FileConfig::default();
    for (key, value) in table.get_ref() {
        let name: &str = key.get_ref();
        let line = line_of(text, key.span().start);
        let bad = |message: String| ConfigError::BadValue {
            path: path.to_owned(),
            line,
            key: name.to_owned(),
            message,
        };
        match name {
            "listen" => cfg.listen = Some(multiaddrs(value).map_err(bad)?),
            "peer" => cfg.peer = Some(multiaddrs(value).map_err(bad)?),
            "no-mdns" => cfg.no_mdns = Some(boolean(value).map_err(bad)?),
            "no-ble" => cfg.no_ble = Some(boolean(value).map_err(bad)?),
            "homeserver-sync" => cfg.homeserver_sync = Some(boolean(value).map_err(bad)?),
            "ble-adapter" => {
                let s = string(value).map_err(bad)?;
                if s.is_empty() || s.chars().any(char::is_control) {
                    return Err(bad("expected a controller name such as \"hci0\"".into()));
                }
                cfg.ble_adapter = Some(s.to_owned());
            }
            "link-budget-kib" => {
                let n = integer(value).map_err(bad)?;
                match u64::try_from(n) {
                    Ok(n) if (MIN_LINK_BUDGET_KIB..=MAX_LINK_BUDGET_KIB).contains(&n) => {
                        cfg.link_budget_kib = Some(n);
                    }
                    _ => {
                        return Err(bad(format!(
                            "{n} is not in {MIN_LINK_BUDGET_KIB}..={MAX_LINK_BUDGET_KIB}"
                        )));
                    }
                }
            }
            "copy-budget" => {
                let n = integer(value).map_err(bad)?;
                match u8::try_from(n) {
                    Ok(n) if n <= MAX_COPY_BUDGET => cfg.copy_budget = Some(n),
                    _ => return Err(bad(format!("{n} is not in 0..={MAX_COPY_BUDGET}"))),
                }
            }
            "profile" => cfg.profile = Some(choice::<Profile>(value).map_err(bad)?),
            "log-format" => cfg.log_format = Some(choice::<LogFormat>(value).map_err(bad)?),
            "metrics" => cfg.metrics = Some(address(value, "127.0.0.1:9464").map_err(bad)?),
            "web" => cfg.web = Some(address(value, "127.0.0.1:8642").map_err(bad)?),
            "bridge" => cfg.bridge = Some(boolean(value).map_err(bad)?),
            _ => {
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    line,
                    key: name.to_owned(),
                });
            }
        }
    }
    Ok(cfg)
}

fn string<'a>(v: &'a Spanned<DeValue<'_>>) -> Result<&'a str, String> {
    v.get_ref()
        .as_str()
        .ok_or_else(|| format!("expected a string, found {}", v.get_ref().type_str()))
}

/// An `"IP:PORT"` string (`example` names one in the error).
fn address(v: &Spanned<DeValue<'_>>, example: &str) -> Result<SocketAddr, String> {
    let s = string(v)?;
    s.parse()
        .map_err(|e| format!("{s:?} is not an address such as \"{example}\": {e}"))
}

fn boolean(v: &Spanned<DeValue<'_>>) -> Result<bool, String> {
    v.get_ref()
        .as_bool()
        .ok_or_else(|| format!("expected true or false, found {}", v.get_ref().type_str()))
}

fn integer(v: &Spanned<DeValue<'_>>) -> Result<i128, String> {
    let i = v
        .get_ref()
        .as_integer()
        .ok_or_else(|| format!("expected an integer, found {}", v.get_ref().type_str()))?;
    let digits: String = i.as_str().chars().filter(|&c| c != '_').collect();
    let digits = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0o"))
        .or_else(|| digits.strip_prefix("0b"))
        .unwrap_or(&digits);
    i128::from_str_radix(digits, i.radix()).map_err(|e| format!("bad integer: {e}"))
}

fn choice<T: ValueEnum>(v: &Spanned<DeValue<'_>>) -> Result<T, String> {
    let s = string(v)?;
    T::from_str(s, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|x| {
                x.to_possible_value()
                    .map(|p| format!("\"{}\"", p.get_name()))
            })
            .collect();
        format!("{s:?} is not one of {}", names.join(", "))
    })
}

fn multiaddrs(v: &Spanned<DeValue<'_>>) -> Result<Vec<Multiaddr>, String> {
    let arr = v.get_ref().as_array().ok_or_else(|| {
        format!(
            "expected an array of strings, found {}",
            v.get_ref().type_str()
        )
    })?;
    arr.iter()
        .map(|item| {
            let s = string(item)?;
            s.parse::<Multiaddr>()
                .map_err(|e| format!("{s}: not a multiaddr: {e}"))
        })
        .collect()
}

fn flag_multiaddrs(flag: &'static str, v: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    v.iter()
        .map(|a| {
            a.parse().map_err(|e| ConfigError::BadFlag {
                flag,
                value: a.clone(),
                message: format!("not a multiaddr: {e}"),
            })
        })
        .collect()
}

/// The file `run` reads: `--config`, else `meshrelay.toml` in the data
/// directory when it exists.
pub fn config_path(dir: &Path, flags: &RunFlags) -> Option<PathBuf> {
    match &flags.config {
        Some(p) => Some(p.clone()),
        None => {
            let p = dir.join(CONFIG_FILE_NAME);
            p.is_file().then_some(p)
        }
    }
}

/// Merges the defaults, the profile, the file and the flags.
pub fn resolve(dir: &Path, flags: &RunFlags) -> Result<RunPlan, ConfigError> {
    let path = config_path(dir, flags);
    let file = match &path {
        Some(p) => load(p)?,
        None => FileConfig::default(),
    };
    let web = flags.web.or(file.web);
    let bridge = flags.bridge || file.bridge.unwrap_or(false);
    merge(dir, &file, flags).map(|(options, log_format)| RunPlan {
        options,
        log_format,
        file: path,
        web,
        bridge,
    })
}

/// Applies `file` then `flags` over the defaults.
pub fn merge(
    dir: &Path,
    file: &FileConfig,
    flags: &RunFlags,
) -> Result<(DaemonOptions, LogFormat), ConfigError> {
    let mut lan = LanConfig::default();
    let mut node = NodeConfig::default();
    let mut ble = BleConfig::default();
    let profile = flags.profile.or(file.profile).unwrap_or_default();
    profile.apply(&mut node, &mut ble);
    if !flags.listen.is_empty() {
        lan.listen = flag_multiaddrs("--listen", &flags.listen)?;
    } else if let Some(l) = &file.listen
        && !l.is_empty()
    {
        lan.listen = l.clone();
    }
    lan.peers = if flags.peer.is_empty() {
        file.peer.clone().unwrap_or_default()
    } else {
        flag_multiaddrs("--peer", &flags.peer)?
    };
    lan.mdns = !(flags.no_mdns || file.no_mdns.unwrap_or(false));
    if let Some(kib) = flags.link_budget_kib.or(file.link_budget_kib) {
        set_link_budget(&mut node, kib);
    }
    if let Some(n) = flags.copy_budget.or(file.copy_budget) {
        node.copy_budget = n;
    }
    ble.enabled = !(flags.no_ble || file.no_ble.unwrap_or(false));
    ble.adapter = flags
        .ble_adapter
        .clone()
        .or_else(|| file.ble_adapter.clone());
    let options = DaemonOptions {
        dir: dir.to_owned(),
        lan,
        node,
        ble,
        homeserver_sync: flags.homeserver_sync || file.homeserver_sync.unwrap_or(false),
        metrics: flags.metrics.or(file.metrics),
    };
    Ok((
        options,
        flags.log_format.or(file.log_format).unwrap_or_default(),
    ))
}

/// `meshrelay config check FILE`: the one line printed on success.
pub fn check(file: &Path) -> Result<String, ConfigError> {
    let cfg = load(file)?;
    let set = [
        cfg.listen.is_some(),
        cfg.peer.is_some(),
        cfg.no_mdns.is_some(),
        cfg.no_ble.is_some(),
        cfg.ble_adapter.is_some(),
        cfg.link_budget_kib.is_some(),
        cfg.copy_budget.is_some(),
        cfg.homeserver_sync.is_some(),
        cfg.profile.is_some(),
        cfg.log_format.is_some(),
        cfg.metrics.is_some(),
        cfg.web.is_some(),
        cfg.bridge.is_some(),
    ]
    .iter()
    .filter(|&&b| b)
    .count();
    Ok(format!("{}: OK ({set} keys set)\n", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<FileConfig, ConfigError> {
        parse(Path::new("t.toml"), text)
    }

    #[test]
    fn the_packaged_example_parses_and_documents_every_key() {
        let text = include_str!("../packaging/meshrelay.toml");
        p(text).unwrap();
        // Every key is documented (as a commented-out line or a set one).
        for k in KEYS {
            assert!(
                text.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{k} ="))
                }),
                "{k} is not documented in packaging/meshrelay.toml"
            );
        }
        // Uncommenting every example line gives a valid file too.
        let all: String = text
            .lines()
            .filter_map(|l| {
                let t = l.trim_start_matches(['#', ' ']);
                KEYS.iter()
                    .any(|k| t.starts_with(&format!("{k} =")))
                    .then(|| format!("{t}\n"))
            })
            .collect();
        let cfg = p(&all).unwrap();
        assert!(cfg.metrics.is_some() && cfg.profile.is_some() && cfg.listen.is_some());
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = p("no-mdns = true\n\nbogus = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:3: unknown key `bogus`"), "{e}");
        let e = p("# c\nlink-budget-kib = 8\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "t.toml:2: key `link-budget-kib`: 8 is not in 16..=1048576"
        );
        let e = p("copy-budget = 129\n").unwrap_err().to_string();
        assert_eq!(e, "t.toml:1: key `copy-budget`: 129 is not in 0..=128");
        let e = p("no-ble = \"yes\"\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "t.toml:1: key `no-ble`: expected true or false, found string"
        );
        let e = p("profile = \"turbo\"\n").unwrap_err().to_string();
        assert!(e.contains("key `profile`: \"turbo\" is not one of \"relay\", \"battery\""));
        let e = p("listen = [\"nope\"]\n").unwrap_err().to_string();
        assert!(
            e.starts_with("t.toml:1: key `listen`: nope: not a multiaddr"),
            "{e}"
        );
        let e = p("metrics = \"localhost\"\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1: key `metrics`:"), "{e}");
        let e = p("a = = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1: not valid TOML"), "{e}");
        let e = p("[table]\nx = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:1: unknown key `table`"), "{e}");
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_profile() {
        let file = p(
            "profile = \"battery\"\nlink-budget-kib = 64\nno-mdns = true\ncopy-budget = 0\n\
                      peer = [\"/ip4/10.0.0.1/tcp/4001\"]\nmetrics = \"127.0.0.1:9464\"\n",
        )
        .unwrap();
        let dir = Path::new("/d");
        let (o, log) = merge(dir, &file, &RunFlags::default()).unwrap();
        assert_eq!(log, LogFormat::Text);
        assert_eq!(o.node.link_bytes_per_s, 64 * 1024);
        assert_eq!(o.node.anti_entropy_interval_ms, BATTERY_ANTI_ENTROPY_MS);
        assert_eq!(o.ble.policy.scan_interval_ms, BATTERY_SCAN_INTERVAL_MS);
        assert!(!o.lan.mdns);
        assert_eq!(o.node.copy_budget, 0);
        assert_eq!(o.lan.peers.len(), 1);
        assert_eq!(o.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        let flags = RunFlags {
            link_budget_kib: Some(1024),
            profile: Some(Profile::Relay),
            peer: vec!["/ip4/10.0.0.2/tcp/1".into(), "/ip4/10.0.0.3/tcp/1".into()],
            log_format: Some(LogFormat::Json),
            copy_budget: Some(32),
            ..RunFlags::default()
        };
        let (o, log) = merge(dir, &file, &flags).unwrap();
        assert_eq!(o.node.copy_budget, 32);
        assert_eq!(log, LogFormat::Json);
        assert_eq!(o.node.link_bytes_per_s, 1024 * 1024);
        assert_eq!(o.node.link_burst_bytes, 8 * 1024 * 1024);
        assert_eq!(
            o.node.anti_entropy_interval_ms,
            NodeConfig::default().anti_entropy_interval_ms
        );
        assert_eq!(o.lan.peers.len(), 2);
        let bad = RunFlags {
            listen: vec!["x".into()],
            ..RunFlags::default()
        };
        let e = merge(dir, &file, &bad).unwrap_err().to_string();
        assert!(e.starts_with("--listen x: not a multiaddr"), "{e}");
        let (o, _) = merge(dir, &FileConfig::default(), &RunFlags::default()).unwrap();
        assert_eq!(o.node.copy_budget, crate::proto::node::DEFAULT_COPY_BUDGET);
    }
}
