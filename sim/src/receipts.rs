//! What receipts cost on air and what they let carriers drop
//! (`protocol-spec/rooms.md` §9; issue 18).
//!
//! A scenario with a `[receipts]` table runs its real rooms (created,
//! invited by card and written to through the device core's typed
//! operations, as [`crate::sybil`] does, with no flood) twice with the
//! same seed, contacts and workload: devices without receipts, then with
//! them, where each member's periodic read of its changed rooms is a
//! person reading them (read receipts). Reported: bytes on air in both
//! runs (the receipts' cost is their ratio), receipt events sent, delivery
//! and latency, and the carried copies (events of a room held by nodes not
//! in it) a carrier may drop at the end because every member signed an
//! event citing them.

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::sybil::{self, RunOpts, RunsTable, SybilOutcome, SybilSpec};

/// The `[receipts]` table of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsSpec {
    /// No room message is sent before this: the invites spread first.
    pub warmup_s: f64,
    /// How often members read their changed rooms, ms.
    pub read_interval_ms: u64,
}

impl ReceiptsSpec {
    fn rooms(&self) -> SybilSpec {
        SybilSpec::quiet(self.warmup_s, self.read_interval_ms)
    }
}

/// Both runs, same seed.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiptsComparison {
    /// The seed.
    pub seed: u64,
    /// Devices send no receipts.
    pub without_receipts: SybilOutcome,
    /// Devices send delivered and read receipts.
    pub with_receipts: SybilOutcome,
}

impl ReceiptsComparison {
    /// Bytes on air with receipts over bytes without, minus one: what
    /// receipts add (goal ≤ 0.10).
    pub fn overhead(&self) -> f64 {
        let base = self.without_receipts.bytes_on_air.max(1) as f64;
        self.with_receipts.bytes_on_air as f64 / base - 1.0
    }

    /// A markdown table of both runs.
    pub fn table(&self) -> String {
        let (a, b) = (&self.without_receipts, &self.with_receipts);
        let mut t = RunsTable::new(a, b, "without receipts", "with receipts");
        t.row("receipt events sent", |o| o.receipt_events.to_string());
        t.cells(
            "bytes on air",
            &a.bytes_on_air.to_string(),
            &format!("{} ({:+.1}%)", b.bytes_on_air, self.overhead() * 100.0),
        );
        let avg = |(b, n): (u64, u64)| b.checked_div(n).unwrap_or(0);
        t.row("bytes per message / receipt event", |o| {
            format!(
                "{} / {}",
                avg(o.message_event_bytes),
                avg(o.receipt_event_bytes)
            )
        });
        let frames: std::collections::BTreeSet<&String> = a
            .airtime_by_frame
            .keys()
            .chain(b.airtime_by_frame.keys())
            .collect();
        for f in frames {
            t.row(&format!("bytes on air: {f}"), |o| {
                o.airtime_by_frame.get(f).copied().unwrap_or(0).to_string()
            });
        }
        t.row("carried copies at the end", |o| {
            o.carried_copies.to_string()
        });
        t.row("of which droppable (every member cites them)", |o| {
            format!(
                "{} ({} bytes)",
                o.carried_droppable, o.carried_droppable_bytes
            )
        });
        t.row(
            "carried copies dropped by carriers (every member cites them)",
            |o| o.carried_dropped.to_string(),
        );
        t.finish()
    }
}

/// Runs the scenario without and with receipts.
pub fn compare(
    sc: &Scenario,
    spec: &ReceiptsSpec,
    seed: u64,
    progress: &mut dyn FnMut(&str, f64),
) -> ReceiptsComparison {
    let w = sc.workload(seed);
    let rooms = spec.rooms();
    let run = |receipts: bool, progress: &mut dyn FnMut(f64)| {
        let opts = RunOpts {
            receipts,
            receipt_delay_ms: std::env::var("RECEIPT_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok()),
            ..RunOpts::default()
        };
        sybil::run(sc, &rooms, &w, &[], seed, opts, progress)
    };
    let without_receipts = run(false, &mut |f| progress("without receipts", f));
    let with_receipts = run(true, &mut |f| progress("with receipts", f));
    ReceiptsComparison {
        seed,
        without_receipts,
        with_receipts,
    }
}
