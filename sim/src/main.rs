//! `meshrelay-sim`: run scenarios and imported traces through meshrelay and
//! the DTN baselines.
//!
//! Subcommands live in one enum; each has its own small handler, so a new
//! one (`reconcile`) is one variant plus one module.

mod reconcile;

/// The simulator allocates and frees millions of small frames and events an
/// hour of simulated time; mimalloc's per-size free lists serve them faster
/// than glibc's (`sim/reports/scenarios/REPORT.md`, "Allocator").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use meshrelay::proto::NodeConfig;
use meshrelay_sim::baseline::LinkModel;
use meshrelay_sim::compare::{Comparison, PROTOCOLS, Settings, compare_fed, compare_only};
use meshrelay_sim::net::LinkParams;
use meshrelay_sim::receipts::{self, ReceiptsSpec};
use meshrelay_sim::scenario::Scenario;
use meshrelay_sim::sybil::{self, SybilSpec};
use meshrelay_sim::trace::Workload;
use meshrelay_sim::{frontier, report};

#[derive(Parser)]
#[command(
    name = "meshrelay-sim",
    version,
    about = "Discrete-event mesh simulator for meshrelay"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario file through meshrelay and every baseline.
    Run(RunArgs),
    /// Run an imported ONE trace pair through meshrelay and every baseline.
    Trace(TraceArgs),
    /// Reconcile two sets over an in-memory link and count the bytes.
    Reconcile(ReconcileArgs),
    /// Sweep meshrelay's copy budget on a scenario (baselines once per
    /// seed) and plot delivery and latency against overhead.
    Frontier(FrontierArgs),
}

#[derive(clap::Args)]
struct FrontierArgs {
    /// Scenario TOML.
    scenario: PathBuf,
    /// Seeds, run in parallel threads (default: the scenario's).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Copy budgets to run meshrelay with (0 = none, epidemic carrying).
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16,32,0",
          value_parser = clap::value_parser!(u8).range(0..=128))]
    copy_budgets: Vec<u8>,
    /// Write FRONTIER.md and frontier.svg into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print one JSON line per seed and budget on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ReconcileArgs {
    /// Items in the union of the two sets.
    #[arg(long)]
    n: usize,
    /// Items held by exactly one side.
    #[arg(long)]
    d: usize,
    /// Where the differences lie.
    #[arg(long, value_enum)]
    layout: reconcile::Layout,
    /// Link MTU in bytes.
    #[arg(long, default_value_t = 185)]
    mtu: usize,
    /// RNG seed (random if absent; always printed to stderr).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario TOML.
    scenario: PathBuf,
    /// Seed (default: the scenario's).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Several seeds, run in parallel threads (comma-separated): the JSON
    /// becomes one line per seed, and the report covers all of them.
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Print the metrics as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Write a markdown report and SVG plots into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Override the scenario's meshrelay stranger (relay) pool, bytes.
    #[arg(long)]
    stranger_pool_bytes: Option<u64>,
    /// Override meshrelay's copy budget for carried events (binary spray;
    /// 0 = none, epidemic carrying; at most 128).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=128))]
    copy_budget: Option<u8>,
    /// Whether meshrelay's companion and group rules choose carriers
    /// (`protocol-spec/wire.md`, "Where copies go"); `off` is the baseline
    /// they are measured against. Default: the scenario's, else on.
    #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
    spray_rules: Option<bool>,
    /// Run only these protocols (comma-separated names from the JSON keys,
    /// e.g. `meshrelay` to time the Node alone). Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LinkArg {
    Ble,
    Lan,
}

#[derive(clap::Args)]
struct TraceArgs {
    /// ONE connectivity trace (`<time> CONN <a> <b> up|down`).
    #[arg(long)]
    contacts: PathBuf,
    /// ONE created-messages report.
    #[arg(long)]
    messages: PathBuf,
    /// Link kind of every contact.
    #[arg(long, value_enum, default_value = "ble")]
    link: LinkArg,
    /// Seed for meshrelay identities and node RNGs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the metrics as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Spray-and-wait copies (L).
    #[arg(long, default_value_t = 8)]
    spray_copies: u32,
    /// meshrelay's copy budget for carried events (binary spray; 0 = none,
    /// epidemic carrying; at most 128). Default: the node's default.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=128))]
    copy_budget: Option<u8>,
    /// Run only these protocols (comma-separated names from the JSON keys).
    /// Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(a) => cmd_run(a),
        Cmd::Trace(a) => cmd_trace(a),
        Cmd::Reconcile(a) => cmd_reconcile(a),
        Cmd::Frontier(a) => cmd_frontier(a),
    }
}

