//! Photos in real rooms (issue 20, `protocol-spec/attachments.md`): a
//! scenario with a `[photos]` table runs its real rooms twice with the same
//! seed, contacts and workload: text only, then with every `every`-th
//! message carrying a photo of `bytes`. Reported side by side: text
//! delivery and latency (goal: within 5% of the text-only run), the
//! photos' completion ratio and latency, and bytes on air.

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::sybil::{self, RunOpts, RunsTable, SybilOutcome, SybilSpec};

/// The `[photos]` table of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhotosSpec {
    /// No room message is sent before this: the invites spread first.
    pub warmup_s: f64,
    /// How often members read their changed rooms, ms.
    pub read_interval_ms: u64,
    /// Every this many messages carries a photo (10: 10% of messages).
    pub every: u64,
    /// A photo's size in bytes.
    pub bytes: usize,
}

/// Both runs, same seed.
#[derive(Debug, Clone, Serialize)]
pub struct PhotosComparison {
    /// The seed.
    pub seed: u64,
    /// Text only.
    pub text_only: SybilOutcome,
    /// With photos.
    pub with_photos: SybilOutcome,
}

impl PhotosComparison {
    /// Text latency with photos over text only (median), minus one.
    pub fn text_latency_change(&self) -> f64 {
        let base = self.text_only.latency_median_s.max(f64::MIN_POSITIVE);
        self.with_photos.latency_median_s / base - 1.0
    }

    /// A markdown table of both runs.
    pub fn table(&self) -> String {
        let (a, b) = (&self.text_only, &self.with_photos);
        let mut t = RunsTable::new(a, b, "text only", "with photos");
        t.row("photos sent", |o| o.photos_sent.to_string());
        t.row("photo completion (pairs complete / owed)", |o| {
            format!(
                "{:.4} ({}/{})",
                o.photo_pairs_complete as f64 / o.photo_pairs_owed.max(1) as f64,
                o.photo_pairs_complete,
                o.photo_pairs_owed
            )
        });
        t.row("photo latency median / p90, s", |o| {
            format!("{:.1} / {:.1}", o.photo_latency_s.0, o.photo_latency_s.1)
        });
        t.row("bytes on air", |o| o.bytes_on_air.to_string());
        t.row("honest events lost after a join (must be 0)", |o| {
            o.honest_evicted.to_string()
        });
        t.finish()
    }
}

/// Runs the scenario text only, then with photos.
pub fn compare(
    sc: &Scenario,
    spec: &PhotosSpec,
    seed: u64,
    progress: &mut dyn FnMut(&str, f64),
) -> PhotosComparison {
    let w = sc.workload(seed);
    let rooms = SybilSpec::quiet(spec.warmup_s, spec.read_interval_ms);
    let run = |photo_every: u64, progress: &mut dyn FnMut(f64)| {
        let opts = RunOpts {
            photo_every,
            photo_bytes: spec.bytes,
            ..RunOpts::default()
        };
        sybil::run(sc, &rooms, &w, &[], seed, opts, progress)
    };
    let text_only = run(0, &mut |f| progress("text only", f));
    let with_photos = run(spec.every, &mut |f| progress("with photos", f));
    PhotosComparison {
        seed,
        text_only,
        with_photos,
    }
}
