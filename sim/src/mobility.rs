//! Movement models and contacts from radio range.
//!
//! Positions advance in fixed steps of virtual time. Two nodes are in
//! contact while within range: LAN range if both carry a LAN radio
//! (gateway trucks, fixed relays), otherwise BLE range. Models:
//!
//! * random waypoint: pick a point in the region uniformly, walk to it at
//!   a uniform speed in `[speed_min, speed_max]`, pause, repeat;
//! * static grid and line of relays;
//! * groups: a leader walks random waypoints, members keep a fixed offset
//!   within `group_radius_m` (a team moving together);
//! * a region a population is confined to until `merge_at_s` (then the
//!   whole area): partitions that merge.
//!
//! Gateways (`backhaul`) reach the homeserver; the simulator stands in for
//! it by linking every two gateways whose uplinks are up (a LAN-class
//! link). An uplink is up always, or only while the gateway is inside its
//! `uplink_region` and/or within one of its `uplink_windows_s`.

use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use serde::Deserialize;

use crate::trace::Contact;

/// How a population moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mobility {
    /// Random waypoint.
    #[default]
    Waypoint,
    /// Fixed, on a grid over the region.
    Grid,
    /// Fixed, on a horizontal line through the region's middle.
    Line,
    /// Groups following a random-waypoint leader.
    Group,
}

/// A set of nodes that move alike.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// Name for reports.
    pub name: String,
    /// How many nodes.
    pub count: usize,
    /// Movement model.
    #[serde(default)]
    pub mobility: Mobility,
    /// Slowest walking speed, m/s.
    #[serde(default = "d_speed_min")]
    pub speed_min_mps: f64,
    /// Fastest walking speed, m/s.
    #[serde(default = "d_speed_max")]
    pub speed_max_mps: f64,
    /// Pause at each waypoint, s.
    #[serde(default = "d_pause")]
    pub pause_s: f64,
    /// Spacing for `line`, m.
    #[serde(default = "d_spacing")]
    pub spacing_m: f64,
    /// Members per group for `group`.
    #[serde(default = "d_group")]
    pub group_size: usize,
    /// Members' distance from their leader for `group`, m.
    #[serde(default = "d_radius")]
    pub group_radius_m: f64,
    /// `[x0, y0, x1, y1]` the population is confined to (default: area).
    #[serde(default)]
    pub region: Option<[f64; 4]>,
    /// When the region stops applying, s.
    #[serde(default)]
    pub merge_at_s: Option<f64>,
    /// Carries a LAN radio (LAN range to other LAN nodes).
    #[serde(default)]
    pub lan: bool,
    /// Reaches a homeserver: linked to every other backhaul node whose
    /// uplink is up (always, unless `uplink_region` or `uplink_windows_s`
    /// say otherwise).
    #[serde(default)]
    pub backhaul: bool,
    /// `[x0, y0, x1, y1]`: a backhaul node's uplink works only in here
    /// (satellite dish deployed at a site, cell coverage).
    #[serde(default)]
    pub uplink_region: Option<[f64; 4]>,
    /// `[[start_s, end_s], ...]`: a backhaul node's uplink works only in
    /// these time windows (a truck that parks and connects on schedule).
    #[serde(default)]
    pub uplink_windows_s: Vec<[f64; 2]>,
    /// Hostile: sends at the workload's hostile rate; not scored.
    #[serde(default)]
    pub hostile: bool,
}

impl Population {
    /// Whether this is a backhaul population whose uplink comes and goes.
    pub fn intermittent_uplink(&self) -> bool {
        self.backhaul && (self.uplink_region.is_some() || !self.uplink_windows_s.is_empty())
    }

    /// Whether a backhaul node of this population at `pos` has its uplink
    /// up at time `t` (s).
    fn uplink_up(&self, pos: (f64, f64), t: f64) -> bool {
        let in_region = self
            .uplink_region
            .is_none_or(|r| pos.0 >= r[0] && pos.0 <= r[2] && pos.1 >= r[1] && pos.1 <= r[3]);
        let in_window = self.uplink_windows_s.is_empty()
            || self.uplink_windows_s.iter().any(|w| t >= w[0] && t < w[1]);
        self.backhaul && in_region && in_window
    }
}

fn d_speed_min() -> f64 {
    0.5
}
fn d_speed_max() -> f64 {
    1.5
}
fn d_pause() -> f64 {
    60.0
}
fn d_spacing() -> f64 {
    25.0
}
fn d_group() -> usize {
    5
}
fn d_radius() -> f64 {
    10.0
}

#[derive(Debug, Clone, Copy)]
struct Walker {
    pos: (f64, f64),
    target: (f64, f64),
    speed: f64,
    pause_until: f64,
}

