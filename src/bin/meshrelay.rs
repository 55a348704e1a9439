//! The `meshrelay` command line. Thin: parsing, printing and exit codes;
//! the logic lives in the library.
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad input or usage.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use clap::{Parser, Subcommand};
use serde_json::json;

use meshrelay::cli::rooms::RoomsCommand;
use meshrelay::contacts::{AddOutcome, ContactBook, ContactError};
use meshrelay::crypto::{ContactCard, Identity, fingerprint};
use meshrelay::daemon::control::{self, Request};
use meshrelay::daemon::{DaemonOptions, report};
use meshrelay::datadir::{self, DATA_DIR_ENV, DataDir, DataDirError};
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent, timeliness};
use meshrelay::inspect::{self, Inspected, MAX_INSPECT_INPUT, sanitize};
use meshrelay::limits::{DEFAULT_EVENT_LIFETIME_MS, MAX_NAME_BYTES};

/// Delay-tolerant, end-to-end encrypted messaging over BLE and LAN meshes.
#[derive(Parser)]
#[command(name = "meshrelay", version, about)]
struct Cli {
    /// Data directory (default: $MESHRELAY_DATA_DIR, else the platform data
    /// directory + "meshrelay").
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
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
    Run(RunArgs),
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

#[derive(clap::Args)]
struct RunArgs {
    /// Listen address (repeatable). Default: every interface, random TCP and QUIC ports.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Static peer (repeatable), redialled with backoff; no /p2p/ suffix needed.
    #[arg(long, value_name = "MULTIADDR")]
    peer: Vec<String>,
    /// Do not discover peers with mDNS.
    #[arg(long)]
    no_mdns: bool,
    /// Intake budget per link, KiB per second (default 512: suits phones
    /// and small boards; a wired LAN relay may raise it).
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    link_budget_kib: Option<u64>,
    /// Do not use Bluetooth LE.
    #[arg(long)]
    no_ble: bool,
    /// The Bluetooth controller to use (default: the first one).
    #[arg(long, value_name = "hciN")]
    ble_adapter: Option<String>,
    /// Sync the store with the configured Matrix homeserver continuously
    /// (see `meshrelay homeserver login` and `homeserver transport`).
    #[arg(long)]
    homeserver_sync: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors exit 2 (clap's default)
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.err);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let data_dir = || -> Result<DataDir> {
        let root = datadir::resolve(cli.data_dir.as_deref(), std::env::var_os(DATA_DIR_ENV))?;
        Ok(DataDir::new(root))
    };
    match &cli.command {
        Command::Init { name } => init(&data_dir()?, name),
        Command::Id { json, qr } => id(&data_dir()?, *json, *qr),
        Command::Contact {
            action: ContactCmd::Add { card },
        } => contact_add(&data_dir()?, card),
        Command::Contacts { json } => contacts(&data_dir()?, *json),
        Command::Decode { file, json } => decode(file.as_deref(), *json),
        Command::Demo { basics: true } => demo(),
        Command::Demo { basics: false } => {
            let exe = std::env::current_exe().context("cannot find this binary")?;
            meshrelay::cli::mesh_demo::run(&exe, &mut io::stdout().lock())?;
            Ok(())
        }
        Command::Store {
            action: StoreCmd::Check { json },
        } => store_check(&data_dir()?, *json),
        Command::Rooms(cmd) => {
            let dir = data_dir()?;
            if let Some(stream) = control::connect(dir.root()) {
                return rooms_via_daemon(dir.root(), stream, cmd);
            }
            let out = io::stdout();
            match meshrelay::cli::rooms::run(cmd, dir.root(), &mut out.lock()) {
                // The store is locked but no daemon answered: one may be
                // starting (it opens the store before its socket). Wait for
                // it, unless the command already consumed standard input.
                Err(e)
                    if meshrelay::cli::rooms::is_locked(&e)
                        && !matches!(cmd, RoomsCommand::Import { file } if file == "-") =>
                {
                    match control::wait_for(dir.root(), control::STARTUP_WAIT) {
                        Some(stream) => rooms_via_daemon(dir.root(), stream, cmd),
                        None => Err(Failure {
                            code: e.code,
                            err: e.err.into(),
                        }),
                    }
                }
                r => r.map_err(|e| Failure {
                    code: e.code,
                    err: e.err.into(),
                }),
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
        Command::Peers { json } => {
            let dir = data_dir()?;
            match control::connect(dir.root()) {
                Some(s) => forward(dir.root(), s, &Request::Peers { json: *json }),
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
                Some(s) => forward(dir.root(), s, &Request::Shutdown),
                None => Err(anyhow!("no daemon is running for {}", dir.root().display()).into()),
            }
        }
    }
}

/// Sends one request to the daemon and copies its output to stdout.
fn forward(dir: &Path, stream: std::os::unix::net::UnixStream, req: &Request) -> Result<()> {
    let stdout = io::stdout();
    let (code, error) = control::call(dir, stream, req, |b| {
        let mut o = stdout.lock();
        o.write_all(b)?;
        o.flush()
    })?;
    match (code, error) {
        (0, _) => Ok(()),
        (code, e) => Err(Failure {
            code,
            err: anyhow!(e.unwrap_or_else(|| "the daemon reported a failure".into())),
        }),
    }
}

/// A rooms command through the running daemon (it holds the store).
fn rooms_via_daemon(
    dir: &Path,
    stream: std::os::unix::net::UnixStream,
    cmd: &RoomsCommand,
) -> Result<()> {
    use meshrelay::cli::rooms as r;
    let fail = |e: r::CliError| Failure {
        code: e.code,
        err: e.err.into(),
    };
    if let RoomsCommand::Messages {
        room_id,
        json,
        follow: true,
    } = cmd
    {
        let req = Request::Follow {
            room_id: room_id.clone(),
            json: *json,
        };
        return match forward(dir, stream, &req) {
            // The reader went away (`| head`): a normal end.
            Err(f) if is_broken_pipe(&f.err) => Ok(()),
            other => other,
        };
    }
    let input = r::read_import_input(cmd).map_err(fail)?;
    let req = Request::Cli {
        argv: r::to_argv(cmd),
        input: input.map(|b| data_encoding::BASE64.encode(&b)),
    };
    if let RoomsCommand::Export { file, .. } = cmd
        && file != "-"
    {
        let mut bytes = Vec::new();
        let (code, error) = control::call(dir, stream, &req, |b| {
            bytes.extend_from_slice(b);
            Ok(())
        })?;
        if code != 0 {
            return Err(Failure {
                code,
                err: anyhow!(error.unwrap_or_default()),
            });
        }
        return r::write_output(file, &bytes, &mut io::stdout().lock()).map_err(fail);
    }
    forward(dir, stream, &req)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// `meshrelay status`: through the daemon when one runs, else from the store.
fn status(dir: &DataDir, json: bool) -> Result<()> {
    if let Some(s) = control::connect(dir.root()) {
        return forward(dir.root(), s, &Request::Status { json });
    }
    let (identity, _) = dir.load().map_err(dd_failure)?;
    let path = dir
        .root()
        .join(meshrelay::store::redb_backend::STORE_FILE_NAME);
    let store = meshrelay::store::RedbStore::open(&path, meshrelay::store::StoreConfig::default())
        .with_context(|| format!("cannot open {}", path.display()))?;
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
    });
    io::stdout()
        .lock()
        .write_all(report::render_status(&v, json).as_bytes())?;
    Ok(())
}

/// `meshrelay run`: the daemon, until SIGINT or SIGTERM.
fn run_daemon(dir: &DataDir, args: &RunArgs) -> Result<()> {
    use meshrelay::transport::lan::LanConfig;
    init_tracing();
    let parse = |v: &[String], what: &str| -> Result<Vec<libp2p::Multiaddr>> {
        v.iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| bad_input(anyhow!("{what} {a}: not a multiaddr: {e}")))
            })
            .collect()
    };
    let mut lan = LanConfig::default();
    if !args.listen.is_empty() {
        lan.listen = parse(&args.listen, "--listen")?;
    }
    lan.peers = parse(&args.peer, "--peer")?;
    lan.mdns = !args.no_mdns;
    let mut node = meshrelay::proto::NodeConfig::default();
    if let Some(kib) = args.link_budget_kib {
        node.link_bytes_per_s = kib * 1024;
        // A burst of eight seconds, as the default has.
        node.link_burst_bytes = node.link_bytes_per_s * 8;
    }
    let opts = DaemonOptions {
        dir: dir.root().to_owned(),
        lan,
        node,
        homeserver_sync: args.homeserver_sync,
        ble: meshrelay::transport::ble::BleConfig {
            enabled: !args.no_ble,
            adapter: args.ble_adapter.clone(),
            ..Default::default()
        },
    };
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
        meshrelay::daemon::run(opts, shutdown).await
    })
    .map_err(|e| match e {
        meshrelay::daemon::DaemonError::AlreadyRunning(_)
        | meshrelay::daemon::DaemonError::Homeserver(_) => bad_input(e),
        e => e.into(),
    })
}

