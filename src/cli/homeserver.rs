//! The homeserver commands of `meshrelay` (issue 7's CLI contract,
//! `protocol-spec/homeserver.md`):
//!
//! ```text
//! meshrelay homeserver login URL USER --password-stdin
//! meshrelay homeserver set-token URL [--token-stdin]   (token on stdin, or $MESHRELAY_HOMESERVER_TOKEN)
//! meshrelay homeserver set-token URL TOKEN             (still accepted, with a warning: argv is visible)
//! meshrelay homeserver transport (MATRIX_ROOM_ID | --create) [--invite USER_ID]... [--json]
//! meshrelay homeserver status [--json]
//! meshrelay sync --once [--json]   → {"uploaded","downloaded","bundles",...}
//! ```
//!
//! `sync --once` shows progress on standard error: a progress bar on a
//! terminal, plain lines otherwise. It needs the store, so it refuses
//! clearly while a daemon holds it (`meshrelay run --homeserver-sync` syncs
//! there). Exit codes follow the binary's: 0 ok, 1 runtime failure, 2 bad
//! input or usage.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use rand_core::Rng;
use serde_json::json;
use zeroize::Zeroizing;

use crate::app::{AppError, Device};
use crate::datadir::DataDir;
use crate::homeserver_config::{ConfigError, HomeserverConfig, Secret};
use crate::safe_text::for_terminal;
use crate::store::redb_backend::STORE_FILE_NAME;
use crate::store::{RedbStore, StoreConfig, StoreError, SyncStore};
use crate::sync::{self, DirectHost, Progress, SyncError, SyncOptions, SyncReport, uplink};
use crate::transport::homeserver::{Client, HomeserverError, RetryPolicy};

use super::rooms::{EXIT_BAD_INPUT, EXIT_RUNTIME, now_ms};

/// Environment variable (tests only): pause this many milliseconds before
/// each bundle upload, so a test can interrupt an upload half-way.
pub const SEND_DELAY_ENV: &str = "MESHRELAY_TEST_SEND_DELAY_MS";

/// Environment variable (tests only): abort right after this many bundles
/// were accepted, before recording it (a crash in the worst place).
pub const ABORT_AFTER_SENDS_ENV: &str = "MESHRELAY_TEST_ABORT_AFTER_SENDS";

/// Attempts per homeserver request in the CLI (with the default backoff,
/// about three minutes of retrying before a sync gives up).
pub const CLI_MAX_ATTEMPTS: u32 = 12;

/// Device display name given to the homeserver at login.
pub const DEVICE_DISPLAY_NAME: &str = "meshrelay gateway";

/// Longest password read from standard input, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// The homeserver commands; flatten into the binary's command enum.
#[derive(Debug, Subcommand)]
pub enum HomeserverCommand {
    /// Configure the Matrix homeserver account and transport room.
    Homeserver {
        /// What to do.
        #[command(subcommand)]
        action: HomeserverAction,
    },
    /// Exchange envelopes with the homeserver's transport room.
    Sync(SyncArgs),
}

/// `meshrelay homeserver ...`.
#[derive(Debug, Subcommand)]
pub enum HomeserverAction {
    /// Log in with a password read from standard input; stores the access
    /// token and device ID (file mode 0600).
    Login {
        /// Homeserver base URL, e.g. https://matrix.example.org.
        url: String,
        /// User name or full Matrix user ID.
        user: String,
        /// Read the password from standard input (required).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Store an existing access token (its user and device are looked up).
    /// The token is read from standard input, or from
    /// $MESHRELAY_HOMESERVER_TOKEN when set and --token-stdin is not given.
    SetToken {
        /// Homeserver base URL.
        url: String,
        /// Access token (discouraged: other users can see command lines;
        /// prints a warning).
        token: Option<String>,
        /// Read the token from standard input (the default without TOKEN
        /// and without $MESHRELAY_HOMESERVER_TOKEN).
        #[arg(long, conflicts_with = "token")]
        token_stdin: bool,
    },
    /// Set the transport room: join an existing one, or create it.
    Transport {
        /// Matrix room ID (or alias) to join.
        #[arg(required_unless_present = "create", conflicts_with = "create")]
        room_id: Option<String>,
        /// Create a new private transport room.
        #[arg(long)]
        create: bool,
        /// Invite another gateway account (repeatable).
        #[arg(long, value_name = "USER_ID")]
        invite: Vec<String>,
        /// Print JSON: {"room_id"}.
        #[arg(long)]
        json: bool,
    },
    /// Show the homeserver configuration and queue.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `meshrelay sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Drain up and down once, then exit.
    #[arg(long)]
    pub once: bool,
    /// Print JSON: {"uploaded","downloaded","bundles",...} (counts of events,
    /// and of bundles uploaded).
    #[arg(long)]
    pub json: bool,
}

/// A failure of a homeserver command, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// Exit code.
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

fn bad(message: impl Into<String>) -> CliError {
    CliError {
        code: EXIT_BAD_INPUT,
        message: message.into(),
    }
}

fn runtime(e: impl std::fmt::Display) -> CliError {
    CliError {
        code: EXIT_RUNTIME,
        message: e.to_string(),
    }
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::NotConfigured | ConfigError::NoTransportRoom => bad(e.to_string()),
            e => runtime(e),
        }
    }
}