struct NodeMove {
    pop: usize,
    walker: Walker,
    /// For group members: (leader node index, offset).
    follow: Option<(usize, (f64, f64))>,
    fixed: bool,
    lan: bool,
}

fn region_of(p: &Population, area: (f64, f64), t: f64) -> [f64; 4] {
    match (p.region, p.merge_at_s) {
        (Some(_), Some(m)) if t >= m => [0.0, 0.0, area.0, area.1],
        (Some(r), _) => r,
        _ => [0.0, 0.0, area.0, area.1],
    }
}

fn rand_point(rng: &mut ChaCha8Rng, r: [f64; 4]) -> (f64, f64) {
    (
        r[0] + rng.random::<f64>() * (r[2] - r[0]).max(0.0),
        r[1] + rng.random::<f64>() * (r[3] - r[1]).max(0.0),
    )
}

/// Link ranges, m.
#[derive(Debug, Clone, Copy)]
pub struct Ranges {
    /// BLE range.
    pub ble_m: f64,
    /// LAN range between two LAN-capable nodes.
    pub lan_m: f64,
}

/// Nodes bucketed by square cell, rebuilt each step by a counting sort:
/// a neighbour search reads the nine cells around a node as slices (a hash
/// map of cells cost most of a 10,000-node run's contact generation).
struct CellGrid {
    cell: f64,
    cols: i64,
    rows: i64,
    /// `start[k]..start[k + 1]` indexes `order` for cell `k`.
    start: Vec<usize>,
    /// Node indices, by cell, ascending within a cell.
    order: Vec<usize>,
    /// Each node's cell index of the last fill.
    of: Vec<usize>,
    /// Scratch: the next free slot of each cell while filling.
    next: Vec<usize>,
}

impl CellGrid {
    fn new(area: (f64, f64), cell: f64) -> Self {
        let cols = (area.0 / cell).floor().max(0.0) as i64 + 1;
        let rows = (area.1 / cell).floor().max(0.0) as i64 + 1;
        CellGrid {
            cell,
            cols,
            rows,
            start: vec![0; (cols * rows) as usize + 1],
            order: Vec::new(),
            of: Vec::new(),
            next: Vec::new(),
        }
    }

    /// The cell of `pos` (positions past the area's edges fall in its edge
    /// cells; distances are checked exactly anyway).
    fn cell_of(&self, pos: (f64, f64)) -> (i64, i64) {
        (
            ((pos.0 / self.cell) as i64).clamp(0, self.cols - 1),
            ((pos.1 / self.cell) as i64).clamp(0, self.rows - 1),
        )
    }

    fn fill(&mut self, positions: impl Iterator<Item = (f64, f64)>) {
        self.of.clear();
        self.start.iter_mut().for_each(|s| *s = 0);
        for pos in positions {
            let (x, y) = self.cell_of(pos);
            let k = (y * self.cols + x) as usize;
            self.of.push(k);
            self.start[k + 1] += 1;
        }
        for k in 1..self.start.len() {
            self.start[k] += self.start[k - 1];
        }
        self.order.clear();
        self.order.resize(self.of.len(), 0);
        self.next.clear();
        self.next.extend_from_slice(&self.start);
        for (i, &k) in self.of.iter().enumerate() {
            self.order[self.next[k]] = i;
            self.next[k] += 1;
        }
    }

    /// The nodes in cell `(x, y)`, none outside the grid.
    fn members(&self, x: i64, y: i64) -> &[usize] {
        if x < 0 || y < 0 || x >= self.cols || y >= self.rows {
            return &[];
        }
        let k = (y * self.cols + x) as usize;
        &self.order[self.start[k]..self.start[k + 1]]
    }
}

/// Pairs (i, j), i < j, with i in `of`, within BLE range (or LAN range
/// when both have LAN), and whether the link is LAN.
fn pairs_in_range(
    nodes: &[NodeMove],
    grid: &CellGrid,
    ranges: Ranges,
    of: std::ops::Range<usize>,
) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    for i in of {
        let n = &nodes[i];
        let c = grid.cell_of(n.walker.pos);
        for gx in c.0 - 1..=c.0 + 1 {
            for gy in c.1 - 1..=c.1 + 1 {
                for &j in grid.members(gx, gy) {
                    if j <= i {
                        continue;
                    }
                    let m = &nodes[j];
                    let (dx, dy) = (
                        n.walker.pos.0 - m.walker.pos.0,
                        n.walker.pos.1 - m.walker.pos.1,
                    );
                    let d = (dx * dx + dy * dy).sqrt();
                    let lan = n.lan && m.lan && d <= ranges.lan_m;
                    if lan || d <= ranges.ble_m {
                        out.push((i, j, lan));
                    }
                }
            }
        }
    }
    out
}

