//! Scenario files (`sim/scenarios/*.toml`): area, populations, links,
//! workload and protocol settings. Unknown keys are refused.

use std::path::Path;

use meshrelay::proto::{LinkKind, NodeConfig};
use meshrelay::store::StoreConfig;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;

use crate::baseline::LinkModel;
use crate::compare::Settings;
use crate::feed::ContactFeed;
use crate::mobility::{Population, Ranges, contacts, contacts_by_step, draw_moves};
use crate::net::LinkParams;
use crate::trace::{Contact, Message, Workload};

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name for reports.
    pub name: String,
    /// What it models.
    #[serde(default)]
    pub description: String,
    /// Default seed (`--seed` overrides).
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Simulated time, s.
    pub duration_s: f64,
    /// Mobility step, s.
    #[serde(default = "d_step")]
    pub step_s: f64,
    /// Area width, m.
    pub width_m: f64,
    /// Area height, m.
    pub height_m: f64,
    /// Link kinds.
    #[serde(default)]
    pub links: Links,
    /// Who is there and how they move.
    pub population: Vec<Population>,
    /// What they send.
    pub workload: WorkloadSpec,
    /// Protocol settings.
    #[serde(default)]
    pub protocols: Protocols,
    /// Real rooms under a Sybil flood (`crate::sybil`): when present, `run`
    /// runs the scenario's rooms through the device core's operations,
    /// with and without the hostile nodes' flood, instead of the protocol
    /// comparison.
    #[serde(default)]
    pub sybil: Option<crate::sybil::SybilSpec>,
    /// Real rooms with and without receipts (`crate::receipts`): when
    /// present, `run` compares the two instead of the protocols.
    #[serde(default)]
    pub receipts: Option<crate::receipts::ReceiptsSpec>,
    /// Real rooms text only and with photos (`crate::photos`): when
    /// present, `run` compares the two instead of the protocols.
    #[serde(default)]
    pub photos: Option<crate::photos::PhotosSpec>,
}

fn d_seed() -> u64 {
    1
}
fn d_step() -> f64 {
    1.0
}

/// One link kind.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Range, m.
    pub range_m: f64,
    /// Bytes per second per direction.
    pub bytes_per_s: u64,
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Largest datagram.
    pub mtu: usize,
    /// Probability that one transmission of a datagram is lost (repeated
    /// by the link layer: costs airtime, not data). Default 0.
    #[serde(default)]
    pub loss: f64,
}

/// Both link kinds.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Links {
    /// Bluetooth LE.
    pub ble: LinkSpec,
    /// LAN (Wi-Fi between gateways and relays).
    pub lan: LinkSpec,
}

impl Default for Links {
    fn default() -> Self {
        let b = LinkParams::ble();
        let l = LinkParams::lan();
        Self {
            ble: LinkSpec {
                range_m: 30.0,
                bytes_per_s: b.bytes_per_s,
                latency_ms: b.latency_ms,
                mtu: b.mtu,
                loss: 0.0,
            },
            lan: LinkSpec {
                range_m: 100.0,
                bytes_per_s: l.bytes_per_s,
                latency_ms: l.latency_ms,
                mtu: l.mtu,
                loss: 0.0,
            },
        }
    }
}

/// Messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// One direct message every this many seconds, network-wide (0: none).
    #[serde(default)]
    pub direct_interval_s: f64,
    /// Room broadcasts: number of rooms (0: none).
    #[serde(default)]
    pub rooms: usize,
    /// Members per room.
    #[serde(default)]
    pub room_members: usize,
    /// One room message every this many seconds, network-wide.
    #[serde(default)]
    pub room_interval_s: f64,
    /// Payload bytes.
    #[serde(default = "d_size")]
    pub size_bytes: usize,
    /// Time to live, minutes (absent: no expiry).
    #[serde(default)]
    pub ttl_min: Option<f64>,
    /// A hostile node sends this many times an honest node's rate.
    #[serde(default = "d_mult")]
    pub hostile_rate_multiplier: f64,
    /// No new messages in the last this many seconds (time to deliver).
    #[serde(default)]
    pub quiet_tail_s: f64,
}

fn d_size() -> usize {
    300
}
fn d_mult() -> f64 {
    100.0
}

/// Protocol settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// L for spray-and-wait.
    #[serde(default = "d_copies")]
    pub spray_copies: u32,
    /// meshrelay: eager push fanout.
    #[serde(default)]
    pub eager_fanout: Option<usize>,
    /// meshrelay: anti-entropy interval, ms.
    #[serde(default)]
    pub anti_entropy_interval_ms: Option<u64>,
    /// meshrelay: store budget, bytes.
    #[serde(default)]
    pub store_budget_bytes: Option<u64>,
    /// meshrelay: stranger (relay) pool, bytes: how much of others'
    /// traffic a node carries. Moves meshrelay along the copies/latency
    /// frontier.
    #[serde(default)]
    pub stranger_pool_bytes: Option<u64>,
    /// meshrelay: copy budget for carried events (`NodeConfig::copy_budget`,
    /// binary spray; 0 = none, epidemic carrying). Moves meshrelay along
    /// the copies/latency frontier.
    #[serde(default)]
    pub copy_budget: Option<u8>,
    /// meshrelay: whether the companion and group rules choose carriers
    /// (`protocol-spec/wire.md`, "Where copies go"). Default on, as in the
    /// daemon; off is the baseline they are measured against.
    #[serde(default)]
    pub spray_rules: Option<bool>,
}