impl From<HomeserverError> for CliError {
    fn from(e: HomeserverError) -> Self {
        match e {
            HomeserverError::InvalidUrl(_) | HomeserverError::InsecureUrl(_) => bad(e.to_string()),
            e => runtime(e),
        }
    }
}

impl From<SyncError> for CliError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Homeserver(h) => h.into(),
            SyncError::Config(c) => c.into(),
            e => runtime(e),
        }
    }
}

fn daemon_running(dir: &Path) -> CliError {
    runtime(format!(
        "a meshrelay daemon is running for {} and holds the store; stop it with `meshrelay stop`, \
         or let it sync with `meshrelay run --homeserver-sync`",
        dir.display()
    ))
}

fn rng() -> Box<dyn Rng + Send> {
    sync::client_rng()
}

fn client(
    url: &str,
    token: Option<crate::transport::homeserver::AccessToken>,
) -> Result<Client, CliError> {
    let policy = RetryPolicy {
        max_attempts: CLI_MAX_ATTEMPTS,
        ..RetryPolicy::default()
    };
    let c = Client::new(url, policy, rng())?;
    Ok(match token {
        Some(t) => c.with_token(t),
        None => c,
    })
}

fn runtime_for_cli() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime)
}

fn logged_in(cfg: &HomeserverConfig) -> Result<(Client, String), CliError> {
    let token = cfg.token().ok_or(ConfigError::NotConfigured)?;
    let user = cfg.user_id.clone().ok_or(ConfigError::NotConfigured)?;
    Ok((client(&cfg.url, Some(token))?, user))
}