/// Moves every population for `duration_s` in steps of `step_s` and
/// returns the contact changes, sorted by time.
pub fn contacts(
    pops: &[Population],
    area: (f64, f64),
    ranges: Ranges,
    duration_s: f64,
    step_s: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<Contact> {
    let mut out = Vec::new();
    contacts_by_step(pops, area, ranges, (duration_s, step_s), rng, 2, |c| {
        out.extend_from_slice(c)
    });
    out
}

/// Makes exactly the random draws of [`contacts`] with the same arguments
/// (the same moves), without finding contacts: what follows the moves in
/// the same random stream (the workload) can be drawn before the contacts
/// are known (`feed.rs`).
pub fn draw_moves(
    pops: &[Population],
    area: (f64, f64),
    duration_s: f64,
    step_s: f64,
    rng: &mut ChaCha8Rng,
) {
    let mut nodes = place(pops, area, rng);
    for s in 0..=steps(duration_s, step_s) {
        advance(&mut nodes, pops, area, s as f64 * step_s, step_s, rng);
    }
}

/// The contact changes of [`contacts`], handed to `each` step by step
/// (in time order; a step without changes is skipped). Each step's pairs
/// in range are found by `threads` threads (1 or 2; the result is the
/// same).
pub fn contacts_by_step(
    pops: &[Population],
    area: (f64, f64),
    ranges: Ranges,
    (duration_s, step_s): (f64, f64),
    rng: &mut ChaCha8Rng,
    threads: usize,
    mut each: impl FnMut(&[Contact]),
) {
    let mut nodes = place(pops, area, rng);
    let reach = ranges.ble_m.max(if nodes.iter().any(|n| n.lan) {
        ranges.lan_m
    } else {
        0.0
    });
    let mut grid = CellGrid::new(area, reach.max(1.0));
    // Pairs in range, sorted by (a, b), with whether they are a LAN link.
    let mut live: Vec<(usize, usize, bool)> = Vec::new();
    let mut now: Vec<(usize, usize, bool)> = Vec::new();
    let mut out = Vec::new();
    for s in 0..=steps(duration_s, step_s) {
        let t = s as f64 * step_s;
        advance(&mut nodes, pops, area, t, step_s, rng);
        // Spatial grid: cells of the longest range, nodes bucketed by cell.
        grid.fill(nodes.iter().map(|n| n.walker.pos));
        // With two threads, each takes half of the nodes; the pairs are
        // sorted below, so the split does not change the result.
        now.clear();
        if threads > 1 {
            let half = nodes.len() / 2;
            let (lo, hi) = std::thread::scope(|sc| {
                let h = sc.spawn(|| pairs_in_range(&nodes, &grid, ranges, half..nodes.len()));
                let lo = pairs_in_range(&nodes, &grid, ranges, 0..half);
                (
                    lo,
                    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
                )
            });
            now.extend(lo);
            now.extend(hi);
        } else {
            now.extend(pairs_in_range(&nodes, &grid, ranges, 0..nodes.len()));
        }
        // Gateways with their uplinks up are linked through the homeserver.
        let up: Vec<usize> = (0..nodes.len())
            .filter(|&i| pops[nodes[i].pop].uplink_up(nodes[i].walker.pos, t))
            .collect();
        for (k, &i) in up.iter().enumerate() {
            for &j in &up[k + 1..] {
                now.push((i, j, true));
            }
        }
        // The grid lists a pair once; an uplink pair it also lists is a
        // LAN link.
        now.sort_unstable();
        now.dedup_by(|later, first| {
            let same = (later.0, later.1) == (first.0, first.1);
            if same {
                first.2 |= later.2;
            }
            same
        });
        let t_ms = (t * 1000.0).round() as u64;
        let find = |v: &[(usize, usize, bool)], a: usize, b: usize| {
            v.binary_search_by_key(&(a, b), |p| (p.0, p.1))
                .ok()
                .and_then(|k| v.get(k))
                .map(|p| p.2)
        };
        for &(a, b, lan) in &live {
            if find(&now, a, b) != Some(lan) {
                out.push(Contact {
                    t_ms,
                    a,
                    b,
                    up: false,
                    lan,
                });
            }
        }
        for &(a, b, lan) in &now {
            if find(&live, a, b) != Some(lan) {
                out.push(Contact {
                    t_ms,
                    a,
                    b,
                    up: true,
                    lan,
                });
            }
        }
        std::mem::swap(&mut live, &mut now);
        if !out.is_empty() {
            each(&out);
            out.clear();
        }
    }
}

fn steps(duration_s: f64, step_s: f64) -> u64 {
    (duration_s / step_s).ceil() as u64
}

/// Every node's starting point and movement (random draws in node order).
fn place(pops: &[Population], area: (f64, f64), rng: &mut ChaCha8Rng) -> Vec<NodeMove> {
    let mut nodes: Vec<NodeMove> = Vec::new();
    for (pi, p) in pops.iter().enumerate() {
        let r = region_of(p, area, 0.0);
        let first = nodes.len();
        let cols = (p.count as f64).sqrt().ceil().max(1.0) as usize;
        for k in 0..p.count {
            let pos = match p.mobility {
                Mobility::Grid => {
                    let rows = p.count.div_ceil(cols).max(1);
                    let (cx, cy) = (k % cols, k / cols);
                    (
                        r[0] + (r[2] - r[0]) * (cx as f64 + 0.5) / cols as f64,
                        r[1] + (r[3] - r[1]) * (cy as f64 + 0.5) / rows as f64,
                    )
                }
                Mobility::Line => (r[0] + p.spacing_m * (k as f64 + 0.5), (r[1] + r[3]) / 2.0),
                _ => rand_point(rng, r),
            };
            let follow =
                (p.mobility == Mobility::Group && k % p.group_size.max(1) != 0).then(|| {
                    let leader = first + k - k % p.group_size.max(1);
                    let a = rng.random::<f64>() * std::f64::consts::TAU;
                    let d = rng.random::<f64>() * p.group_radius_m;
                    (leader, (a.cos() * d, a.sin() * d))
                });
            nodes.push(NodeMove {
                pop: pi,
                walker: Walker {
                    pos,
                    target: pos,
                    speed: 0.0,
                    pause_until: rng.random::<f64>() * p.pause_s,
                },
                follow,
                fixed: matches!(p.mobility, Mobility::Grid | Mobility::Line),
                lan: p.lan,
            });
        }
    }
    nodes
}

/// Moves every node to time `t`: walkers advance or draw their next
/// waypoint and speed, group members follow their leaders.
fn advance(
    nodes: &mut [NodeMove],
    pops: &[Population],
    area: (f64, f64),
    t: f64,
    step_s: f64,
    rng: &mut ChaCha8Rng,
) {
    for i in 0..nodes.len() {
        if nodes[i].fixed || nodes[i].follow.is_some() {
            continue;
        }
        let p = &pops[nodes[i].pop];
        let w = &mut nodes[i].walker;
        if t < w.pause_until {
            continue;
        }
        let (dx, dy) = (w.target.0 - w.pos.0, w.target.1 - w.pos.1);
        let d = (dx * dx + dy * dy).sqrt();
        let go = w.speed * step_s;
        if d <= go || w.speed == 0.0 {
            w.pos = w.target;
            if w.speed != 0.0 {
                w.pause_until = t + p.pause_s;
            }
            w.target = rand_point(rng, region_of(p, area, t));
            w.speed = p.speed_min_mps
                + rng.random::<f64>() * (p.speed_max_mps - p.speed_min_mps).max(0.0);
        } else {
            w.pos = (w.pos.0 + dx / d * go, w.pos.1 + dy / d * go);
        }
    }
    for i in 0..nodes.len() {
        if let Some((leader, off)) = nodes[i].follow {
            let lp = nodes[leader].walker.pos;
            nodes[i].walker.pos = (
                (lp.0 + off.0).clamp(0.0, area.0),
                (lp.1 + off.1).clamp(0.0, area.1),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::ChaCha8Rng;
    use rand::{RngExt, SeedableRng};

    use super::CellGrid;

    /// The grid's neighbour search finds exactly the pairs within range
    /// that a scan of every pair finds, edges and outliers included.
    #[test]
    fn the_grid_finds_every_pair_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (area, range) = ((300.0, 120.0), 30.0);
        let mut grid = CellGrid::new(area, range);
        for _ in 0..20 {
            // A few positions past the edges, as clamped followers may be.
            let pos: Vec<(f64, f64)> = (0..150)
                .map(|_| {
                    (
                        rng.random::<f64>() * 340.0 - 20.0,
                        rng.random::<f64>() * 160.0 - 20.0,
                    )
                })
                .collect();
            grid.fill(pos.iter().copied());
            let near = |i: usize, j: usize| {
                let (dx, dy) = (pos[i].0 - pos[j].0, pos[i].1 - pos[j].1);
                (dx * dx + dy * dy).sqrt() <= range
            };
            let mut found = Vec::new();
            for (i, &p) in pos.iter().enumerate() {
                let c = grid.cell_of(p);
                for gx in c.0 - 1..=c.0 + 1 {
                    for gy in c.1 - 1..=c.1 + 1 {
                        for &j in grid.members(gx, gy) {
                            if j > i && near(i, j) {
                                found.push((i, j));
                            }
                        }
                    }
                }
            }
            found.sort_unstable();
            let all: Vec<(usize, usize)> = (0..pos.len())
                .flat_map(|i| (i + 1..pos.len()).map(move |j| (i, j)))
                .filter(|&(i, j)| near(i, j))
                .collect();
            assert!(!all.is_empty());
            assert_eq!(found, all);
        }
    }
}
