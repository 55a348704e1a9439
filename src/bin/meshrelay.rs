//! The `meshrelay` command line. Thin: clap definitions, dispatch and exit
//! codes; the commands live in the library (`meshrelay::cli`), and the
//! commands a daemon serves go through the control API
//! (`meshrelay::control`, `protocol-spec/daemon.md`).
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad input or usage.
//!
//! `meshrelay` without arguments is a request for help, not a usage error:
//! on a machine without an identity it explains the first three steps, with
//! one it prints the usage and who this device is; both exit 0
//! (`meshrelay::cli::human::welcome`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;

use meshrelay::cli::human::{Style, welcome};
use meshrelay::cli::identity;
use meshrelay::control::{self, ControlError, OkData, Op, Request};
use meshrelay::daemon::report;
use meshrelay::datadir::{self, DATA_DIR_ENV, DataDir};
use meshrelay::safe_text::for_terminal;

/// Delay-tolerant, end-to-end encrypted messaging over BLE and LAN meshes.
#[derive(Parser)]
#[command(name = "meshrelay", version, about)]
struct Cli {
    /// Data directory (default: $MESHRELAY_DATA_DIR, else the platform data
    /// directory + "meshrelay").
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create this device's identity (ed25519 + x25519) from the OS RNG.
    Init {
        /// Display name put in the contact card.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Show this device's ID, name, fingerprint and contact card.
    Id {
        /// Print JSON: {"device_id","name","fingerprint","card"}.
        #[arg(long)]
        json: bool,
        /// Draw the contact card as a QR code.
        #[arg(long)]
        qr: bool,
    },
    /// Manage contacts.
    Contact {
        #[command(subcommand)]
        action: ContactCmd,
    },
    /// List stored contacts.
    Contacts {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decode and verify an event (binary or hex) or a contact card.
    Decode {
        /// Input file, or "-" for standard input (the default).
        #[arg(value_name = "FILE|-")]
        file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Three nodes on 127.0.0.1 (A–B–C): a room, a message relayed A→B→C,
    /// and C catching up after being offline. With --basics: identities,
    /// cards, signed events and a sneakernet bundle, narrated, in memory.
    Demo {
        /// The in-memory walk-through instead of the three-node mesh.
        #[arg(long)]
        basics: bool,
    },
    /// Inspect the durable store.
    Store {
        #[command(subcommand)]
        action: StoreCmd,
    },
    // Rooms (issue 4): room, rooms, send, messages, export, import.
    #[command(flatten)]
    Rooms(meshrelay::cli::rooms::RoomsCommand),
    // Homeserver (issue 7): homeserver login|set-token|transport|status, sync --once.
    #[command(flatten)]
    Homeserver(meshrelay::cli::homeserver::HomeserverCommand),
    /// Run the node daemon: LAN links (libp2p, mDNS), store-and-forward,
    /// and the control socket the other commands use while it runs.
    Run(meshrelay::config::RunFlags),
    /// The web app's pairing links and paired browsers (`run --web` on a
    /// non-loopback address).
    Web {
        #[command(subcommand)]
        action: meshrelay::cli::web::WebCommand,
    },
    /// The Matrix bridge: its registration, invites and status
    /// (`run --bridge` runs it).
    Bridge {
        #[command(subcommand)]
        action: meshrelay::cli::bridge::BridgeCommand,
    },
    /// Work with `run`'s configuration file.
    Config {
        #[command(subcommand)]
        action: meshrelay::config::ConfigCommand,
    },
    /// List connected peers (needs a running daemon).
    Peers {
        /// Print JSON: [{"link","kind","address","since","bytes_in","bytes_out"}].
        #[arg(long)]
        json: bool,
    },
    /// Show the device, rooms, store, queues and links.
    Status {
        /// Print JSON: {"device_id","rooms","store","queues","peers","ble","homeserver"}.
        #[arg(long)]
        json: bool,
    },
    /// Stop a running daemon gracefully.
    Stop,
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Verify integrity (page checksums, every signature and ID, index rows)
    /// and report usage: events, bytes, evictions by reason, forks.
    Check {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ContactCmd {
    /// Verify a contact card (MRC1:...) and store it.
    Add {
        /// The card text.
        card: String,
    },
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    err: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: EXIT_RUNTIME,
            err: e.into(),
        }
    }
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

fn bad_input(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_BAD_INPUT,
        err: e.into(),
    }
}

type Result<T, E = Failure> = std::result::Result<T, E>;

/// A library command's failure, with its exit code.
fn cmd(r: std::result::Result<(), meshrelay::cli::CmdError>) -> Result<()> {
    r.map_err(cmd_failure)
}

fn cmd_failure(e: meshrelay::cli::CmdError) -> Failure {
    Failure {
        code: e.code,
        err: anyhow!(e.message),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit 2 (clap's default)
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", for_terminal(&format!("{:#}", f.err)));
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let data_dir = || -> Result<DataDir> {
        let root = datadir::resolve(cli.data_dir.as_deref(), std::env::var_os(DATA_DIR_ENV))?;
        let dir = DataDir::new(root);
        for w in dir.secure()? {
            eprintln!("warning: {}", for_terminal(&w));
        }
        Ok(dir)
    };
    let Some(command) = &cli.command else {
        return no_arguments(cli.data_dir.as_deref());
    };
    match command {
        Command::Init { name } => cmd(identity::init(&data_dir()?, name, &mut io::stdout().lock())),
        Command::Id { json, qr } => cmd(identity::id(
            &data_dir()?,
            *json,
            *qr,
            &mut io::stdout().lock(),
            &mut io::stderr().lock(),
        )),
        Command::Contact {
            action: ContactCmd::Add { card },
        } => cmd(identity::contact_add(
            &data_dir()?,
            card,
            &mut io::stdout().lock(),
        )),
        Command::Web { action } => cmd(meshrelay::cli::web::run(
            &data_dir()?,
            action,
            &mut io::stdout().lock(),
            &mut io::stderr().lock(),
        )),
        Command::Bridge { action } => cmd(meshrelay::cli::bridge::run(
            &data_dir()?,
            action,
            &mut io::stdout().lock(),
        )),
        Command::Contacts { json } => cmd(identity::contacts(
            &data_dir()?,
            *json,
            &mut io::stdout().lock(),
        )),
        Command::Decode { file, json } => cmd(meshrelay::cli::decode::decode(
            file.as_deref(),
            *json,
            &mut io::stdout().lock(),
        )),
        Command::Demo { basics: true } => cmd(meshrelay::cli::demo::demo(&mut io::stdout().lock())),
        Command::Demo { basics: false } => {
            let exe = std::env::current_exe().context("cannot find this binary")?;
            meshrelay::cli::mesh_demo::run(&exe, &mut io::stdout().lock())?;
            Ok(())
        }
        Command::Store {
            action: StoreCmd::Check { json },
        } => cmd(meshrelay::cli::store::store_check(
            &data_dir()?,
            *json,
            &mut io::stdout().lock(),
        )),
        Command::Rooms(cmd) => {
            let dir = data_dir()?;
            let out = io::stdout();
            let style = Style::detect(&out);
            let fail = |e: meshrelay::cli::rooms::CliError| Failure {
                code: e.code,
                err: e.err.into(),
            };
            if let Some(stream) = control::connect(dir.root()) {
                return meshrelay::cli::rooms::run_via_daemon(
                    cmd,
                    dir.root(),
                    stream,
                    style,
                    &mut out.lock(),
                )
                .map_err(fail);
            }
            match meshrelay::cli::rooms::run(cmd, dir.root(), style, &mut out.lock()) {
                // The store is locked but no daemon answered: one may be
                // starting (it opens the store before its socket). Wait for
                // it (an `import` opens the store before it reads its input).
                Err(e) if meshrelay::cli::rooms::is_locked(&e) => {
                    match control::wait_for(dir.root(), control::STARTUP_WAIT) {
                        Some(stream) => meshrelay::cli::rooms::run_via_daemon(
                            cmd,
                            dir.root(),
                            stream,
                            style,
                            &mut out.lock(),
                        )
                        .map_err(fail),
                        None => Err(fail(e)),
                    }
                }
                r => r.map_err(fail),
            }
        }
        Command::Homeserver(cmd) => {
            init_tracing_quiet();
            let dir = data_dir()?;
            meshrelay::cli::homeserver::run(
                cmd,
                dir.root(),
                &mut io::stdout().lock(),
                &mut io::stderr().lock(),
            )
            .map_err(|e| Failure {
                code: e.code,
                err: e.into(),
            })
        }
        Command::Run(args) => run_daemon(&data_dir()?, args),
        Command::Config {
            action: meshrelay::config::ConfigCommand::Check { file },
        } => {
            let ok = meshrelay::config::check(file).map_err(bad_input)?;
            io::stdout().lock().write_all(ok.as_bytes())?;
            Ok(())
        }
        Command::Peers { json } => {
            let dir = data_dir()?;
            match control::connect(dir.root()) {
                Some(s) => match daemon_call(dir.root(), s, Op::Peers)? {
                    OkData::Peers { peers } => {
                        print(&meshrelay::cli::status::render_peers(&peers, *json))
                    }
                    other => Err(unexpected(&other)),
                },
                None => Err(anyhow!(
                    "no daemon is running for {} (start one with `meshrelay run`)",
                    dir.root().display()
                )
                .into()),
            }
        }
        Command::Status { json } => status(&data_dir()?, *json),
        Command::Stop => {
            let dir = data_dir()?;
            match control::connect(dir.root()) {
                Some(s) => daemon_call(dir.root(), s, Op::Shutdown).map(drop),
                None => Err(anyhow!("no daemon is running for {}", dir.root().display()).into()),
            }
        }
    }
}

/// `meshrelay` alone: the first steps on a machine without an identity,
/// else the usage and who this device is. Exit 0 either way.
fn no_arguments(flag: Option<&Path>) -> Result<()> {
    let root = datadir::resolve(flag, std::env::var_os(DATA_DIR_ENV)).ok();
    let identity = root.as_ref().map(DataDir::new).and_then(|d| d.load().ok());
    let text = match (&root, identity) {
        (Some(root), None) if !DataDir::new(root).has_identity() => {
            welcome::first_steps(&root.display().to_string())
        }
        (_, identity) => {
            let mut s = Cli::command().render_help().to_string();
            if let Some((id, card)) = identity {
                s.push('\n');
                s.push_str(&welcome::status_hint(&card.name, &id.device_id()));
            }
            s
        }
    };
    print(&text)
}

/// Sends one typed request to the daemon; its final data. A refusal keeps
/// its exit code (2 when the request was at fault, else 1).
fn daemon_call(dir: &Path, stream: std::os::unix::net::UnixStream, op: Op) -> Result<OkData> {
    control::call(dir, stream, &Request::new(op), |_| Ok(())).map_err(|e| match e {
        ControlError::Api(a) => Failure {
            code: meshrelay::cli::rooms::exit_code(a.code),
            err: anyhow!(a.message),
        },
        e => e.into(),
    })
}

fn unexpected(ok: &OkData) -> Failure {
    anyhow!("unexpected reply from the daemon: {ok:?}").into()
}

/// Prints what a formatting function rendered.
fn print(text: &str) -> Result<()> {
    let mut o = io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// `meshrelay status`: through the daemon when one runs, else from the store.
fn status(dir: &DataDir, json: bool) -> Result<()> {
    if let Some(s) = control::connect(dir.root()) {
        return match daemon_call(dir.root(), s, Op::Status)? {
            OkData::Status { status } => {
                print(&meshrelay::cli::status::render_status(&status, json))
            }
            other => Err(unexpected(&other)),
        };
    }
    let (identity, _) = dir
        .load()
        .map_err(|e| cmd_failure(meshrelay::cli::dd_failure(e)))?;
    let path = dir
        .root()
        .join(meshrelay::store::redb_backend::STORE_FILE_NAME);
    let store = meshrelay::store::RedbStore::open(&path, meshrelay::store::StoreConfig::default())
        .map_err(|e| {
            let code = if e.is_too_new() {
                EXIT_BAD_INPUT
            } else {
                EXIT_RUNTIME
            };
            Failure {
                code,
                err: anyhow::Error::from(e).context(format!("cannot open {}", path.display())),
            }
        })?;
    let (st, queues, rooms) = report::store_status(&store)?;
    let v = json!({
        "device_id": identity.device_id().to_string(),
        "rooms": rooms,
        "store": st,
        "queues": queues,
        "peers": 0,
        "ble": "off",
        "homeserver": report::homeserver_state(dir.root(), "off"),
        "daemon": { "running": false },
        "disk": meshrelay::daemon::disk::status_of(dir.root()),
        // Without a daemon there are no links, so nothing syncs.
        "syncing": [],
    });
    print(&meshrelay::cli::status::render_status(&v, json))
}

/// Makes glibc's malloc keep one arena for the whole daemon, before its
/// threads start. By default glibc gives threads arenas of their own (up
/// to eight per core), and memory freed in one is never reused by
/// another: a relay on six busy links peaked about 2 MiB higher with them
/// (`reports/field.md`, "One malloc arena"; `protocol-spec/daemon.md`).
/// The daemon's threads are few (two workers, the store's blocking
/// tasks), so the shared arena's lock costs little. `MALLOC_ARENA_MAX`
/// in the environment still wins (glibc reads it first; this only lowers
/// the default). Other C libraries: nothing to do.
///
/// It also fixes glibc's mmap and trim thresholds at 128 KiB (their
/// starting values). Left alone, glibc raises the mmap threshold to the
/// size of each large block freed, up to 32 MiB, so the multi-MiB
/// temporaries of a long room's reconciliation (its item list) then come
/// from the heap and stay resident after they are freed: a receiving
/// daemon at 80,000 events ran 5 MiB lower with them fixed
/// (`reports/history-cost.md`, "Fifth round"). `MALLOC_MMAP_THRESHOLD_`
/// and `MALLOC_TRIM_THRESHOLD_` in the environment still win.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (env, param, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 1),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 128 * 1024),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 128 * 1024),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: `mallopt` only sets a parameter of the allocator; it
            // is called before the runtime's threads exist, and each value
            // is a documented, always-valid setting (one arena; thresholds
            // below glibc's 32 MiB maximum).
            let _ = unsafe { libc::mallopt(param, value) };
        }
    }
}

/// `meshrelay run`: the daemon, until SIGINT or SIGTERM.
fn run_daemon(dir: &DataDir, args: &meshrelay::config::RunFlags) -> Result<()> {
    let plan = meshrelay::config::resolve(dir.root(), args).map_err(bad_input)?;
    meshrelay::logging::init(plan.log_format, meshrelay::logging::DAEMON_FILTER);
    if let Some(file) = &plan.file {
        tracing::info!(file = %file.display(), "configuration file");
    }
    let opts = plan.options;
    let web = plan.web;
    let bridge = plan.bridge;
    let dir_root = dir.root().to_owned();
    one_malloc_arena();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(mut i), Ok(mut t)) => {
                    tokio::select! {
                        _ = i.recv() => tracing::info!("SIGINT: stopping"),
                        _ = t.recv() => tracing::info!("SIGTERM: stopping"),
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        // The web app is a client of the daemon's control socket; it
        // answers "the daemon is not answering" until the socket is up.
        let web_task = match web {
            Some(addr) => {
                let served = meshrelay::web::spawn(addr, opts.dir.clone())
                    .await
                    .map_err(bad_input)?;
                let local = served.local;
                match &served.pairing_base {
                    // The pairing link holds a secret: it is not logged.
                    Some(base) => {
                        tracing::info!(
                            %local,
                            "web app on {base}/ for paired browsers: run `meshrelay web pair` for a pairing link and its QR code"
                        );
                        // A person at the terminal gets the first link at
                        // once; a log (journal, file) never holds it.
                        show_pairing_link(&dir_root);
                    }
                    None => tracing::info!(%local, "web app on http://{local}/"),
                }
                Some(served.task)
            }
            None => None,
        };
        // The bridge is a client of the control socket too.
        let bridge_tasks = if bridge {
            let running = meshrelay::bridge::spawn(opts.dir.clone())
                .await
                .map_err(|e| match e {
                    meshrelay::bridge::BridgeError::Io(_) | meshrelay::bridge::BridgeError::State(_) => {
                        anyhow!(e).into()
                    }
                    e => bad_input(e),
                })?;
            running.tasks
        } else {
            Vec::new()
        };
        let r = meshrelay::daemon::run(opts, shutdown).await;
        if let Some(t) = web_task {
            t.abort();
        }
        for t in bridge_tasks {
            t.abort();
        }
        r.map_err(daemon_failure)
    })
}

/// Prints the current pairing link and its QR code on standard error when
/// it is a terminal.
fn show_pairing_link(dir: &Path) {
    use std::io::IsTerminal;
    if !io::stderr().is_terminal() {
        return;
    }
    let now = meshrelay::web::api::now_ms();
    if let Ok(Some(url)) = meshrelay::web::access::current_pairing(&DataDir::new(dir), now) {
        let qr = meshrelay::cli::web::qr_for_terminal(&url).unwrap_or_default();
        eprintln!("{qr}\nPair a browser (one, within ten minutes): {url}");
    }
}

/// How a daemon failure exits: refused input (exit 2) or a failure (1).
fn daemon_failure(e: meshrelay::daemon::DaemonError) -> Failure {
    match e {
        meshrelay::daemon::DaemonError::AlreadyRunning(_)
        | meshrelay::daemon::DaemonError::Homeserver(_) => bad_input(e),
        e if e.is_too_new() => bad_input(e),
        e => e.into(),
    }
}

/// Warnings only (skipped envelopes, retries) on stderr; `RUST_LOG`
/// overrides.
fn init_tracing_quiet() {
    meshrelay::logging::init(meshrelay::config::LogFormat::Text, "warn");
}
