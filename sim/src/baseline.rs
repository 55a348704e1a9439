//! The DTN baselines, run over the same contact schedule and link
//! bandwidth as meshrelay: epidemic flooding, binary spray-and-wait,
//! direct delivery, and the oracle.
//!
//! The forwarding models are ONE-style: each link direction carries one
//! message at a time, taking `size / bandwidth + latency`; a transfer cut
//! by the contact ending is lost. Messages for the peer go first, then the
//! rest in creation order. A node never sends a message its peer has held.
//! A direct message is not kept by its destination, and the sender drops a
//! message once it handed it to its (single) destination. Buffers are
//! unlimited; their peak is reported.
//!
//! The oracle is earliest arrival over the contact schedule with unlimited
//! bandwidth and buffers: the latency floor any protocol can reach.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::metrics::Outcome;
use crate::net::LinkParams;
use crate::trace::Workload;

/// Bytes a signed event adds around its payload (header, signature,
/// framing), so that baselines carry what meshrelay carries.
pub const EVENT_OVERHEAD_BYTES: usize = 180;

/// Wire size of a message of `payload` bytes (payloads are capped at the
/// event limit, as meshrelay caps them).
pub fn wire_size(payload: usize) -> u64 {
    (payload.min(meshrelay::limits::MAX_PAYLOAD_BYTES) + EVENT_OVERHEAD_BYTES) as u64
}

/// A forwarding policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Give every message to every node met.
    Epidemic,
    /// Binary spray-and-wait with `copies` copies (L).
    SprayAndWait {
        /// L.
        copies: u32,
    },
    /// Only the source hands the message to its destination.
    Direct,
}

/// Link parameters for the two kinds a contact may use.
#[derive(Debug, Clone, Copy)]
pub struct LinkModel {
    /// Short-range radio (and trace contacts by default).
    pub ble: LinkParams,
    /// LAN (gateways, backhaul).
    pub lan: LinkParams,
}

impl LinkModel {
    /// The parameters of a contact.
    pub fn params(&self, lan: bool) -> LinkParams {
        if lan { self.lan } else { self.ble }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Contact(usize),
    Create(usize),
    Done {
        from: usize,
        to: usize,
        msg: u32,
        generation: u64,
    },
}

/// A fixed-size set of node indices (a bitset).
#[derive(Debug, Clone)]
struct NodeSet {
    bits: Vec<u64>,
    len: u64,
}

impl NodeSet {
    fn new(n: usize) -> Self {
        Self {
            bits: vec![0; n.div_ceil(64)],
            len: 0,
        }
    }