/// Runs one homeserver command on the data directory `dir`, printing to
/// `out` (results) and `err` (progress).
pub fn run(
    cmd: &HomeserverCommand,
    dir: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    let data = DataDir::new(dir);
    match cmd {
        HomeserverCommand::Homeserver { action } => match action {
            HomeserverAction::Login {
                url,
                user,
                password_stdin,
            } => {
                if !password_stdin {
                    return Err(bad(
                        "pass --password-stdin and the password on standard input",
                    ));
                }
                let password = read_password()?;
                let c = client(url, None)?;
                let rt = runtime_for_cli()?;
                let session =
                    rt.block_on(c.login_password(user, &password, DEVICE_DISPLAY_NAME))?;
                save_login(
                    &data,
                    url,
                    session.user_id.clone(),
                    session.device_id,
                    session.access_token.expose(),
                )?;
                writeln!(out, "logged in as {}", for_terminal(&session.user_id)).map_err(runtime)
            }
            HomeserverAction::SetToken {
                url,
                token,
                token_stdin,
            } => {
                let token = match token {
                    Some(t) => {
                        let _ = writeln!(
                            err,
                            "warning: a token on the command line is visible to other users \
                             (process list, shell history); pipe it to --token-stdin or set \
                             {TOKEN_ENV} instead"
                        );
                        Zeroizing::new(t.clone())
                    }
                    None => match std::env::var(TOKEN_ENV) {
                        Ok(t) if !*token_stdin && !t.is_empty() => Zeroizing::new(t),
                        _ => read_stdin_secret("token")?,
                    },
                };
                let token = &*token;
                let c = client(
                    url,
                    Some(crate::transport::homeserver::AccessToken::new(
                        token.to_owned(),
                    )),
                )?;
                let rt = runtime_for_cli()?;
                let (user_id, device_id) = rt.block_on(c.whoami())?;
                let device_id = device_id.unwrap_or_default();
                save_login(&data, url, user_id.clone(), device_id, token)?;
                writeln!(out, "token stored for {}", for_terminal(&user_id)).map_err(runtime)
            }
            HomeserverAction::Transport {
                room_id,
                create,
                invite,
                json,
            } => {
                let mut cfg = HomeserverConfig::require(&data)?;
                let (c, _) = logged_in(&cfg)?;
                let rt = runtime_for_cli()?;
                let room = rt.block_on(async {
                    let invites: Vec<&str> = invite.iter().map(String::as_str).collect();
                    if *create {
                        return c.create_room(&invites).await;
                    }
                    let wanted = room_id.as_deref().unwrap_or_default();
                    let room = c.join_room(wanted).await?;
                    for u in &invites {
                        c.invite(&room, u).await?;
                    }
                    Ok(room)
                })?;
                cfg.transport_room = Some(room.clone());
                cfg.save(&data)?;
                let r = if *json {
                    writeln!(out, "{}", json!({ "room_id": room }))
                } else {
                    writeln!(out, "{room}")
                };
                r.map_err(runtime)
            }
            HomeserverAction::Status { json } => status(&data, *json, out),
        },
        HomeserverCommand::Sync(args) => {
            if !args.once {
                return Err(bad(
                    "pass --once (continuous sync runs in the daemon: `meshrelay run --homeserver-sync`)",
                ));
            }
            let report = sync_once_cli(&data, err)?;
            let r = if args.json {
                writeln!(out, "{}", serde_json::to_string(&report).map_err(runtime)?)
            } else {
                writeln!(
                    out,
                    "uploaded {} events in {} bundles, downloaded {} new events",
                    report.uploaded, report.bundles, report.downloaded
                )
            };
            r.map_err(runtime)
        }
    }
}

/// Environment variable `homeserver set-token` reads the token from.
pub const TOKEN_ENV: &str = "MESHRELAY_HOMESERVER_TOKEN";

fn read_password() -> Result<Zeroizing<String>, CliError> {
    read_stdin_secret("password")
}

/// One line of standard input (a password or token), without its newline.
fn read_stdin_secret(what: &str) -> Result<Zeroizing<String>, CliError> {
    let mut line = Zeroizing::new(String::new());
    let stdin = io::stdin();
    let mut lock = stdin.lock();
    // Bounded: a hostile or mistaken stdin cannot make this allocate more.
    let n = io::Read::take(&mut lock, MAX_PASSWORD_BYTES as u64 + 2)
        .read_line(&mut line)
        .map_err(runtime)?;
    if n > MAX_PASSWORD_BYTES {
        return Err(bad(format!("{what} too long")));
    }
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    if trimmed.is_empty() {
        return Err(bad(format!("empty {what} on standard input")));
    }
    Ok(trimmed)
}

fn save_login(
    data: &DataDir,
    url: &str,
    user_id: String,
    device_id: String,
    token: &str,
) -> Result<(), CliError> {
    let old = HomeserverConfig::load(data)?;
    // The transport room stays when only the account's token changes.
    let transport_room = old.filter(|o| o.url == url).and_then(|o| o.transport_room);
    let cfg = HomeserverConfig {
        url: url.to_owned(),
        user_id: Some(user_id),
        device_id: Some(Secret::new(device_id)),
        access_token: Some(Secret::new(token)),
        transport_room,
    };
    cfg.save(data)?;
    Ok(())
}

