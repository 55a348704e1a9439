//! meshrelay itself over a workload: the real device core
//! ([`DeviceCore`](meshrelay::device::DeviceCore)) in [`SimNet`], in raw-room
//! mode (opaque signed events; see [`crate::net`]), links brought up and
//! down by the contact schedule.
//!
//! A direct message is an event in a 2-member room that its sender and
//! recipient joined; every other node carries it as a stranger's event
//! (within its store's stranger pool). A room broadcast is an event in a
//! room all its members joined. Gateways (`backhaul`) stay linked to each
//! other over LAN for the whole run, standing in for their homeserver.

use std::collections::{BTreeMap, BTreeSet};

use meshrelay::event::{Event, EventId, RoomId};
use meshrelay::proto::NodeConfig;
use meshrelay::store::{EventStore, MetaStore, StoreConfig};

use crate::baseline::LinkModel;
use crate::metrics::Outcome;
use crate::net::SimNet;
use crate::trace::{Contact, Workload};

/// How often (virtual ms) buffers are sampled and store bounds checked.
pub const SAMPLE_INTERVAL_MS: u64 = 60_000;

/// What every run must hold; a violation is a bug in the core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invariants {
    /// Events reported stored twice by the same node.
    pub double_deliveries: u64,
    /// Events delivered to a destination that failed to decode and verify.
    pub unverified_deliveries: u64,
    /// Samples at which a store held more than its budget or stranger pool.
    pub store_bound_violations: u64,
}

impl Invariants {
    /// Whether all hold.
    pub fn ok(&self) -> bool {
        *self == Self::default()
    }
}

/// The room a message travels in.
pub fn room_of(w: &Workload, m: usize) -> RoomId {
    let msg = &w.messages[m];
    let mut r = [0u8; 16];
    match msg.room {
        Some(k) => {
            r[0] = 0xb0;
            r[8..].copy_from_slice(&(k as u64).to_be_bytes());
        }
        None => {
            let to = msg.to.first().copied().unwrap_or(msg.from);
            let (a, b) = (msg.from.min(to) as u32, msg.from.max(to) as u32);
            r[0] = 0xd0;
            r[4..8].copy_from_slice(&a.to_be_bytes());
            r[8..12].copy_from_slice(&b.to_be_bytes());
        }
    }
    RoomId(r)
}

/// Runs meshrelay over the workload, its contact changes taken from
/// `contacts` in time order: `w.contacts`, or a
/// [`crate::feed::ContactFeed`] still finding them. `progress` is called
/// with the fraction of virtual time done.
pub fn run_meshrelay(
    w: &Workload,
    contacts: &mut dyn Iterator<Item = Contact>,
    model: LinkModel,
    config: NodeConfig,
    store: StoreConfig,
    seed: u64,
    progress: &mut dyn FnMut(f64),
) -> (Outcome, Invariants) {
    let mut contacts = contacts.peekable();
    let mut net = SimNet::new(w.nodes, seed, config, store);
    let mut joined = BTreeSet::new();
    for (i, m) in w.messages.iter().enumerate() {
        let room = room_of(w, i);
        for n in std::iter::once(m.from).chain(m.to.iter().copied()) {
            if joined.insert((n, room)) {
                net.join(n, room);
            }
        }
    }
    for (k, &a) in w.backhaul.iter().enumerate() {
        for &b in &w.backhaul[k + 1..] {
            net.connect(a, b, model.lan);
        }
    }
    let backhaul: BTreeSet<usize> = w.backhaul.iter().copied().collect();
    let mut ids: BTreeMap<EventId, usize> = BTreeMap::new();
    let mut event_ids = vec![None; w.messages.len()];
    let mut inv = Invariants::default();
    let mut out = Outcome::default();
    let mut mi = 0;
    let mut next_sample = 0;
    let end = w.end_ms;
    loop {
        let tc = contacts.peek().map_or(u64::MAX, |c| c.t_ms);
        let tm = w.messages.get(mi).map_or(u64::MAX, |m| m.t_ms);
        let t = tc.min(tm).min(next_sample);
        if t > end {
            break;
        }
        net.run_until(t);
        if t == next_sample {
            sample(&net, &mut out, &mut inv);
            next_sample += SAMPLE_INTERVAL_MS;
            progress(t as f64 / end.max(1) as f64);
        } else if t == tc {
            let Some(c) = contacts.next() else {
                continue;
            };
            if backhaul.contains(&c.a) && backhaul.contains(&c.b) {
                continue;
            }
            if c.up {
                net.connect(c.a, c.b, model.params(c.lan));
            } else {
                net.disconnect(c.a, c.b);
            }
        } else {
            let m = &w.messages[mi];
            let expires = m
                .expires_ms()
                .unwrap_or(m.t_ms + meshrelay::limits::DEFAULT_EVENT_LIFETIME_MS)
                .min(m.t_ms + meshrelay::limits::MAX_EVENT_LIFETIME_MS);
            let size = m.size.min(meshrelay::limits::MAX_PAYLOAD_BYTES);
            let id = net.publish_with(m.from, room_of(w, mi), size, expires);
            ids.insert(id, mi);
            event_ids[mi] = Some(id);
            mi += 1;
        }
    }
    net.run_until(end);
    sample(&net, &mut out, &mut inv);
    progress(1.0);

    out.bytes_on_air = net.bytes_on_air;
    out.airtime_by_frame = net.airtime_by_frame();
    let mut broadcast = false;
    for (i, m) in w.messages.iter().enumerate() {
        if m.hostile {
            continue;
        }
        broadcast |= m.room.is_some();
        let Some(id) = event_ids[i] else {
            out.pairs.extend(m.to.iter().map(|_| (m.t_ms, None)));
            continue;
        };
        for &d in &m.to {
            let at = net.nodes[d]
                .delivered
                .get(&id)
                .copied()
                .filter(|&t| m.expires_ms().is_none_or(|e| t < e));
            if at.is_some() {
                let ok = net.nodes[d]
                    .core
                    .store()
                    .get_event(&id)
                    .ok()
                    .flatten()
                    .is_some_and(|b| Event::decode(&b).is_ok_and(|e| e.id() == id));
                if !ok {
                    inv.unverified_deliveries += 1;
                }
            }
            out.pairs.push((m.t_ms, at));
        }
    }
    let (mut stored, mut dups) = (0, 0);
    for (n, sn) in net.nodes.iter().enumerate() {
        inv.double_deliveries += sn.double_deliveries.len() as u64;
        for id in sn.delivered.keys() {
            if let Some(&mi) = ids.get(id) {
                let m = &w.messages[mi];
                if !m.hostile && n != m.from {
                    out.relayed += 1;
                }
            }
        }
        stored += sn.core.node().stats().events_stored;
        dups += sn.core.node().stats().duplicates;
    }
    if broadcast {
        // Network-wide: full copies received per node that stored one.
        out.broadcast_copies = Some((stored + dups, stored));
    }
    (out, inv)
}

fn sample(net: &SimNet, out: &mut Outcome, inv: &mut Invariants) {
    for n in &net.nodes {
        let store = n.core.store();
        let Ok(held) = store.occupancy() else {
            inv.store_bound_violations += 1;
            continue;
        };
        let cfg = store.config();
        if held.bytes() > cfg.budget_bytes || held.stranger.bytes > cfg.stranger_pool_bytes {
            inv.store_bound_violations += 1;
        }
        out.peak_buffer_bytes = out.peak_buffer_bytes.max(held.bytes());
    }
}
