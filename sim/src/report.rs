//! Markdown reports and SVG plots (plotters, SVG backend only: no fonts or
//! system libraries needed).
//!
//! Plots: delivery ratio over time, latency CDF, and overhead ratio per
//! protocol. The report carries wall-clock times; the JSON never does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::compare::{Comparison, PROTOCOLS};
use crate::metrics::{Metrics, Outcome};
use crate::scenario::Scenario;

fn colour(name: &str) -> RGBColor {
    match name {
        "meshrelay" => RGBColor(0xd6, 0x27, 0x28),
        "epidemic" => RGBColor(0x1f, 0x77, 0xb4),
        "spray_and_wait" => RGBColor(0x2c, 0xa0, 0x2c),
        "direct" => RGBColor(0x94, 0x67, 0xbd),
        _ => RGBColor(0x33, 0x33, 0x33),
    }
}

/// A plain-text table of metrics per protocol.
pub fn table(m: &BTreeMap<&'static str, Metrics>) -> String {
    let mut s = String::from(
        "| protocol | delivery | median s | mean s | p95 s | overhead | bytes/delivered | RMR | peak buffer B | undelivered |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for name in PROTOCOLS {
        let Some(x) = m.get(name) else { continue };
        let rmr = x
            .relative_message_redundancy
            .map_or("-".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(
            s,
            "| {name} | {:.4} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {rmr} | {} | {} |",
            x.delivery_ratio,
            x.latency_median_s,
            x.latency_mean_s,
            x.latency_p95_s,
            x.overhead_ratio,
            x.bytes_per_delivered,
            x.peak_buffer_bytes,
            x.undelivered_at_end
        );
    }
    s
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn delivery_over_time(path: &Path, c: &Comparison) -> PlotResult {
    let end_s = c
        .outcomes
        .values()
        .flat_map(|o| o.pairs.iter().map(|(t, d)| d.unwrap_or(*t)))
        .max()
        .unwrap_or(1) as f64
        / 1000.0;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Delivery ratio over time", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..end_s.max(1.0) / 3600.0, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("simulated hours")
        .y_desc("delivered / created")
        .draw()?;
    for name in PROTOCOLS {
        let Some(o) = c.outcomes.get(name) else {
            continue;
        };
        let total = o.pairs.len().max(1) as f64;
        let mut times: Vec<u64> = o.pairs.iter().filter_map(|(_, d)| *d).collect();
        times.sort_unstable();
        let mut pts = vec![(0.0, 0.0)];
        for (k, t) in times.iter().enumerate() {
            pts.push((*t as f64 / 3_600_000.0, (k + 1) as f64 / total));
        }
        pts.push((end_s / 3600.0, times.len() as f64 / total));
        let col = colour(name);
        chart
            .draw_series(LineSeries::new(pts, col.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn latency_cdf(path: &Path, c: &Comparison) -> PlotResult {
    let max = c
        .outcomes
        .values()
        .filter_map(|o| o.latencies_s().last().copied())
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency CDF (delivered pairs)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..max / 60.0, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("latency, minutes")
        .y_desc("fraction of delivered")
        .draw()?;
    for name in PROTOCOLS {
        let Some(o) = c.outcomes.get(name) else {
            continue;
        };
        let l = o.latencies_s();
        let n = l.len().max(1) as f64;
        let pts: Vec<(f64, f64)> = l
            .iter()
            .enumerate()
            .map(|(k, s)| (s / 60.0, (k + 1) as f64 / n))
            .collect();
        let col = colour(name);
        chart
            .draw_series(LineSeries::new(pts, col.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

fn overhead_bars(path: &Path, runs: &[(u64, &Comparison)]) -> PlotResult {
    let names: Vec<&str> = PROTOCOLS
        .iter()
        .copied()
        .filter(|n| *n != "oracle")
        .collect();
    let mut vals: Vec<(usize, usize, f64)> = Vec::new();
    for (r, (_, c)) in runs.iter().enumerate() {
        for (k, n) in names.iter().enumerate() {
            if let Some(o) = c.outcomes.get(n) {
                vals.push((k, r, o.metrics().overhead_ratio.max(0.0)));
            }
        }
    }
    let top = vals.iter().map(|v| v.2).fold(1.0f64, f64::max) * 1.1;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Overhead ratio per protocol (one bar per seed)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..names.len() as f64, 0f64..top)?;
    let labels = names.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len() * 2 + 1)
        .x_label_formatter(&move |x| {
            let k = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 {
                labels.get(k).map_or(String::new(), |s| s.to_string())
            } else {
                String::new()
            }
        })
        .y_desc("(relayed - delivered) / delivered")
        .draw()?;
    let nr = runs.len().max(1) as f64;
    chart.draw_series(vals.iter().map(|&(k, r, v)| {
        let w = 0.8 / nr;
        let x0 = k as f64 + 0.1 + r as f64 * w;
        Rectangle::new([(x0, 0.0), (x0 + w * 0.9, v)], colour(names[k]).filled())
    }))?;
    root.present()?;
    Ok(())
}

/// The goals for meshrelay against the baselines, per seed.
pub fn goals(m: &BTreeMap<&'static str, Metrics>) -> String {
    let (Some(me), Some(or), Some(ep)) = (m.get("meshrelay"), m.get("oracle"), m.get("epidemic"))
    else {
        return String::new();
    };
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    let d = if or.delivery_ratio > 0.0 {
        me.delivery_ratio / or.delivery_ratio
    } else {
        0.0
    };
    let o = if ep.overhead_ratio > 0.0 {
        me.overhead_ratio / ep.overhead_ratio
    } else {
        f64::INFINITY
    };
    let l = if or.latency_median_s > 0.0 {
        format!("{:.2}x", me.latency_median_s / or.latency_median_s)
    } else {
        "n/a (oracle median 0 s)".into()
    };
    format!(
        "| goal | measured | verdict |\n| --- | --- | --- |\n\
         | delivery >= 98% of oracle | {:.1}% | {} |\n\
         | overhead <= 1/10 of epidemic | {:.2}x epidemic ({:.2} vs {:.2}) | {} |\n\
         | median latency <= 1.3x oracle | {l} ({:.1} s vs {:.1} s) | {} |\n",
        d * 100.0,
        verdict(d >= 0.98),
        o,
        me.overhead_ratio,
        ep.overhead_ratio,
        verdict(o <= 0.1),
        me.latency_median_s,
        or.latency_median_s,
        verdict(me.latency_median_s <= 1.3 * or.latency_median_s),
    )
}

/// Writes `REPORT.md` and plots for one scenario over one or more seeds.
pub fn write(
    dir: &Path,
    sc: &Scenario,
    runs: &[(u64, &Comparison)],
    wall_s: f64,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let io = |e: Box<dyn std::error::Error>| std::io::Error::other(e.to_string());
    let mut md = format!("# {}\n\n{}\n\n", sc.name, sc.description);
    let _ = writeln!(
        md,
        "Nodes: {}; simulated {:.1} h; seeds {}. Rerun: `cargo run --release -p meshrelay-sim -- run sim/scenarios/{}.toml --seeds {} --report DIR`.\n",
        sc.population.iter().map(|p| p.count).sum::<usize>(),
        sc.duration_s / 3600.0,
        runs.iter()
            .map(|(s, _)| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        sc.name,
        runs.iter()
            .map(|(s, _)| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    for (seed, c) in runs {
        let m = c.metrics();
        let _ = writeln!(md, "## Seed {seed}\n\n{}\n{}", table(&m), goals(&m));
        let a = format!("delivery-{seed}.svg");
        let b = format!("latency-cdf-{seed}.svg");
        delivery_over_time(&dir.join(&a), c).map_err(io)?;
        latency_cdf(&dir.join(&b), c).map_err(io)?;
        let _ = writeln!(md, "![delivery over time]({a})\n\n![latency CDF]({b})\n");
        let walls: Vec<String> = c
            .wall_s
            .iter()
            .map(|(k, v)| format!("{k} {v:.1} s"))
            .collect();
        let _ = writeln!(
            md,
            "Wall time (seeds ran in parallel threads on a shared 2-core machine): {}.\n",
            walls.join(", ")
        );
        if let Some(o) = c.outcomes.get("meshrelay") {
            let _ = writeln!(
                md,
                "meshrelay airtime by frame type: {}.\n",
                airtime_shares(o)
            );
        }
        let _ = writeln!(
            md,
            "Invariants: {:?} (ok: {}).\n",
            c.invariants,
            c.invariants.ok()
        );
    }
    overhead_bars(&dir.join("overhead.svg"), runs).map_err(io)?;
    let _ = writeln!(
        md,
        "## Overhead\n\n![overhead per protocol](overhead.svg)\n"
    );
    let _ = writeln!(md, "Total wall time: {wall_s:.1} s.");
    std::fs::write(dir.join("REPORT.md"), md)
}

/// Each frame type's share of a run's bytes on air, e.g. `hello 42.5%, …`.
pub fn airtime_shares(o: &Outcome) -> String {
    let total = o.bytes_on_air.max(1) as f64;
    o.airtime_by_frame
        .iter()
        .map(|(k, b)| format!("{k} {:.1}%", *b as f64 * 100.0 / total))
        .collect::<Vec<_>>()
        .join(", ")
}
