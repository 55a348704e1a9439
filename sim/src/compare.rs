//! Runs meshrelay and every baseline on one workload, the same contacts and
//! the same link bandwidth, and collects their metrics.

use std::collections::BTreeMap;
use std::time::Instant;

use meshrelay::proto::NodeConfig;
use meshrelay::store::StoreConfig;

use crate::baseline::{LinkModel, Policy, run_baseline, run_oracle};
use crate::feed::ContactFeed;
use crate::metrics::{Metrics, Outcome};
use crate::relay::{Invariants, run_meshrelay};
use crate::trace::{Contact, Workload};

/// Protocol names, as JSON keys. A contract.
pub const PROTOCOLS: [&str; 5] = [
    "meshrelay",
    "epidemic",
    "spray_and_wait",
    "direct",
    "oracle",
];

/// Everything a comparison needs besides the workload.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Link kinds.
    pub model: LinkModel,
    /// meshrelay node tunables.
    pub node: NodeConfig,
    /// meshrelay store quota.
    pub store: StoreConfig,
    /// L for spray-and-wait.
    pub spray_copies: u32,
    /// The seed (meshrelay identities and node RNGs).
    pub seed: u64,
}

/// The results of one comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Outcome per protocol name.
    pub outcomes: BTreeMap<&'static str, Outcome>,
    /// meshrelay's invariants.
    pub invariants: Invariants,
    /// Wall time per protocol in seconds (stderr and reports only).
    pub wall_s: BTreeMap<&'static str, f64>,
}

impl Comparison {
    /// Metrics per protocol.
    pub fn metrics(&self) -> BTreeMap<&'static str, Metrics> {
        self.outcomes
            .iter()
            .map(|(k, o)| (*k, o.metrics()))
            .collect()
    }

    /// The JSON object printed by `run`: one entry per protocol. It is
    /// byte-identical for a seed (no wall times).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.metrics()).unwrap_or_else(|_| "{}".into())
    }

    /// The JSON object printed by `trace`: [`Comparison::json`] with each
    /// protocol's wall time in seconds added to its entry (`"wall_s"`).
    pub fn json_with_wall_s(&self) -> String {
        let mut v = serde_json::to_value(self.metrics()).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            for (name, entry) in map.iter_mut() {
                if let (Some(e), Some(s)) = (entry.as_object_mut(), self.wall_s.get(name.as_str()))
                {
                    e.insert("wall_s".into(), serde_json::json!(s));
                }
            }
        }
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into())
    }
}

/// Runs all protocols. `progress` gets meshrelay's fraction done.
pub fn compare(w: &Workload, s: &Settings, progress: &mut dyn FnMut(f64)) -> Comparison {
    compare_only(w, s, &PROTOCOLS, progress)
}

/// Runs the protocols named in `only` (names from [`PROTOCOLS`]; others
/// are ignored). `progress` gets meshrelay's fraction done.
pub fn compare_only(
    w: &Workload,
    s: &Settings,
    only: &[&str],
    progress: &mut dyn FnMut(f64),
) -> Comparison {
    let mut contacts = w.contacts.iter().copied();
    compare_on(w, &mut contacts, s, only, progress)
}

/// [`compare_only`] on a workload whose contacts are still being found:
/// meshrelay runs first, on the changes as `feed` hands them over, and the
/// other protocols on all of them. Returns the workload with its contacts
/// (none when only meshrelay ran: they are not kept) and how many contact
/// changes there were. The results are those of [`compare_only`] on the
/// same workload.
pub fn compare_fed(
    mut w: Workload,
    mut feed: ContactFeed,
    s: &Settings,
    only: &[&str],
    progress: &mut dyn FnMut(f64),
) -> (Workload, Comparison, usize) {
    let first: &[&str] = if only.contains(&MESHRELAY) {
        &[MESHRELAY]
    } else {
        &[]
    };
    let rest: Vec<&str> = only.iter().copied().filter(|p| *p != MESHRELAY).collect();
    feed.keep(!rest.is_empty());
    let mut c = compare_on(&w, &mut feed, s, first, progress);
    let (contacts, changes) = feed.finish();
    w.contacts = contacts;
    let others = compare_on(&w, &mut std::iter::empty(), s, &rest, progress);
    c.outcomes.extend(others.outcomes);
    c.wall_s.extend(others.wall_s);
    (w, c, changes)
}

const MESHRELAY: &str = "meshrelay";

/// Runs the protocols in `only`, meshrelay on the changes `contacts`
/// hands over and the others on `w.contacts`.
fn compare_on(
    w: &Workload,
    contacts: &mut dyn Iterator<Item = Contact>,
    s: &Settings,
    only: &[&str],
    progress: &mut dyn FnMut(f64),
) -> Comparison {
    let mut outcomes = BTreeMap::new();
    let mut wall_s = BTreeMap::new();
    let mut invariants = Invariants::default();
    if only.contains(&MESHRELAY) {
        let t = Instant::now();
        let (mesh, inv) = run_meshrelay(
            w,
            contacts,
            s.model,
            s.node.clone(),
            s.store,
            s.seed,
            progress,
        );
        wall_s.insert(MESHRELAY, t.elapsed().as_secs_f64());
        outcomes.insert(MESHRELAY, mesh);
        invariants = inv;
    }
    for (name, policy) in [
        ("epidemic", Policy::Epidemic),
        (
            "spray_and_wait",
            Policy::SprayAndWait {
                copies: s.spray_copies,
            },
        ),
        ("direct", Policy::Direct),
    ] {
        if !only.contains(&name) {
            continue;
        }
        let t = Instant::now();
        outcomes.insert(name, run_baseline(w, policy, s.model));
        wall_s.insert(name, t.elapsed().as_secs_f64());
    }
    if only.contains(&"oracle") {
        let t = Instant::now();
        outcomes.insert("oracle", run_oracle(w));
        wall_s.insert("oracle", t.elapsed().as_secs_f64());
    }
    Comparison {
        outcomes,
        invariants,
        wall_s,
    }
}