/// Logs to stderr, human-readable; `RUST_LOG` overrides the default level.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Warnings only (skipped envelopes, retries) on stderr; `RUST_LOG`
/// overrides.
fn init_tracing_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// `meshrelay store check [--json]`: exit 0 when every check passed, 1 when
/// the store is damaged (the report names what).
fn store_check(dir: &DataDir, json: bool) -> Result<()> {
    use meshrelay::store::StoreConfig;
    use meshrelay::store::redb_backend::{STORE_FILE_NAME, check_file};
    let path = dir.root().join(STORE_FILE_NAME);
    if control::connect(dir.root()).is_some() {
        // A full check needs the file to itself (redb's integrity check).
        return Err(anyhow!(
            "a daemon is running for {}: stop it first (`meshrelay stop`); \
             `meshrelay status` shows the store's usage meanwhile",
            dir.root().display()
        )
        .into());
    }
    if !path.exists() {
        return Err(bad_input(anyhow!(
            "no store at {} (nothing has been stored yet)",
            path.display()
        )));
    }
    let report = check_file(&path, StoreConfig::default())
        .with_context(|| format!("cannot check {}", path.display()))?;
    let mut out = io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        let s = &report.stats;
        writeln!(out, "store:     {}", path.display())?;
        writeln!(
            out,
            "integrity: {}",
            if report.ok { "ok" } else { "DAMAGED" }
        )?;
        writeln!(out, "events:    {} ({} bytes)", s.events, s.bytes)?;
        writeln!(
            out,
            "evicted:   {} expired, {} from the stranger pool, {} over budget",
            s.evictions.expired, s.evictions.stranger_pool, s.evictions.budget
        )?;
        writeln!(out, "forks:     {}", s.forks)?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(anyhow!("store check found damage in {}", path.display()).into())
    }
}