    fn contains(&self, i: &usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    /// Inserts; true if it was not there.
    fn insert(&mut self, i: usize) -> bool {
        let Some(w) = self.bits.get_mut(i / 64) else {
            return false;
        };
        let b = 1u64 << (i % 64);
        let new = *w & b == 0;
        *w |= b;
        self.len += u64::from(new);
        new
    }

    fn len(&self) -> u64 {
        self.len
    }
}

struct LinkState {
    params: LinkParams,
    generation: u64,
    busy: [bool; 2],
}

struct Engine<'a> {
    w: &'a Workload,
    policy: Policy,
    model: LinkModel,
    links: BTreeMap<(usize, usize), LinkState>,
    adj: Vec<BTreeSet<usize>>,
    /// Buffer per node: message -> copies.
    holds: Vec<BTreeMap<u32, u32>>,
    buffer_bytes: Vec<u64>,
    /// `had[msg]`: nodes that ever held or received the message.
    had: Vec<NodeSet>,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    /// Whether any message expires (skips expiry scans otherwise).
    any_ttl: bool,
    seq: u64,
    generation: u64,
    now_us: u64,
    out: Outcome,
    delivered: Vec<Vec<Option<u64>>>,
}

impl Engine<'_> {
    fn push(&mut self, at_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at_us, self.seq, ev)));
    }

    fn expired(&self, m: u32) -> bool {
        self.w.messages[m as usize]
            .expires_ms()
            .is_some_and(|e| self.now_us / 1000 >= e)
    }

    fn take(&mut self, node: usize, m: u32, copies: u32) {
        if self.holds[node].insert(m, copies).is_none() {
            self.buffer_bytes[node] += wire_size(self.w.messages[m as usize].size);
            self.out.peak_buffer_bytes = self.out.peak_buffer_bytes.max(self.buffer_bytes[node]);
        }
    }

    fn drop_msg(&mut self, node: usize, m: u32) {
        if self.holds[node].remove(&m).is_some() {
            self.buffer_bytes[node] -= wire_size(self.w.messages[m as usize].size);
        }
    }

    fn pick(&mut self, from: usize, to: usize) -> Option<u32> {
        let expired: Vec<u32> = if self.any_ttl {
            self.holds[from]
                .keys()
                .copied()
                .filter(|&m| self.expired(m))
                .collect()
        } else {
            Vec::new()
        };
        for m in expired {
            self.drop_msg(from, m);
        }
        let mut other = None;
        for (&m, &copies) in &self.holds[from] {
            if self.had[m as usize].contains(&to) {
                continue;
            }
            let msg = &self.w.messages[m as usize];
            if msg.to.contains(&to) {
                return Some(m);
            }
            if other.is_none() {
                let ok = match self.policy {
                    Policy::Epidemic => true,
                    Policy::SprayAndWait { .. } => copies > 1,
                    Policy::Direct => false,
                };
                if ok {
                    other = Some(m);
                }
            }
        }
        other
    }

    fn try_start(&mut self, from: usize, to: usize) {
        let key = (from.min(to), from.max(to));
        let dir = usize::from(from > to);
        match self.links.get(&key) {
            Some(l) if !l.busy[dir] => {}
            _ => return,
        }
        let Some(m) = self.pick(from, to) else {
            return;
        };
        let size = wire_size(self.w.messages[m as usize].size);
        let Some(l) = self.links.get_mut(&key) else {
            return;
        };
        l.busy[dir] = true;
        // A lossy link repeats lost transmissions: the expected airtime.
        let keep = (1.0 - l.params.loss).max(1.0 / crate::net::MAX_ATTEMPTS as f64);
        let size = (size as f64 / keep).round() as u64;
        let dur = size * 1_000_000 / l.params.bytes_per_s.max(1) + l.params.latency_ms * 1000;
        let generation = l.generation;
        self.out.bytes_on_air += size;
        let at = self.now_us + dur.max(1);
        self.push(
            at,
            Ev::Done {
                from,
                to,
                msg: m,
                generation,
            },
        );
    }

    fn kick(&mut self, node: usize) {
        let peers: Vec<usize> = self.adj[node].iter().copied().collect();
        for p in peers {
            self.try_start(node, p);
        }
    }

    fn receive(&mut self, from: usize, to: usize, m: u32) {
        let mi = m as usize;
        if !self.had[mi].insert(to) {
            return;
        }
        let msg = &self.w.messages[mi];
        if !msg.hostile {
            self.out.relayed += 1;
        }
        let single = msg.to.len() == 1;
        if let Some(k) = msg.to.iter().position(|&d| d == to)
            && !self.expired(m)
        {
            let t = self.now_us / 1000;
            self.delivered[mi][k].get_or_insert(t);
            if single {
                // Delivered: the destination keeps it for the app only,
                // and the sender has nothing left to do with it.
                self.drop_msg(from, m);
                return;
            }
        }
        let copies = self.holds[from].get(&m).copied().unwrap_or(1);
        let given = match self.policy {
            Policy::SprayAndWait { .. } => {
                let give = copies / 2;
                if let Some(c) = self.holds[from].get_mut(&m) {
                    *c = copies - give;
                }
                give.max(1)
            }
            _ => 1,
        };
        self.take(to, m, given);
    }

    fn run(mut self) -> Outcome {
        for i in 0..self.w.contacts.len() {
            let t = self.w.contacts[i].t_ms * 1000;
            self.push(t, Ev::Contact(i));
        }
        for i in 0..self.w.messages.len() {
            let t = self.w.messages[i].t_ms * 1000;
            self.push(t, Ev::Create(i));
        }
        let end_us = self.w.end_ms * 1000;
        let backhaul = self.w.backhaul.clone();
        for (k, &a) in backhaul.iter().enumerate() {
            for &b in &backhaul[k + 1..] {
                self.link_up(a, b, true);
            }
        }
        while let Some(Reverse((at, _, ev))) = self.queue.pop() {
            if at > end_us {
                break;
            }
            self.now_us = at;
            match ev {
                Ev::Contact(i) => {
                    let c = self.w.contacts[i];
                    if backhaul.contains(&c.a) && backhaul.contains(&c.b) {
                        continue;
                    }
                    if c.up {
                        self.link_up(c.a, c.b, c.lan);
                    } else {
                        self.links.remove(&(c.a.min(c.b), c.a.max(c.b)));
                        self.adj[c.a].remove(&c.b);
                        self.adj[c.b].remove(&c.a);
                    }
                }
                Ev::Create(i) => {
                    let m = &self.w.messages[i];
                    let from = m.from;
                    let copies = match self.policy {
                        Policy::SprayAndWait { copies } => copies.max(1),
                        _ => 1,
                    };
                    self.had[i].insert(from);
                    self.take(from, i as u32, copies);
                    self.kick(from);
                }
                Ev::Done {
                    from,
                    to,
                    msg,
                    generation,
                } => {
                    let key = (from.min(to), from.max(to));
                    let live = match self.links.get_mut(&key) {
                        Some(l) if l.generation == generation => {
                            l.busy[usize::from(from > to)] = false;
                            true
                        }
                        _ => false,
                    };
                    if live {
                        self.receive(from, to, msg);
                        self.kick(from);
                        self.kick(to);
                    }
                }
            }
        }
        self.finish()
    }

    fn link_up(&mut self, a: usize, b: usize, lan: bool) {
        let key = (a.min(b), a.max(b));
        if self.links.contains_key(&key) || a == b {
            return;
        }
        self.generation += 1;
        let params = self.model.params(lan);
        self.links.insert(
            key,
            LinkState {
                params,
                generation: self.generation,
                busy: [false; 2],
            },
        );
        self.adj[a].insert(b);
        self.adj[b].insert(a);
        self.kick(a);
        self.kick(b);
    }

    fn finish(mut self) -> Outcome {
        let mut copies = 0;
        let mut reached = 0;
        for (i, m) in self.w.messages.iter().enumerate() {
            if m.hostile {
                continue;
            }
            for d in &self.delivered[i] {
                self.out.pairs.push((m.t_ms, *d));
            }
            if m.room.is_some() {
                let n = self.had[i].len().saturating_sub(1);
                copies += n;
                reached += n;
            }
        }
        if self.w.messages.iter().any(|m| m.room.is_some()) {
            self.out.broadcast_copies = Some((copies, reached));
        }
        self.out
    }
}

