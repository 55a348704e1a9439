//! Delivery metrics, with the ONE simulator's definitions where they exist
//! (`MessageStatsReport`), so that numbers compare with published studies.
//!
//! * delivery ratio: delivered (message, destination) pairs over created
//!   pairs; a delivery after the message's TTL does not count;
//! * latency: creation to first delivery at the destination (mean, median,
//!   95th percentile, over delivered pairs);
//! * overhead ratio: `(relayed - delivered) / delivered`, where `relayed`
//!   counts every successful transfer of a scored message to a node that
//!   did not hold it (ONE's `relayed`);
//! * bytes on air per delivered pair: every byte any node transmitted
//!   (control frames, duplicates and hostile traffic included);
//! * relative message redundancy (room broadcasts): full copies received per
//!   node reached, minus one (Plumtree's RMR);
//! * peak buffer use: the most bytes any one node held at a sample;
//! * undelivered at end: created pairs never delivered.

use serde::Serialize;

/// What one protocol did in one run, before it is summarised.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Per scored (message, destination) pair: creation time and delivery
    /// time (ms), if delivered in time.
    pub pairs: Vec<(u64, Option<u64>)>,
    /// Successful transfers of scored messages.
    pub relayed: u64,
    /// Bytes transmitted by all nodes.
    pub bytes_on_air: u64,
    /// Room broadcasts: full copies received and nodes that stored them.
    pub broadcast_copies: Option<(u64, u64)>,
    /// Most bytes one node held at a sample.
    pub peak_buffer_bytes: u64,
    /// meshrelay only: bytes on air per frame type (stderr and reports,
    /// not the JSON).
    pub airtime_by_frame: std::collections::BTreeMap<&'static str, u64>,
}

/// The summary printed per protocol. Field names are a contract.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    /// Delivered pairs over created pairs.
    pub delivery_ratio: f64,
    /// Created (message, destination) pairs.
    pub created: u64,
    /// Delivered pairs.
    pub delivered: u64,
    /// Mean latency in seconds.
    pub latency_mean_s: f64,
    /// Median latency in seconds.
    pub latency_median_s: f64,
    /// 95th percentile latency in seconds.
    pub latency_p95_s: f64,
    /// `(relayed - delivered) / delivered`.
    pub overhead_ratio: f64,
    /// Successful transfers of scored messages.
    pub relayed: u64,
    /// Bytes on air, all traffic.
    pub bytes_on_air: u64,
    /// Bytes on air per delivered pair.
    pub bytes_per_delivered: f64,
    /// Relative message redundancy of room broadcasts (`null` if the run
    /// had none).
    pub relative_message_redundancy: Option<f64>,
    /// Most bytes one node held.
    pub peak_buffer_bytes: u64,
    /// Pairs still undelivered at the end.
    pub undelivered_at_end: u64,
}

/// Rounds to 6 decimals so the JSON stays short and stable.
fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Outcome {
    /// Latencies of delivered pairs in seconds, sorted.
    pub fn latencies_s(&self) -> Vec<f64> {
        let mut l: Vec<f64> = self
            .pairs
            .iter()
            .filter_map(|(c, d)| d.map(|d| d.saturating_sub(*c) as f64 / 1000.0))
            .collect();
        l.sort_by(f64::total_cmp);
        l
    }

    /// Summarises.
    pub fn metrics(&self) -> Metrics {
        let created = self.pairs.len() as u64;
        let lat = self.latencies_s();
        let delivered = lat.len() as u64;
        let mean = if lat.is_empty() {
            0.0
        } else {
            lat.iter().sum::<f64>() / lat.len() as f64
        };
        let per = |x: f64| {
            if delivered == 0 {
                0.0
            } else {
                x / delivered as f64
            }
        };
        Metrics {
            delivery_ratio: r6(if created == 0 {
                0.0
            } else {
                delivered as f64 / created as f64
            }),
            created,
            delivered,
            latency_mean_s: r6(mean),
            latency_median_s: r6(quantile(&lat, 0.5)),
            latency_p95_s: r6(quantile(&lat, 0.95)),
            overhead_ratio: r6(per(self.relayed as f64 - delivered as f64)),
            relayed: self.relayed,
            bytes_on_air: self.bytes_on_air,
            bytes_per_delivered: r6(per(self.bytes_on_air as f64)),
            relative_message_redundancy: self.broadcast_copies.map(|(c, n)| {
                r6(if n == 0 {
                    0.0
                } else {
                    c as f64 / n as f64 - 1.0
                })
            }),
            peak_buffer_bytes: self.peak_buffer_bytes,
            undelivered_at_end: created - delivered,
        }
    }
}