fn now_ms() -> Result<u64> {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock is before 1970")?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Maps data-directory errors: a missing or existing identity is the
/// user's mistake (2), everything else a runtime failure (1).
fn dd_failure(e: DataDirError) -> Failure {
    match e {
        DataDirError::AlreadyInitialized(_) | DataDirError::NotInitialized(_) => bad_input(e),
        other => other.into(),
    }
}

fn init(dir: &DataDir, name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(bad_input(anyhow!(
            "--name is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if dir.has_identity() {
        return Err(dd_failure(DataDirError::AlreadyInitialized(
            dir.root().to_owned(),
        )));
    }
    let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
    let identity = Identity::generate(&mut rng);
    let card = ContactCard::create(&identity, name, now_ms()?).map_err(bad_input)?;
    dir.init(&identity, &card).map_err(dd_failure)?;
    println!("Created identity in {}", dir.root().display());
    println!("device ID:   {}", identity.device_id());
    println!("fingerprint: {}", fingerprint(&identity.device_id()));
    println!("Share your contact card with `meshrelay id` (or `meshrelay id --qr`).");
    Ok(())
}

fn id(dir: &DataDir, json: bool, qr: bool) -> Result<()> {
    let (identity, card) = dir.load().map_err(dd_failure)?;
    let device_id = identity.device_id();
    let fp = fingerprint(&device_id);
    let text = card.to_text();
    if json {
        let v = json!({
            "device_id": device_id.to_string(),
            "name": card.name,
            "fingerprint": fp,
            "card": text,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("device ID:   {device_id}");
        println!("name:        {}", sanitize(&card.name));
        println!("fingerprint: {fp}");
        println!("card:        {text}");
    }
    if qr {
        // Uppercase base32 and ':' are QR alphanumeric: a compact code.
        let code = qrcode::QrCode::with_error_correction_level(&text, qrcode::EcLevel::M)
            .context("contact card does not fit a QR code")?;
        let image = code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build();
        if json {
            eprintln!("{image}");
        } else {
            println!("{image}");
        }
    }
    Ok(())
}

fn contact_add(dir: &DataDir, text: &str) -> Result<()> {
    let card = ContactCard::from_text(text).map_err(|e| bad_input(anyhow!(e)))?;
    let (identity, _) = dir.load().map_err(dd_failure)?;
    if card.device_id == identity.device_id() {
        return Err(bad_input(ContactError::OwnCard));
    }
    let mut book = ContactBook::load(dir)?;
    let outcome = book.add(card.clone()).map_err(|e| match e {
        ContactError::Full => bad_input(e),
        other => other.into(),
    })?;
    if outcome != AddOutcome::Unchanged {
        book.save(dir)?;
    }
    let verb = match outcome {
        AddOutcome::Added => "Added",
        AddOutcome::Updated => "Updated",
        AddOutcome::Unchanged => "Already have (same or newer card)",
    };
    println!(
        "{verb} contact {} ({})",
        sanitize(&card.name),
        card.device_id
    );
    println!(
        "fingerprint: {}  (compare it in person before trusting this contact)",
        fingerprint(&card.device_id)
    );
    Ok(())
}

fn contacts(dir: &DataDir, json: bool) -> Result<()> {
    let book = ContactBook::load(dir)?;
    if json {
        let list: Vec<_> = book
            .iter()
            .map(|c| {
                json!({
                    "device_id": c.device_id.to_string(),
                    "name": c.name,
                    "fingerprint": fingerprint(&c.device_id),
                    "created_ms": c.created_ms,
                    "card": c.to_text(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if book.is_empty() {
        println!("No contacts yet. Add one with `meshrelay contact add MRC1:...`.");
    } else {
        for c in book.iter() {
            println!(
                "{:<20} {}  {}",
                sanitize(&c.name),
                c.device_id,
                fingerprint(&c.device_id)
            );
        }
    }
    Ok(())
}

fn read_input(file: Option<&Path>) -> Result<Vec<u8>> {
    let limit = MAX_INSPECT_INPUT as u64 + 1;
    let mut buf = Vec::new();
    match file {
        None => {
            io::stdin().take(limit).read_to_end(&mut buf)?;
        }
        Some(p) if p == Path::new("-") => {
            io::stdin().take(limit).read_to_end(&mut buf)?;
        }
        Some(p) => {
            let f = std::fs::File::open(p)
                .with_context(|| format!("cannot open {}", p.display()))
                .map_err(bad_input)?;
            f.take(limit)
                .read_to_end(&mut buf)
                .with_context(|| format!("cannot read {}", p.display()))?;
        }
    }
    Ok(buf)
}

fn decode(file: Option<&Path>, json: bool) -> Result<()> {
    let input = read_input(file)?;
    let now = now_ms().ok();
    if meshrelay::cli::rooms::is_bundle(&input) {
        let v = meshrelay::cli::rooms::bundle_json(&input, now.unwrap_or(0))
            .map_err(|e| bad_input(anyhow!("{}", e.err)))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let events = v["bundle"]["events"].as_array().map_or(&[][..], |a| a);
            println!(
                "bundle of {} events (signatures checked one by one)",
                events.len()
            );
            for e in events {
                match e.get("error") {
                    Some(err) => println!("  #{}: invalid: {err}", e["index"]),
                    None => println!(
                        "  #{}: {} {} seq {} from {} room {} ({})",
                        e["index"],
                        e["event_id"].as_str().unwrap_or(""),
                        e["kind"].as_str().unwrap_or(""),
                        e["seq"],
                        e["sender"].as_str().unwrap_or(""),
                        e["room"].as_str().unwrap_or(""),
                        e["timeliness"].as_str().unwrap_or(""),
                    ),
                }
            }
        }
        return Ok(());
    }
    let inspected = inspect::inspect(&input).map_err(|e| {
        let class = e.class();
        bad_input(anyhow!("{e} [{class}]"))
    })?;
    match inspected {
        Inspected::Event(ev) => {
            let v = inspect::event_json(&ev, now);
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("valid event (signature verified)");
                print_event(&ev, now);
            }
        }
        Inspected::Card(card) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&inspect::card_json(&card))?
                );
            } else {
                println!("valid contact card (signatures verified)");
                println!("  device ID:   {}", card.device_id);
                println!("  name:        {}", sanitize(&card.name));
                println!("  fingerprint: {}", fingerprint(&card.device_id));
                println!("  created_ms:  {}", card.created_ms);
                println!("  prekey id:   {}", card.prekey_id);
            }
        }
    }
    Ok(())
}

fn print_event(ev: &Event, now: Option<u64>) {
    println!("  event ID:    {}", ev.id());
    println!("  room:        {}", ev.room());
    println!("  sender:      {}", ev.sender());
    println!("  seq:         {}", ev.seq());
    if ev.prev().is_empty() {
        println!("  prev:        (none)");
    }
    for p in ev.prev() {
        println!("  prev:        {p}");
    }
    println!("  origin_ts:   {} ms", ev.origin_ts_ms());
    println!("  expires:     {} ms", ev.expires_ms());
    println!("  kind:        {}", ev.kind().name());
    println!("  payload:     {} bytes", ev.payload().len());
    println!("  size:        {} bytes", ev.bytes().len());
    if let Some(now) = now {
        println!(
            "  timeliness:  {} (by this machine's clock)",
            inspect::timeliness_name(timeliness(ev, now))
        );
    }
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn step(n: u32, title: &str) {
    println!();
    println!("== {n}. {title}");
}

fn demo() -> Result<()> {
    let out = io::stdout();
    let mut o = out.lock();
    let now = now_ms()?;
    writeln!(
        o,
        "meshrelay demo: identities, contact cards and signed events."
    )?;
    writeln!(
        o,
        "Everything below runs in memory; no data directory is touched."
    )?;

    step(1, "Create two device identities");
    writeln!(
        o,
        "   (Seeded from fixed bytes so every run shows the same keys; `meshrelay init`\n    uses the OS random number generator instead.)"
    )?;
    let alice = Identity::from_seed(&[0xa1; 32]);
    let bob = Identity::from_seed(&[0xb0; 32]);
    for (who, idn) in [("Alice", &alice), ("Bob", &bob)] {
        writeln!(o, "   {who}: device ID   {}", idn.device_id())?;
        writeln!(o, "   {who}: fingerprint {}", fingerprint(&idn.device_id()))?;
    }

    step(2, "Exchange contact cards");
    let alice_card = ContactCard::create(&alice, "Alice", now).map_err(anyhow::Error::from)?;
    let bob_card = ContactCard::create(&bob, "Bob", now).map_err(anyhow::Error::from)?;
    let alice_text = alice_card.to_text();
    writeln!(
        o,
        "   Alice's card ({} characters, fits a QR code):\n   {alice_text}",
        alice_text.len()
    )?;
    let mut bob_book = ContactBook::default();
    let (got, _) = bob_book.add_text(&alice_text)?;
    writeln!(
        o,
        "   Bob verifies it: name {:?}, fingerprint {}",
        got.name,
        fingerprint(&got.device_id)
    )?;
    writeln!(
        o,
        "   Bob reads the fingerprint aloud; Alice confirms it matches her screen."
    )?;
    let mut alice_book = ContactBook::default();
    alice_book.add_text(&bob_card.to_text())?;
    writeln!(o, "   Alice verifies and stores Bob's card the same way.")?;

    step(3, "A tampered contact card is rejected");
    let mut forged = alice_card.clone();
    forged.name = "Mallory".into();
    match ContactCard::from_text(&forged.to_text()) {
        Ok(_) => return Err(anyhow!("a tampered card was accepted").into()),
        Err(e) => writeln!(
            o,
            "   Renaming Alice's card to \"Mallory\": rejected ({e}) [{}]",
            e.class()
        )?,
    }

    step(4, "Alice signs an event");
    let room = RoomId([0x42; 16]);
    let first = UnsignedEvent {
        room,
        sender: alice.device_id(),
        seq: 1,
        prev: vec![],
        origin_ts_ms: now,
        expires_ms: now + DEFAULT_EVENT_LIFETIME_MS,
        kind: EventKind::Message,
        // Until the encryption layer lands, the demo payload is plain text.
        payload: b"Water point at the north gate is working again.".to_vec(),
    }
    .sign(&alice)
    .map_err(anyhow::Error::from)?;
    writeln!(
        o,
        "   room {room}, seq 1, kind message, {} payload bytes",
        first.payload().len()
    )?;
    writeln!(
        o,
        "   canonical CBOR: {} bytes; event ID {}",
        first.bytes().len(),
        first.id()
    )?;
    writeln!(
        o,
        "   first bytes: {}...",
        hex(first.bytes().get(..24).unwrap_or_default())
    )?;

    step(
        5,
        "Bob decodes and verifies it (any relay could have carried it)",
    );
    let received = Event::decode(first.bytes()).map_err(anyhow::Error::from)?;
    let known = bob_book.get(&received.sender()).map(|c| c.name.clone());
    writeln!(
        o,
        "   signature OK (verify_strict); sender is {}",
        known.as_deref().unwrap_or("an unknown device")
    )?;
    writeln!(
        o,
        "   same event ID on both sides: {}",
        received.id() == first.id()
    )?;
    writeln!(
        o,
        "   timeliness at Bob's clock: {}",
        inspect::timeliness_name(timeliness(&received, now))
    )?;

    step(
        6,
        "Bob replies, citing Alice's event as its causal predecessor",
    );
    let reply = UnsignedEvent {
        room,
        sender: bob.device_id(),
        seq: 1,
        prev: vec![first.id()],
        origin_ts_ms: now + 1_000,
        expires_ms: now + 1_000 + DEFAULT_EVENT_LIFETIME_MS,
        kind: EventKind::Message,
        payload: b"Copy. Heading there with the filters.".to_vec(),
    }
    .sign(&bob)
    .map_err(anyhow::Error::from)?;
    let back = Event::decode(reply.bytes()).map_err(anyhow::Error::from)?;
    writeln!(
        o,
        "   event {} (seq 1 for Bob in this room), prev = [{}]",
        back.id(),
        back.prev()
            .iter()
            .map(EventId::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )?;

    step(7, "Relays cannot alter or forge events");
    let mut altered = first.bytes().to_vec();
    let last = altered.len() - 70; // a byte inside the payload
    if let Some(b) = altered.get_mut(last) {
        *b ^= 0x20;
    }
    match Event::decode(&altered) {
        Ok(_) => return Err(anyhow!("an altered event was accepted").into()),
        Err(e) => writeln!(
            o,
            "   one payload byte changed: rejected ({e}) [{}]",
            e.class()
        )?,
    }
    let mallory = Identity::from_seed(&[0x66; 32]);
    let fake = UnsignedEvent {
        sender: mallory.device_id(),
        ..first.fields().clone()
    }
    .sign(&mallory)
    .map_err(anyhow::Error::from)?;
    // Splice Alice's key in as the sender, keeping Mallory's signature.
    let mut spoofed = fake.bytes().to_vec();
    // array head (1) + version (1) + room item (1 + 16) + sender head (2)
    let sender_at = 1 + 1 + 17 + 2;
    if let Some(dst) = spoofed.get_mut(sender_at..sender_at + 32) {
        dst.copy_from_slice(alice.device_id().as_bytes());
    }
    match Event::decode(&spoofed) {
        Ok(_) => return Err(anyhow!("a spoofed event was accepted").into()),
        Err(e) => writeln!(
            o,
            "   Mallory signs an event claiming to be Alice: rejected ({e}) [{}]",
            e.class()
        )?,
    }
    let mut grown = first.bytes().to_vec();
    grown.push(0);
    match Event::decode(&grown) {
        Ok(_) => return Err(anyhow!("trailing bytes were accepted").into()),
        Err(e) => writeln!(o, "   one byte appended: rejected ({e}) [{}]", e.class())?,
    }

    step(
        8,
        "Expiry is signed, so relays drop stale events without reading them",
    );
    let later = first.expires_ms() + meshrelay::limits::EXPIRY_GRACE_MS + 1;
    writeln!(
        o,
        "   at expiry + grace + 1 ms the verdict is: {}",
        inspect::timeliness_name(timeliness(&first, later))
    )?;

    writeln!(o)?;
    writeln!(
        o,
        "Rooms: three devices share an encrypted room through a bundle file \
         (in temporary data directories, removed afterwards)."
    )?;
    meshrelay::cli::rooms::demo(&mut o).map_err(|e| Failure {
        code: e.code,
        err: e.err.into(),
    })?;

    println!();
    println!("Demo complete: every check behaved as the protocol requires.");
    Ok(())
}
