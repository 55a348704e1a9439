//! `meshrelay-sim`: the meshrelay simulator. See `sim/README.md`.

mod reconcile;

use clap::{Parser, Subcommand};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Debug, Parser)]
#[command(name = "meshrelay-sim", version, about = "meshrelay simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reconcile two sets over an in-memory link and count the bytes.
    Reconcile {
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
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Reconcile {
            n,
            d,
            layout,
            mtu,
            seed,
            json,
        } => {
            anyhow::ensure!(d <= n, "--d must not exceed --n");
            let seed = seed.unwrap_or_else(rand::random);
            eprintln!("seed: {seed}");
            let mut rng = StdRng::seed_from_u64(seed);
            let r = reconcile::run(n, d, layout, mtu, &mut rng)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "n={} d={} layout={:?} mtu={}: {} bytes, {} round trips",
                    r.n, r.d, r.layout, r.mtu, r.bytes, r.round_trips
                );
            }
        }
    }
    Ok(())
}