fn status(data: &DataDir, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let cfg = HomeserverConfig::load(data)?;
    // The queue, when the store is free (a daemon holds it otherwise).
    let store = match RedbStore::open(&data.path(STORE_FILE_NAME), StoreConfig::default()) {
        Ok(s) => Some(s),
        Err(StoreError::Locked { .. }) => None,
        Err(e) => return Err(runtime(e)),
    };
    let (queued, pending, synced) = match &store {
        Some(s) => (
            Some(uplink::queued(s)?),
            Some(uplink::pending(s)?),
            Some(s.since_token().map_err(runtime)?.is_some()),
        ),
        None => (None, None, None),
    };
    let v = json!({
        "configured": cfg.is_some(),
        "url": cfg.as_ref().map(|c| c.url.clone()),
        "user_id": cfg.as_ref().and_then(|c| c.user_id.clone()),
        "logged_in": cfg.as_ref().is_some_and(|c| c.access_token.is_some()),
        "transport_room": cfg.as_ref().and_then(|c| c.transport_room.clone()),
        "queued": queued,
        "pending_bundles": pending,
        "synced": synced,
        "daemon": store.is_none(),
    });
    let r = if json {
        writeln!(out, "{v}")
    } else {
        let show = |x: &serde_json::Value| match x {
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::String(s) => for_terminal(s).into_owned(),
            other => other.to_string(),
        };
        writeln!(
            out,
            "homeserver:     {}\nuser:           {}\nlogged in:      {}\ntransport room: {}\nqueued events:  {}\npending bundles:{}\nsynced before:  {}",
            show(&v["url"]),
            show(&v["user_id"]),
            v["logged_in"],
            show(&v["transport_room"]),
            if store.is_none() {
                "(store held by the daemon)".to_owned()
            } else {
                show(&v["queued"])
            },
            show(&v["pending_bundles"]),
            show(&v["synced"]),
        )
    };
    r.map_err(runtime)
}

/// `meshrelay sync --once` without a daemon.
fn sync_once_cli(data: &DataDir, err: &mut dyn Write) -> Result<SyncReport, CliError> {
    if crate::control::connect(data.root()).is_some() {
        return Err(daemon_running(data.root()));
    }
    let cfg = HomeserverConfig::require(data)?;
    let room = cfg.room()?.to_owned();
    let (c, user) = logged_in(&cfg)?;
    let mut opts = SyncOptions::new(&room, &user);
    if let Some(ms) = std::env::var(SEND_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        opts.send_delay = Duration::from_millis(ms);
    }
    opts.abort_after_sends = std::env::var(ABORT_AFTER_SENDS_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let device = match Device::open(data.root(), now_ms()) {
        Ok(d) => d,
        Err(AppError::Store(StoreError::Locked { .. })) => return Err(daemon_running(data.root())),
        Err(e) => return Err(runtime(e)),
    };
    let mut host = DirectHost::new(device, now_ms);
    let rt = runtime_for_cli()?;
    let tty = io::stderr().is_terminal();
    let mut progress = CliProgress { err, tty };
    Ok(rt.block_on(sync::sync_once(&mut host, &c, &opts, &mut progress))?)
}

/// Progress on standard error: a bar on a terminal, plain lines otherwise.
struct CliProgress<'a> {
    err: &'a mut dyn Write,
    tty: bool,
}

/// Width of the progress bar, in characters.
const BAR_WIDTH: u64 = 30;

impl Progress for CliProgress<'_> {
    fn downloaded(&mut self, new: u64, total: u64) {
        let _ = if self.tty {
            write!(self.err, "\rsync: downloaded {total} new events\x1b[K")
        } else {
            writeln!(
                self.err,
                "sync: downloaded {new} new events ({total} so far)"
            )
        };
    }

    fn upload_started(&mut self, queued: u64) {
        let _ = if self.tty {
            writeln!(self.err)
        } else {
            writeln!(self.err, "sync: uploading {queued} queued events")
        };
    }

    fn uploaded(&mut self, events: u64, uploaded: u64, queued: u64) {
        let _ = if self.tty {
            let filled = (uploaded.min(queued) * BAR_WIDTH)
                .checked_div(queued)
                .unwrap_or(BAR_WIDTH);
            write!(
                self.err,
                "\rsync: [{}{}] {uploaded}/{queued} events uploaded\x1b[K",
                "#".repeat(filled as usize),
                "-".repeat((BAR_WIDTH - filled) as usize)
            )
        } else {
            writeln!(
                self.err,
                "sync: uploaded a bundle of {events} events ({uploaded}/{queued})"
            )
        };
        let _ = self.err.flush();
    }

    fn retrying(&mut self, error: &HomeserverError, wait_ms: u64) {
        let _ = writeln!(
            self.err,
            "sync: {}; retrying in {wait_ms} ms",
            for_terminal(&error.to_string())
        );
    }

    fn finished(&mut self) {
        if self.tty {
            let _ = writeln!(self.err);
        }
    }
}
