//! The copies/latency frontier: meshrelay at several copy budgets
//! (`NodeConfig::copy_budget`, `protocol-spec/wire.md`, "Copy budget") on
//! the same workloads as the baselines, as a table and a plot of delivery
//! and median latency (relative to the oracle) against the overhead ratio.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::compare::{Comparison, compare_only};
use crate::metrics::Metrics;
use crate::scenario::Scenario;

/// The baselines run once per seed next to the sweep.
pub const BASELINES: [&str; 4] = ["epidemic", "spray_and_wait", "direct", "oracle"];

/// One seed of a sweep: the baselines, and meshrelay per copy budget.
#[derive(Debug, Clone)]
pub struct SeedSweep {
    /// The seed.
    pub seed: u64,
    /// Baselines' metrics by name.
    pub baselines: BTreeMap<&'static str, Metrics>,
    /// meshrelay's metrics and wall time (s) per copy budget, and whether
    /// its invariants held.
    pub meshrelay: BTreeMap<u8, (Metrics, f64, bool)>,
}

/// Runs the sweep for one seed. `progress` gets (budget, fraction done).
pub fn sweep(
    sc: &Scenario,
    seed: u64,
    budgets: &[u8],
    progress: &mut dyn FnMut(u8, f64),
) -> SeedSweep {
    let w = sc.workload(seed);
    let settings = sc.settings(seed);
    let base = compare_only(&w, &settings, &BASELINES, &mut |_| {});
    let mut meshrelay = BTreeMap::new();
    for &b in budgets {
        let mut s = settings.clone();
        s.node.copy_budget = b;
        let c: Comparison = compare_only(&w, &s, &["meshrelay"], &mut |f| progress(b, f));
        if let Some(o) = c.outcomes.get("meshrelay") {
            let wall = c.wall_s.get("meshrelay").copied().unwrap_or(0.0);
            meshrelay.insert(b, (o.metrics(), wall, c.invariants.ok()));
        }
    }
    SeedSweep {
        seed,
        baselines: base.metrics(),
        meshrelay,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn budget_name(b: u8) -> String {
    if b == 0 { "none".into() } else { b.to_string() }
}

/// Seed means of one protocol's metrics, with the ratios the goals use.
struct Summary {
    delivery: f64,
    of_oracle: f64,
    latency_median_s: f64,
    x_oracle: f64,
    overhead: f64,
    x_epidemic: f64,
    bytes_per_delivered: f64,
    peak_buffer_bytes: f64,
}

/// Means over the seeds where `pick` finds the protocol's metrics.
fn summarise<'a>(
    runs: &'a [SeedSweep],
    pick: impl Fn(&'a SeedSweep) -> Option<&'a Metrics>,
) -> Summary {
    let mean = |f: &dyn Fn(&SeedSweep, &Metrics) -> f64| {
        let v: Vec<f64> = runs
            .iter()
            .filter_map(|r| pick(r).map(|m| f(r, m)))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    Summary {
        delivery: mean(&|_, m| m.delivery_ratio),
        of_oracle: mean(&|r, m| {
            ratio(
                m.delivery_ratio,
                oracle(r).map_or(0.0, |o| o.delivery_ratio),
            )
        }),
        latency_median_s: mean(&|_, m| m.latency_median_s),
        x_oracle: mean(&|r, m| {
            ratio(
                m.latency_median_s,
                oracle(r).map_or(0.0, |o| o.latency_median_s),
            )
        }),
        overhead: mean(&|_, m| m.overhead_ratio),
        x_epidemic: mean(&|r, m| {
            ratio(
                m.overhead_ratio,
                epidemic(r).map_or(0.0, |e| e.overhead_ratio),
            )
        }),
        bytes_per_delivered: mean(&|_, m| m.bytes_per_delivered),
        peak_buffer_bytes: mean(&|_, m| m.peak_buffer_bytes as f64),
    }
}

/// meshrelay's metrics at budget `b` in one seed's sweep.
fn mesh(b: u8) -> impl Fn(&SeedSweep) -> Option<&Metrics> {
    move |r| r.meshrelay.get(&b).map(|m| &m.0)
}

/// Baseline `name`'s metrics in one seed's sweep.
fn base(name: &str) -> impl Fn(&SeedSweep) -> Option<&Metrics> + '_ {
    move |r| r.baselines.get(name)
}

/// The table columns from delivery to peak buffer.
fn cells(x: &Summary) -> String {
    format!(
        "{:.4} | {:.1}% | {:.1} | {:.3} | {:.2} | {:.3} | {:.0} | {:.0}",
        x.delivery,
        x.of_oracle * 100.0,
        x.latency_median_s,
        x.x_oracle,
        x.overhead,
        x.x_epidemic,
        x.bytes_per_delivered,
        x.peak_buffer_bytes
    )
}

fn oracle(r: &SeedSweep) -> Option<&Metrics> {
    r.baselines.get("oracle")
}

fn epidemic(r: &SeedSweep) -> Option<&Metrics> {
    r.baselines.get("epidemic")
}

/// The markdown table: one row per budget (means over seeds), then the
/// baselines.
pub fn table(runs: &[SeedSweep]) -> String {
    let mut s = String::from(
        "| copy budget | delivery | of oracle | median s | x oracle | overhead | x epidemic | bytes/delivered | peak buffer B | wall s | invariants |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    let budgets: Vec<u8> = runs
        .first()
        .map(|r| r.meshrelay.keys().copied().collect())
        .unwrap_or_default();
    for b in budgets {
        let wall: f64 = runs
            .iter()
            .filter_map(|r| r.meshrelay.get(&b).map(|m| m.1))
            .sum::<f64>()
            / runs.len().max(1) as f64;
        let ok = runs.iter().all(|r| r.meshrelay.get(&b).is_none_or(|m| m.2));
        let _ = writeln!(
            s,
            "| {} | {} | {wall:.1} | {} |",
            budget_name(b),
            cells(&summarise(runs, mesh(b))),
            if ok { "ok" } else { "**violated**" }
        );
    }
    for name in BASELINES {
        let _ = writeln!(
            s,
            "| {name} | {} | - | - |",
            cells(&summarise(runs, base(name)))
        );
    }
    s
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Two panels over the overhead ratio: delivery (fraction of the oracle's)
/// and median latency (multiple of the oracle's), one point per budget and
/// seed mean, the baselines as single points, the goals as dashed lines.
pub fn plot(path: &Path, runs: &[SeedSweep]) -> PlotResult {
    let budgets: Vec<u8> = runs
        .first()
        .map(|r| r.meshrelay.keys().copied().collect())
        .unwrap_or_default();
    let xy = |x: Summary| (x.overhead, x.of_oracle, x.x_oracle);
    let point = |b: u8| xy(summarise(runs, mesh(b)));
    let baseline_point = |n: &str| xy(summarise(runs, base(n)));
    // Curve in budget order, "none" (0) last: it is the most copies.
    let mut order: Vec<u8> = budgets.iter().copied().filter(|b| *b != 0).collect();
    if budgets.contains(&0) {
        order.push(0);
    }
    let pts: Vec<(u8, (f64, f64, f64))> = order.iter().map(|&b| (b, point(b))).collect();
    let others: Vec<(&str, (f64, f64, f64))> = ["epidemic", "spray_and_wait", "direct"]
        .iter()
        .map(|n| (*n, baseline_point(n)))
        .collect();
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let xmax = pts
        .iter()
        .map(|p| p.1.0)
        .chain(others.iter().map(|p| p.1.0))
        .map(finite)
        .fold(1.0f64, f64::max)
        * 1.1;
    let lmax = pts
        .iter()
        .map(|p| p.1.2)
        .chain(others.iter().map(|p| p.1.2))
        .map(finite)
        .fold(1.5f64, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (760, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(380);
    let ep_overhead = baseline_point("epidemic").0;
    for (panel, area) in [(0, top), (1, bottom)] {
        let (caption, ymin, ymax, ydesc, goal) = if panel == 0 {
            (
                "Delivery vs overhead (copy budget sweep)",
                0.0,
                1.05,
                "delivered / oracle's",
                0.98,
            )
        } else {
            (
                "Median latency vs overhead",
                0.0,
                lmax,
                "median latency / oracle's",
                1.3,
            )
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..xmax, ymin..ymax)?;
        chart
            .configure_mesh()
            .x_desc("overhead ratio (relayed - delivered) / delivered")
            .y_desc(ydesc)
            .draw()?;
        let y = |p: &(f64, f64, f64)| if panel == 0 { p.1 } else { p.2 };
        let grey = RGBColor(0x88, 0x88, 0x88);
        chart.draw_series(DashedLineSeries::new(
            vec![(0.0, goal), (xmax, goal)],
            6,
            4,
            grey.stroke_width(1),
        ))?;
        if ep_overhead.is_finite() && ep_overhead > 0.0 {
            chart.draw_series(DashedLineSeries::new(
                vec![(ep_overhead / 10.0, ymin), (ep_overhead / 10.0, ymax)],
                6,
                4,
                grey.stroke_width(1),
            ))?;
        }
        let red = RGBColor(0xd6, 0x27, 0x28);
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(_, p)| (p.0, y(p))),
                red.stroke_width(2),
            ))?
            .label("meshrelay (label: copy budget)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], red.stroke_width(2)));
        // Neighbouring budgets sit close together: their labels alternate
        // above and below the line so that none overlaps the next.
        for (i, (b, p)) in pts.iter().enumerate() {
            let label = budget_name(*b);
            let at = if i % 2 == 0 { (6, -16) } else { (6, 6) };
            chart.draw_series(std::iter::once(
                EmptyElement::at((p.0, y(p)))
                    + Circle::new((0, 0), 4, red.filled())
                    + Text::new(label, at, ("sans-serif", 13)),
            ))?;
        }
        for (name, p) in &others {
            let col = match *name {
                "epidemic" => RGBColor(0x1f, 0x77, 0xb4),
                "spray_and_wait" => RGBColor(0x2c, 0xa0, 0x2c),
                _ => RGBColor(0x94, 0x67, 0xbd),
            };
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((p.0, y(p)))
                        + TriangleMarker::new((0, 0), 6, col.filled())
                        + Text::new(name.to_string(), (6, 4), ("sans-serif", 12)),
                ))?
                .label(*name)
                .legend(move |(x, y)| TriangleMarker::new((x + 8, y), 5, col.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            // Where each panel is empty: below the delivery curve, above
            // the latency one.
            .position(if panel == 0 {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Writes `FRONTIER.md` and `frontier.svg` into `dir`.
pub fn write(dir: &Path, sc: &Scenario, runs: &[SeedSweep], wall_s: f64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    plot(&dir.join("frontier.svg"), runs).map_err(|e| std::io::Error::other(e.to_string()))?;
    let seeds: Vec<String> = runs.iter().map(|r| r.seed.to_string()).collect();
    let budgets: Vec<String> = runs
        .first()
        .map(|r| r.meshrelay.keys().map(|b| b.to_string()).collect())
        .unwrap_or_default();
    let mut md = format!(
        "# {}: copy budget frontier\n\n{}\n\nSeeds {}; means over seeds. Rerun: \
         `cargo run --release -p meshrelay-sim -- frontier sim/scenarios/{}.toml --seeds {} --copy-budgets {} --report DIR`.\n\n\
         Copy budget `none` (0) is epidemic carrying; the goals are delivery >= 98% of the oracle, \
         overhead <= 1/10 of epidemic's, median latency <= 1.3x the oracle's (dashed lines in the plot).\n\n",
        sc.name,
        sc.description,
        seeds.join(", "),
        sc.name,
        seeds.join(","),
        budgets.join(","),
    );
    md.push_str(&table(runs));
    let _ = writeln!(md, "\n![frontier](frontier.svg)\n");
    let _ = writeln!(md, "Total wall time of the sweep: {wall_s:.1} s.");
    std::fs::write(dir.join("FRONTIER.md"), md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(delivery: f64, latency: f64, overhead: f64) -> Metrics {
        Metrics {
            delivery_ratio: delivery,
            created: 100,
            delivered: (delivery * 100.0) as u64,
            latency_mean_s: latency,
            latency_median_s: latency,
            latency_p95_s: latency,
            overhead_ratio: overhead,
            relayed: 0,
            bytes_on_air: 0,
            bytes_per_delivered: 10.0,
            relative_message_redundancy: None,
            peak_buffer_bytes: 1000,
            undelivered_at_end: 0,
        }
    }

    #[test]
    fn table_rows_are_seed_means_with_ratios_to_the_oracle_and_epidemic() {
        let run = |delivery: f64| SeedSweep {
            seed: 1,
            baselines: BASELINES
                .iter()
                .map(|n| (*n, metrics(1.0, 100.0, 200.0)))
                .collect(),
            meshrelay: [(16u8, (metrics(delivery, 250.0, 20.0), 2.0, true))].into(),
        };
        let t = table(&[run(0.9), run(0.8)]);
        assert!(
            t.contains(
                "| 16 | 0.8500 | 85.0% | 250.0 | 2.500 | 20.00 | 0.100 | 10 | 1000 | 2.0 | ok |"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "| oracle | 1.0000 | 100.0% | 100.0 | 1.000 | 200.00 | 1.000 | 10 | 1000 | - | - |"
            ),
            "{t}"
        );
    }
}