fn cmd_reconcile(a: ReconcileArgs) -> anyhow::Result<()> {
    use rand::SeedableRng;
    anyhow::ensure!(a.d <= a.n, "--d must not exceed --n");
    let seed = a.seed.unwrap_or_else(rand::random);
    eprintln!("seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let r = reconcile::run(a.n, a.d, a.layout, a.mtu, &mut rng)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "n={} d={} layout={:?} mtu={}: {} bytes, {} round trips",
            r.n, r.d, r.layout, r.mtu, r.bytes, r.round_trips
        );
    }
    Ok(())
}

/// A progress line on stderr, redrawn at most every whole percent.
fn progress(label: &str) -> impl FnMut(f64) + '_ {
    let mut last = -1i64;
    move |f: f64| {
        let pct = (f * 100.0).floor() as i64;
        if pct != last {
            last = pct;
            eprint!("\r{label}: meshrelay {pct:3}%");
            if pct >= 100 {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    }
}

/// Prints `stdout` (the JSON or the table), then the airtime shares, wall
/// times and any invariant violation on stderr.
fn print_result(c: &Comparison, stdout: &str, started: Instant) {
    println!("{stdout}");
    if let Some(o) = c.outcomes.get("meshrelay") {
        eprintln!("meshrelay airtime by frame: {}", report::airtime_shares(o));
    }
    for (name, s) in &c.wall_s {
        eprintln!("wall time {name}: {s:.2} s");
    }
    eprintln!("wall time total: {:.2} s", started.elapsed().as_secs_f64());
    if !c.invariants.ok() {
        eprintln!("INVARIANT VIOLATED: {:?}", c.invariants);
    }
}

fn cmd_run(a: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut sc = Scenario::load(&a.scenario)?;
    if let Some(p) = a.stranger_pool_bytes {
        sc.protocols.stranger_pool_bytes = Some(p);
    }
    if let Some(c) = a.copy_budget {
        sc.protocols.copy_budget = Some(c);
    }
    if let Some(r) = a.spray_rules {
        sc.protocols.spray_rules = Some(r);
    }
    let seeds = if a.seeds.is_empty() {
        vec![a.seed.unwrap_or(sc.seed)]
    } else {
        a.seeds.clone()
    };
    if let Some(spec) = sc.sybil.clone() {
        return cmd_sybil(&a, &sc, &spec, &seeds, started);
    }
    if let Some(spec) = sc.receipts.clone() {
        return cmd_receipts(&a, &sc, &spec, &seeds, started);
    }
    if let Some(spec) = sc.photos.clone() {
        return cmd_photos(&a, &sc, &spec, &seeds, started);
    }
    eprintln!(
        "seed{} = {}",
        if seeds.len() > 1 { "s" } else { "" },
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let only = only_protocols(&a.only)?;
    let results: Vec<(u64, Comparison)> = std::thread::scope(|scope| {
        let handles: Vec<_> = seeds
            .iter()
            .map(|&seed| {
                let (sc, only) = (&sc, &only);
                scope.spawn(move || {
                    // The contacts are found while meshrelay runs.
                    let (w, feed) = sc.workload_fed(seed);
                    eprintln!(
                        "{} seed {seed}: {} nodes, {} messages, {:.0} s simulated",
                        sc.name,
                        w.nodes,
                        w.messages.len(),
                        w.end_ms as f64 / 1000.0
                    );
                    let label = format!("{} seed {seed}", sc.name);
                    let settings = sc.settings(seed);
                    let (_, c, changes) =
                        compare_fed(w, feed, &settings, only, &mut progress(&label));
                    eprintln!("{} seed {seed}: {changes} contact changes", sc.name);
                    (seed, c)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    anyhow::ensure!(results.len() == seeds.len(), "a run panicked");
    for (seed, c) in &results {
        if results.len() > 1 {
            eprintln!("seed {seed}:");
        }
        if a.json && results.len() > 1 {
            println!("{}", serde_json::to_string(&c.metrics())?);
        } else {
            let out = if a.json {
                c.json()
            } else {
                report::table(&c.metrics())
            };
            print_result(c, &out, started);
        }
    }
    if let Some(dir) = a.report {
        let runs: Vec<(u64, &Comparison)> = results.iter().map(|(s, c)| (*s, c)).collect();
        report::write(&dir, &sc, &runs, started.elapsed().as_secs_f64())
            .with_context(|| format!("writing report to {}", dir.display()))?;
        eprintln!("report written to {}", dir.display());
    }
    anyhow::ensure!(
        results.iter().all(|(_, c)| c.invariants.ok()),
        "invariants violated"
    );
    Ok(())
}

/// A scenario with a `[sybil]` table: its real rooms with and without the
/// hostile nodes' flood, same seed, one after the other.
fn cmd_sybil(
    a: &RunArgs,
    sc: &Scenario,
    spec: &SybilSpec,
    seeds: &[u64],
    started: Instant,
) -> anyhow::Result<()> {
    for_each_rooms_seed(a, sc, "sybil", seeds, started, |seed, progress| {
        let c = sybil::compare(sc, spec, seed, progress);
        if a.json {
            println!("{}", serde_json::to_string(&c)?);
        } else {
            println!("{} seed {seed}\n\n{}", sc.name, c.table());
            println!(
                "median latency with attack / without: {:.3}",
                c.median_ratio()
            );
        }
        Ok([&c.with_attack, &c.without_attack]
            .iter()
            .all(|o| o.honest_evicted == 0 && o.foreign_lines == 0))
    })
}

/// A scenario with a `[receipts]` table: its real rooms without and with
/// receipts, same seed.
fn cmd_receipts(
    a: &RunArgs,
    sc: &Scenario,
    spec: &ReceiptsSpec,
    seeds: &[u64],
    started: Instant,
) -> anyhow::Result<()> {
    for_each_rooms_seed(a, sc, "receipts", seeds, started, |seed, progress| {
        let c = receipts::compare(sc, spec, seed, progress);
        if a.json {
            println!("{}", serde_json::to_string(&c)?);
        } else {
            println!("{} seed {seed}\n\n{}", sc.name, c.table());
            println!(
                "bytes on air added by receipts: {:+.2}%",
                c.overhead() * 100.0
            );
        }
        Ok([&c.with_receipts, &c.without_receipts]
            .iter()
            .all(|o| o.honest_evicted == 0 && o.foreign_lines == 0))
    })
}

/// A scenario with a `[photos]` table: its real rooms text only and with
/// photos, same seed.
fn cmd_photos(
    a: &RunArgs,
    sc: &Scenario,
    spec: &meshrelay_sim::photos::PhotosSpec,
    seeds: &[u64],
    started: Instant,
) -> anyhow::Result<()> {
    for_each_rooms_seed(a, sc, "photos", seeds, started, |seed, progress| {
        let c = meshrelay_sim::photos::compare(sc, spec, seed, progress);
        if a.json {
            println!("{}", serde_json::to_string(&c)?);
        } else {
            println!("{} seed {seed}\n\n{}", sc.name, c.table());
            println!(
                "text latency (median) with photos: {:+.2}%",
                c.text_latency_change() * 100.0
            );
        }
        Ok([&c.text_only, &c.with_photos]
            .iter()
            .all(|o| o.honest_evicted == 0 && o.foreign_lines == 0))
    })
}

/// Runs a real-rooms scenario (a `[table]` one) once per seed: refuses the
/// flags that do not apply, announces each seed's workload, prints each
/// run's progress every 10%; `one` runs a seed and says whether the
/// invariants held.
fn for_each_rooms_seed(
    a: &RunArgs,
    sc: &Scenario,
    table: &str,
    seeds: &[u64],
    started: Instant,
    mut one: impl FnMut(u64, &mut dyn FnMut(&str, f64)) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.report.is_none() && a.only.is_empty() && a.stranger_pool_bytes.is_none(),
        "--report, --only and --stranger-pool-bytes do not apply to a [{table}] scenario"
    );
    let mut ok = true;
    for &seed in seeds {
        eprintln!("seed = {seed}");
        let w = sc.workload(seed);
        eprintln!(
            "{} seed {seed}: {} nodes ({} hostile), {} rooms, {} messages, {} contact changes, {:.0} s simulated",
            sc.name,
            w.nodes,
            sc.hostile_nodes().len(),
            w.rooms.len(),
            w.messages.len(),
            w.contacts.len(),
            w.end_ms as f64 / 1000.0
        );
        let mut last = (String::new(), -1i64);
        let mut progress = |label: &str, f: f64| {
            let pct = (f * 100.0).floor() as i64;
            if (label, pct) != (last.0.as_str(), last.1) && pct % 10 == 0 {
                last = (label.to_owned(), pct);
                eprintln!("{} seed {seed} {label}: {pct}%", sc.name);
            }
        };
        ok &= one(seed, &mut progress)?;
    }
    eprintln!("wall time total: {:.2} s", started.elapsed().as_secs_f64());
    anyhow::ensure!(
        ok,
        "invariants violated (honest events evicted or foreign lines shown)"
    );
    Ok(())
}

fn cmd_frontier(a: FrontierArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let sc = Scenario::load(&a.scenario)?;
    let seeds = if a.seeds.is_empty() {
        vec![sc.seed]
    } else {
        a.seeds.clone()
    };
    eprintln!(
        "seeds = {}",
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let runs: Vec<frontier::SeedSweep> = std::thread::scope(|scope| {
        let handles: Vec<_> = seeds
            .iter()
            .map(|&seed| {
                let (sc, budgets) = (&sc, &a.copy_budgets);
                scope.spawn(move || {
                    let mut last = (u8::MAX, -1i64);
                    frontier::sweep(sc, seed, budgets, &mut |b, f| {
                        let pct = (f * 100.0).floor() as i64;
                        if (b, pct) != last && pct % 10 == 0 {
                            last = (b, pct);
                            eprintln!("{} seed {seed}: copy budget {b}: {pct}%", sc.name);
                        }
                    })
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    anyhow::ensure!(runs.len() == seeds.len(), "a run panicked");
    if a.json {
        for r in &runs {
            for (b, (m, _, ok)) in &r.meshrelay {
                println!(
                    "{}",
                    serde_json::json!({"seed": r.seed, "copy_budget": b, "invariants_ok": ok, "meshrelay": m})
                );
            }
            println!(
                "{}",
                serde_json::json!({"seed": r.seed, "baselines": r.baselines})
            );
        }
    }
    eprintln!("{}", frontier::table(&runs));
    if let Some(dir) = &a.report {
        frontier::write(dir, &sc, &runs, started.elapsed().as_secs_f64())
            .with_context(|| format!("writing frontier to {}", dir.display()))?;
        eprintln!("frontier written to {}", dir.display());
    }
    eprintln!("wall time total: {:.2} s", started.elapsed().as_secs_f64());
    anyhow::ensure!(
        runs.iter()
            .all(|r| r.meshrelay.values().all(|(_, _, ok)| *ok)),
        "invariants violated"
    );
    Ok(())
}

/// The protocols `--only` names (all when empty); an unknown name is an
/// error listing the known ones.
fn only_protocols(only: &[String]) -> anyhow::Result<Vec<&'static str>> {
    if only.is_empty() {
        return Ok(PROTOCOLS.to_vec());
    }
    only.iter()
        .map(|p| {
            PROTOCOLS
                .iter()
                .find(|k| **k == p.as_str())
                .copied()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--only: unknown protocol {p:?} (known: {})",
                        PROTOCOLS.join(", ")
                    )
                })
        })
        .collect()
}

fn cmd_trace(a: TraceArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    eprintln!("seed = {}", a.seed);
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let w = Workload::from_one(&read(&a.contacts)?, &read(&a.messages)?, 0)?;
    let lan = matches!(a.link, LinkArg::Lan);
    let mut model = LinkModel {
        ble: LinkParams::ble(),
        lan: LinkParams::lan(),
    };
    if lan {
        model.ble = model.lan;
    }
    let mut node = NodeConfig::default();
    if let Some(c) = a.copy_budget {
        node.copy_budget = c;
    }
    let settings = Settings {
        model,
        node,
        store: Default::default(),
        spray_copies: a.spray_copies,
        seed: a.seed,
    };
    let only = only_protocols(&a.only)?;
    let c = compare_only(&w, &settings, &only, &mut progress("trace"));
    // `trace` also gives each protocol's wall time (`"wall_s"`).
    let out = if a.json {
        c.json_with_wall_s()
    } else {
        report::table(&c.metrics())
    };
    print_result(&c, &out, started);
    anyhow::ensure!(c.invariants.ok(), "invariants violated");
    Ok(())
}