/// Runs one forwarding baseline over the workload.
pub fn run_baseline(w: &Workload, policy: Policy, model: LinkModel) -> Outcome {
    Engine {
        w,
        policy,
        model,
        links: BTreeMap::new(),
        adj: vec![BTreeSet::new(); w.nodes],
        holds: vec![BTreeMap::new(); w.nodes],
        buffer_bytes: vec![0; w.nodes],
        had: vec![NodeSet::new(w.nodes); w.messages.len()],
        queue: BinaryHeap::new(),
        any_ttl: w.messages.iter().any(|m| m.ttl_ms.is_some()),
        seq: 0,
        generation: 0,
        now_us: 0,
        out: Outcome::default(),
        delivered: w.messages.iter().map(|m| vec![None; m.to.len()]).collect(),
    }
    .run()
}

/// Earliest arrival over the contact schedule with unlimited bandwidth and
/// buffers: a message spreads instantly through every connected component
/// it touches, until it expires.
pub fn run_oracle(w: &Workload) -> Outcome {
    let mut adj: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); w.nodes];
    let mut held: Vec<Vec<u32>> = vec![Vec::new(); w.nodes];
    let mut had: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); w.messages.len()];
    let mut delivered: Vec<Vec<Option<u64>>> =
        w.messages.iter().map(|m| vec![None; m.to.len()]).collect();
    let mut out = Outcome::default();
    let mut bytes_held = vec![0u64; w.nodes];
    for (k, &a) in w.backhaul.iter().enumerate() {
        for &b in &w.backhaul[k + 1..] {
            adj[a].insert(b);
            adj[b].insert(a);
        }
    }
    // Spreads message `m` from `start` through the live component.
    let mut infect = |start: usize,
                      m: u32,
                      now: u64,
                      adj: &Vec<BTreeSet<usize>>,
                      held: &mut Vec<Vec<u32>>,
                      out: &mut Outcome| {
        let msg = &w.messages[m as usize];
        if msg.expires_ms().is_some_and(|e| now >= e) {
            return;
        }
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            if !had[m as usize].insert(n) {
                continue;
            }
            if n != msg.from {
                if !msg.hostile {
                    out.relayed += 1;
                }
                out.bytes_on_air += wire_size(msg.size);
            }
            if let Some(k) = msg.to.iter().position(|&d| d == n) {
                delivered[m as usize][k].get_or_insert(now);
            }
            held[n].push(m);
            bytes_held[n] += wire_size(msg.size);
            out.peak_buffer_bytes = out.peak_buffer_bytes.max(bytes_held[n]);
            stack.extend(
                adj[n]
                    .iter()
                    .copied()
                    .filter(|p| !had[m as usize].contains(p)),
            );
        }
    };
    let mut ci = 0;
    let mut mi = 0;
    loop {
        let tc = w.contacts.get(ci).map(|c| c.t_ms);
        let tm = w.messages.get(mi).map(|m| m.t_ms);
        let contact_first = match (tc, tm) {
            (None, None) => break,
            (Some(c), Some(m)) => c <= m,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if contact_first {
            let c = w.contacts[ci];
            ci += 1;
            if c.t_ms > w.end_ms {
                continue;
            }
            if c.up {
                adj[c.a].insert(c.b);
                adj[c.b].insert(c.a);
                for (x, y) in [(c.a, c.b), (c.b, c.a)] {
                    let ms = held[x].clone();
                    for m in ms {
                        infect(y, m, c.t_ms, &adj, &mut held, &mut out);
                    }
                }
            } else if !(w.backhaul.contains(&c.a) && w.backhaul.contains(&c.b)) {
                adj[c.a].remove(&c.b);
                adj[c.b].remove(&c.a);
            }
        } else {
            let m = &w.messages[mi];
            if m.t_ms <= w.end_ms {
                infect(m.from, mi as u32, m.t_ms, &adj, &mut held, &mut out);
            }
            mi += 1;
        }
    }
    for (i, m) in w.messages.iter().enumerate() {
        if m.hostile {
            continue;
        }
        for d in &delivered[i] {
            out.pairs.push((m.t_ms, *d));
        }
    }
    if w.messages.iter().any(|m| m.room.is_some()) {
        out.broadcast_copies = Some((0, 0));
    }
    out
}