fn d_copies() -> u32 {
    8
}

impl Default for Protocols {
    fn default() -> Self {
        Self {
            spray_copies: d_copies(),
            eager_fanout: None,
            anti_entropy_interval_ms: None,
            store_budget_bytes: None,
            stranger_pool_bytes: None,
            copy_budget: None,
            spray_rules: None,
        }
    }
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Unreadable file.
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    /// Bad TOML or unknown keys.
    #[error("parsing scenario: {0}")]
    Toml(#[from] toml::de::Error),
    /// Inconsistent values.
    #[error("invalid scenario: {0}")]
    Invalid(&'static str),
}

impl Scenario {
    /// Loads a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::Io(path.display().to_string(), e))?;
        Self::parse(&text)
    }

    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text)?;
        if !(s.duration_s > 0.0 && s.step_s > 0.0 && s.width_m > 0.0 && s.height_m > 0.0) {
            return Err(ScenarioError::Invalid(
                "duration, step and area must be > 0",
            ));
        }
        if s.population.iter().map(|p| p.count).sum::<usize>() < 2 {
            return Err(ScenarioError::Invalid("need at least 2 nodes"));
        }
        for l in [s.links.ble, s.links.lan] {
            if !(0.0..1.0).contains(&l.loss) {
                return Err(ScenarioError::Invalid("link loss must be in [0, 1)"));
            }
        }
        for p in &s.population {
            if p.uplink_windows_s
                .iter()
                .any(|w| w[0].is_nan() || w[1].is_nan() || w[0] >= w[1])
            {
                return Err(ScenarioError::Invalid(
                    "uplink windows must be [start, end] with start < end",
                ));
            }
        }
        if s.protocols
            .copy_budget
            .is_some_and(|c| c > meshrelay::wire::MAX_COPY_BUDGET)
        {
            return Err(ScenarioError::Invalid("copy_budget must be at most 128"));
        }
        if s.workload.rooms > 0 && s.workload.room_members < 2 {
            return Err(ScenarioError::Invalid("rooms need at least 2 members"));
        }
        Ok(s)
    }

    /// The link model.
    pub fn link_model(&self) -> LinkModel {
        let p = |l: LinkSpec, kind| LinkParams {
            kind,
            bytes_per_s: l.bytes_per_s,
            latency_ms: l.latency_ms,
            mtu: l.mtu,
            loss: l.loss,
        };
        LinkModel {
            ble: p(self.links.ble, LinkKind::Ble),
            lan: p(self.links.lan, LinkKind::Lan),
        }
    }

    /// Comparison settings for a seed.
    pub fn settings(&self, seed: u64) -> Settings {
        let mut node = NodeConfig::default();
        if let Some(f) = self.protocols.eager_fanout {
            node.eager_fanout = f;
        }
        if let Some(i) = self.protocols.anti_entropy_interval_ms {
            node.anti_entropy_interval_ms = i;
        }
        if let Some(c) = self.protocols.copy_budget {
            node.copy_budget = c;
        }
        if self.protocols.spray_rules == Some(false) {
            node.companion_link_ms = 0;
            node.group_window_ms = 0;
        }
        let mut store = self
            .protocols
            .store_budget_bytes
            .map_or_else(StoreConfig::default, StoreConfig::with_budget);
        if let Some(pool) = self.protocols.stranger_pool_bytes {
            // The store's default shares: a link a quarter, a key a 16th.
            store.stranger_pool_bytes = pool.min(store.budget_bytes);
            store.link_share_bytes = store.stranger_pool_bytes / 4;
            store.key_share_bytes = store.stranger_pool_bytes / 16;
        }
        Settings {
            model: self.link_model(),
            node,
            store,
            spray_copies: self.protocols.spray_copies,
            seed,
        }
    }

    /// The hostile nodes' indices (population order, as in
    /// [`Scenario::workload`]).
    pub fn hostile_nodes(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = 0;
        for p in &self.population {
            for _ in 0..p.count {
                if p.hostile {
                    out.push(i);
                }
                i += 1;
            }
        }
        out
    }

    /// Moves the populations and draws the messages.
    pub fn workload(&self, seed: u64) -> Workload {
        let mut rng = moves_rng(seed);
        let contacts = contacts(
            &self.population,
            (self.width_m, self.height_m),
            self.ranges(),
            self.duration_s,
            self.step_s,
            &mut rng,
        );
        self.draw_messages(rng, contacts)
    }

    /// [`Self::workload`] with its contacts still being found: the
    /// workload (its `contacts` empty) and a feed that hands them over in
    /// time order while a second thread finds them. The messages are drawn
    /// after the same moves from the same random stream, so both are
    /// exactly those of [`Self::workload`].
    pub fn workload_fed(&self, seed: u64) -> (Workload, ContactFeed) {
        let mut rng = moves_rng(seed);
        let area = (self.width_m, self.height_m);
        draw_moves(
            &self.population,
            area,
            self.duration_s,
            self.step_s,
            &mut rng,
        );
        let (pops, ranges, times) = (
            self.population.clone(),
            self.ranges(),
            (self.duration_s, self.step_s),
        );
        let feed = ContactFeed::spawn(move |each| {
            // The same stream from its start: the same moves.
            let mut rng = moves_rng(seed);
            // One thread: the simulation runs on the other core.
            contacts_by_step(&pops, area, ranges, times, &mut rng, 1, each);
        });
        (self.draw_messages(rng, Vec::new()), feed)
    }

    fn ranges(&self) -> Ranges {
        Ranges {
            ble_m: self.links.ble.range_m,
            lan_m: self.links.lan.range_m,
        }
    }

    /// The rest of the workload, drawn after the moves: gateways, rooms
    /// and messages.
    fn draw_messages(&self, mut rng: ChaCha8Rng, contacts: Vec<Contact>) -> Workload {
        let mut backhaul = Vec::new();
        let mut honest = Vec::new();
        let mut hostile = Vec::new();
        let mut i = 0;
        for p in &self.population {
            for _ in 0..p.count {
                // Gateways with an uplink region or time windows come and
                // go with the contacts; the others are always linked.
                if p.backhaul && !p.intermittent_uplink() {
                    backhaul.push(i);
                }
                if p.hostile {
                    hostile.push(i);
                } else {
                    honest.push(i);
                }
                i += 1;
            }
        }
        let n = i;
        let wl = &self.workload;
        let end_ms = (self.duration_s * 1000.0) as u64;
        let last_ms = end_ms.saturating_sub((wl.quiet_tail_s * 1000.0) as u64);
        let ttl_ms = wl.ttl_min.map(|m| (m * 60_000.0) as u64);
        let mut rooms: Vec<Vec<usize>> = Vec::new();
        for _ in 0..wl.rooms {
            let mut members: Vec<usize> = Vec::new();
            while members.len() < wl.room_members.min(honest.len()) {
                let c = honest[rng.random_range(0..honest.len())];
                if !members.contains(&c) {
                    members.push(c);
                }
            }
            members.sort_unstable();
            rooms.push(members);
        }
        let mut messages = Vec::new();
        let mut push = |t: f64, from: usize, to: Vec<usize>, room, hostile: bool, k: usize| {
            messages.push(Message {
                name: format!("M{k}"),
                t_ms: (t * 1000.0) as u64,
                size: wl.size_bytes,
                from,
                to,
                ttl_ms,
                room,
                hostile,
            });
        };
        let mut k = 0;
        if wl.direct_interval_s > 0.0 && honest.len() >= 2 {
            let mut t = wl.direct_interval_s;
            while t * 1000.0 < last_ms as f64 {
                let a = honest[rng.random_range(0..honest.len())];
                let mut b = a;
                while b == a {
                    b = honest[rng.random_range(0..honest.len())];
                }
                push(t, a, vec![b], None, false, k);
                k += 1;
                t += wl.direct_interval_s;
            }
            // Hostile nodes: the per-node honest rate times the multiplier.
            let per_node = wl.direct_interval_s * honest.len() as f64;
            let interval = per_node / wl.hostile_rate_multiplier.max(1e-9);
            for &h in &hostile {
                let mut t = rng.random::<f64>() * interval;
                while t * 1000.0 < last_ms as f64 {
                    let b = honest[rng.random_range(0..honest.len())];
                    push(t, h, vec![b], None, true, k);
                    k += 1;
                    t += interval;
                }
            }
        }
        if wl.rooms > 0 && wl.room_interval_s > 0.0 {
            let mut t = wl.room_interval_s;
            while t * 1000.0 < last_ms as f64 {
                let r = rng.random_range(0..rooms.len());
                let from = rooms[r][rng.random_range(0..rooms[r].len())];
                let to = rooms[r].iter().copied().filter(|&m| m != from).collect();
                push(t, from, to, Some(r), false, k);
                k += 1;
                t += wl.room_interval_s;
            }
        }
        messages.sort_by_key(|m| m.t_ms);
        Workload {
            nodes: n,
            contacts,
            messages,
            end_ms,
            rooms,
            backhaul,
        }
    }
}

/// The random stream of a seed's moves, and then of its messages.
fn moves_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x6d6f_6269_6c69_7479)
}
