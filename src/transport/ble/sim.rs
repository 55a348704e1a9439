//! A simulated GATT connection between two [`Engine`]s
//! (`protocol-spec/ble.md`, "Testing"): everything but the radio runs the
//! adapter's code. The air carries ATT values in connection events: every
//! `conn_interval_ms`, up to `values_per_event` values in each direction,
//! with optional loss, reordering of adjacent values and a disconnect after
//! a given number of values. Time and randomness are parameters.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::adv::AdvToken;
use super::engine::Engine;
use super::session::{Role, att_payload};
use crate::proto::LinkId;

/// Connection interval of the simulated link (a common phone default).
pub const SIM_CONN_INTERVAL_MS: u64 = 15;
/// ATT values per direction per connection event (controllers commonly
/// allow 4–8 packets per event with data length extension).
pub const SIM_VALUES_PER_EVENT: usize = 6;

/// Fault model of the air.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Probability that an ATT value is lost.
    pub loss: f64,
    /// Probability that an ATT value swaps places with the next one.
    pub reorder: f64,
    /// Disconnect after this many values (both directions together).
    pub disconnect_after: Option<u64>,
}

/// Parameters of the simulated connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AirParams {
    /// Negotiated ATT MTU.
    pub att_mtu: usize,
    /// Connection interval.
    pub conn_interval_ms: u64,
    /// Values per direction per connection event.
    pub values_per_event: usize,
    /// Faults.
    pub faults: Faults,
}

impl AirParams {
    /// A clean link with this ATT MTU.
    pub fn mtu(att_mtu: usize) -> Self {
        Self {
            att_mtu,
            conn_interval_ms: SIM_CONN_INTERVAL_MS,
            values_per_event: SIM_VALUES_PER_EVENT,
            faults: Faults::default(),
        }
    }

    /// The raw rate of the link: ATT payload bytes per second in one
    /// direction when every slot is full.
    pub fn raw_rate_bytes_per_s(&self) -> f64 {
        (att_payload(self.att_mtu) * self.values_per_event) as f64 * 1000.0
            / self.conn_interval_ms as f64
    }
}

/// Counters of the air.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AirStats {
    /// ATT values carried (both directions).
    pub values: u64,
    /// ATT payload bytes carried (both directions).
    pub bytes: u64,
    /// Values dropped by the loss model.
    pub lost: u64,
    /// Connection events that carried at least one value.
    pub busy_events: u64,
}

/// One simulated GATT connection: `central` is the engine that connected.
#[derive(Debug)]
pub struct Air {
    params: AirParams,
    rng: StdRng,
    /// The central's link number, while connected.
    pub central_link: Option<LinkId>,
    /// The peripheral's link number, while connected.
    pub peripheral_link: Option<LinkId>,
    stats: AirStats,
}

impl Air {
    /// Opens a connection from `central` to `peripheral` at `now_ms`, as
    /// the radio would after connect, MTU exchange, discovery and subscribe.
    /// `advertised` is the peripheral's token the central saw.
    pub fn connect(
        central: &mut Engine,
        peripheral: &mut Engine,
        now_ms: u64,
        params: AirParams,
        advertised: Option<AdvToken>,
        seed: u64,
    ) -> Self {
        let c = central.link_opened(
            now_ms,
            Role::Central,
            params.att_mtu,
            "sim:peripheral".into(),
            advertised,
        );
        let p = peripheral.link_opened(
            now_ms,
            Role::Peripheral,
            params.att_mtu,
            "sim:central".into(),
            None,
        );
        Self {
            params,
            rng: StdRng::seed_from_u64(seed),
            central_link: c,
            peripheral_link: p,
            stats: AirStats::default(),
        }
    }

    /// Changes the fault model from now on.
    pub fn set_faults(&mut self, faults: Faults) {
        self.params.faults = faults;
    }

    /// Counters.
    pub fn stats(&self) -> AirStats {
        self.stats
    }

    /// The parameters.
    pub fn params(&self) -> AirParams {
        self.params
    }

    /// Whether the connection is up on both sides.
    pub fn connected(&self) -> bool {
        self.central_link.is_some() && self.peripheral_link.is_some()
    }

    /// Drops the connection on both sides (radio loss).
    pub fn disconnect(&mut self, central: &mut Engine, peripheral: &mut Engine) {
        if let Some(l) = self.central_link.take() {
            central.radio_closed(l);
        }
        if let Some(l) = self.peripheral_link.take() {
            peripheral.radio_closed(l);
        }
    }

    /// Runs one connection event at `now_ms`: timers, closes requested by
    /// either engine, then up to `values_per_event` values each way.
    /// Returns whether any value moved.
    pub fn step(&mut self, central: &mut Engine, peripheral: &mut Engine, now_ms: u64) -> bool {
        central.handle_timeout(now_ms);
        peripheral.handle_timeout(now_ms);
        self.reap_closes(central, peripheral);
        let (Some(c), Some(p)) = (self.central_link, self.peripheral_link) else {
            self.disconnect(central, peripheral);
            return false;
        };
        let up = self.carry(central, c, peripheral, p, now_ms);
        let down = self.carry(peripheral, p, central, c, now_ms);
        self.reap_closes(central, peripheral);
        if up || down {
            self.stats.busy_events += 1;
        }
        up || down
    }

    fn reap_closes(&mut self, central: &mut Engine, peripheral: &mut Engine) {
        let down = self.central_link.is_some_and(|l| central.take_close(l))
            | self
                .peripheral_link
                .is_some_and(|l| peripheral.take_close(l));
        if down {
            self.disconnect(central, peripheral);
        }
    }

    fn carry(
        &mut self,
        from: &mut Engine,
        from_link: LinkId,
        to: &mut Engine,
        to_link: LinkId,
        now_ms: u64,
    ) -> bool {
        let mut batch = Vec::new();
        while batch.len() < self.params.values_per_event {
            match from.poll_radio(from_link) {
                Some(v) => batch.push(v),
                None => break,
            }
        }
        if batch.is_empty() {
            return false;
        }
        let f = self.params.faults;
        if f.reorder > 0.0 {
            for i in 0..batch.len().saturating_sub(1) {
                if self.rng.random_bool(f.reorder.clamp(0.0, 1.0)) {
                    batch.swap(i, i + 1);
                }
            }
        }
        for v in batch {
            self.stats.values += 1;
            self.stats.bytes += v.len() as u64;
            if f.disconnect_after.is_some_and(|n| self.stats.values > n) {
                self.central_link.take();
                self.peripheral_link.take();
                from.radio_closed(from_link);
                to.radio_closed(to_link);
                return true;
            }
            if f.loss > 0.0 && self.rng.random_bool(f.loss.clamp(0.0, 1.0)) {
                self.stats.lost += 1;
                continue;
            }
            to.radio_received(now_ms, to_link, &v);
        }
        from.radio_flushed(from_link);
        true
    }
}
