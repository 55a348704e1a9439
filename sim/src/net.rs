//! A deterministic discrete-event network of real device cores
//! ([`DeviceCore`]: the relay node and the rooms layer as one sans-IO state
//! machine, `protocol-spec/daemon.md`, "Device core"), exactly what the
//! daemon drives.
//!
//! Virtual time in milliseconds, a binary-heap event queue with a sequence
//! number for ties, and one seeded RNG: the same seed gives the same run.
//! Each link direction has a bandwidth, a latency and an MTU, so a transfer
//! takes time and a short contact carries limited bytes. Each node has a CPU
//! that is charged for every datagram it processes (a per-datagram cost plus
//! a per-byte cost standing in for signature verification), so a flood costs
//! what it would cost on a real device.
//!
//! The driver rule is the daemon's cycle: feed an input; if the core
//! staged writes, `prepare_commit` (the rooms layer's admission, keys and
//! decryption join the transaction), commit the store, feed `CommitDone`;
//! then drain the outputs.
//!
//! Two ways to use a room:
//!
//! * **raw rooms** ([`SimNet::join`], [`SimNet::publish`]): the network
//!   stands in for the rooms layer, publishes signed opaque events and tells
//!   the nodes who the members are (`JoinRoom`/`RoomMembers`). No node holds
//!   room keys, so the rooms layer treats every such event as a courier's and
//!   skips it: this is the node alone, as the mesh scenarios measure it.
//! * **real rooms** (`crate::rooms`): rooms created, joined and written to
//!   through the typed control operations (`Op::RoomCreate`, `RoomInvite`,
//!   `Send`), with real membership, key shares and encryption; a member
//!   learns it is one when its invite reaches it through the mesh.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use meshrelay::app::DeviceKeys;
use meshrelay::control::Reply;
use meshrelay::crypto::{ContactCard, Identity};
use meshrelay::device::{CoreOutput, DeviceCore, OpId};
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::proto::{AppEvent, Command, Input, LinkId, LinkKind, NodeConfig, Output};
use meshrelay::store::{EventStore, MemoryStore, SourceKey, StoreConfig};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// Physical parameters of a link kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    /// Kind reported to the node.
    pub kind: LinkKind,
    /// Bytes per second in each direction.
    pub bytes_per_s: u64,
    /// One-way latency.
    pub latency_ms: u64,
    /// Largest datagram.
    pub mtu: usize,
    /// Probability that one transmission of a datagram is lost. Links are
    /// reliable, as BLE's link layer and TCP/QUIC are: a lost datagram is
    /// sent again, so loss costs airtime and delay, not data (attempts
    /// per datagram are capped at [`MAX_ATTEMPTS`]).
    pub loss: f64,
}

/// Most transmissions of one datagram on a lossy link (the link layer's
/// retry limit; the last attempt always gets through).
pub const MAX_ATTEMPTS: u64 = 16;

impl LinkParams {
    /// A BLE link: ~100 kB/s of ATT payload at MTU 185, 15 ms latency.
    pub fn ble() -> Self {
        Self {
            kind: LinkKind::Ble,
            bytes_per_s: 100_000,
            latency_ms: 15,
            mtu: 185,
            loss: 0.0,
        }
    }

    /// A LAN link: ~10 MB/s, 1 ms latency.
    pub fn lan() -> Self {
        Self {
            kind: LinkKind::Lan,
            bytes_per_s: 10_000_000,
            latency_ms: 1,
            mtu: meshrelay::wire::MAX_MTU,
            loss: 0.0,
        }
    }
}

/// CPU cost charged per datagram processed, in microseconds.
pub const CPU_US_PER_DATAGRAM: u64 = 5;
/// CPU cost charged per received byte, in nanoseconds (~50 µs per 1 KiB
/// event: one ed25519 verification plus hashing on a small board).
pub const CPU_NS_PER_BYTE: u64 = 50;

/// Most processing failures kept per node (diagnostics).
const MAX_FAILURES_KEPT: usize = 16;

/// A node in the network.
pub struct SimNode {
    /// The device core under test: the relay node and the rooms layer.
    pub core: DeviceCore<MemoryStore, ChaCha8Rng>,
    /// The device identity (a copy of the core's, for raw events).
    pub identity: Identity,
    /// The device's current contact card (what an inviter needs).
    pub card: ContactCard,
    /// Rooms of every event this node stored: what a carrier learns of
    /// the rooms around it.
    pub seen_rooms: BTreeSet<RoomId>,
    /// Rooms whose committed events changed since the owner last read
    /// them (`CoreOutput::RoomsChanged`).
    pub changed_rooms: BTreeSet<RoomId>,
    /// Replies of operations, by operation number, until taken.
    pub replies: BTreeMap<OpId, Vec<Reply>>,
    /// Events this node's operations published (real rooms), in order.
    pub published: Vec<EventId>,
    /// Received events the rooms layer refused (`CoreOutput::Refused`).
    pub refused: u64,
    /// The first few batches the rooms layer could not process.
    pub processing_failures: Vec<String>,
    /// Next sequence number per room.
    pub next_seq: BTreeMap<RoomId, u64>,
    /// Events reported stored, with the time; a second report is a bug.
    pub delivered: BTreeMap<EventId, u64>,
    /// Events reported stored twice (must stay empty).
    pub double_deliveries: Vec<EventId>,
    /// Penalties this node imposed.
    pub penalties: u64,
    /// The first few penalty reasons, for test diagnostics.
    pub penalty_reasons: Vec<String>,
    cpu_free_at_us: u64,
    /// Datagrams waiting for the CPU, in arrival order.
    inbox: VecDeque<(LinkId, Vec<u8>)>,
    /// Whether a `Cpu` event is scheduled.
    cpu_wake: bool,
    timer_at: Option<u64>,
    link_to: BTreeMap<LinkId, (usize, LinkId)>,
}

impl SimNode {
    /// Records a core output that is not the node's.
    fn core_output(&mut self, out: CoreOutput) {
        match out {
            CoreOutput::Node(_) => {}
            CoreOutput::Replies { op, replies } => {
                self.replies.entry(op).or_default().extend(replies);
            }
            CoreOutput::RoomsChanged(rooms) => self.changed_rooms.extend(rooms),
            CoreOutput::CardIssued(card) => self.card = *card,
            CoreOutput::Refused { .. } => self.refused += 1,
            CoreOutput::ProcessingFailed(e) => {
                if self.processing_failures.len() < MAX_FAILURES_KEPT {
                    self.processing_failures.push(e);
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Deliver {
        to: usize,
        link: LinkId,
        bytes: Vec<u8>,
    },
    Drained {
        node: usize,
        link: LinkId,
    },
    Timer {
        node: usize,
    },
    Cpu {
        node: usize,
    },
}

struct Wire {
    params: LinkParams,
    /// Per direction (from the lower index, from the higher), when the
    /// sender's transmitter is free, in microseconds.
    free_at_us: [u64; 2],
}

/// The network.
pub struct SimNet {
    /// Nodes, indexed from 0.
    pub nodes: Vec<SimNode>,
    now_us: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    wires: BTreeMap<(usize, usize), Wire>,
    next_link: u64,
    /// The run's RNG (topology, workloads).
    pub rng: ChaCha8Rng,
    /// Per room: the nodes that joined it and their device IDs.
    room_members: BTreeMap<RoomId, (BTreeSet<usize>, BTreeSet<meshrelay::crypto::DeviceId>)>,
    /// Bytes transmitted by all nodes.
    pub bytes_on_air: u64,
    /// Bytes transmitted per frame type (name from [`frame_name`]), per
    /// node ([`SimNet::airtime_by_frame`]).
    tx_by_frame: BTreeMap<&'static str, Vec<u64>>,
    /// The last operation number handed out.
    pub(crate) next_op: OpId,
    /// Per link: the type of the frame whose fragments are being sent.
    sending: BTreeMap<LinkId, &'static str>,
}

/// The frame type a packet starts (`protocol-spec/wire.md`: a whole packet
/// or the first fragment of a frame), if it starts one.
pub fn frame_name(packet: &[u8]) -> Option<&'static str> {
    let frame = match packet.first()? {
        0 => packet.get(1..)?,
        1 if packet.get(3..5)? == [0, 0] => packet.get(7..)?,
        _ => return None,
    };
    // [array head, version, type tag (one byte below 24, else 0x18 tag)]
    let tag = match *frame.get(2)? {
        0x18 => *frame.get(3)?,
        t => t,
    };
    Some(match tag {
        0 => "hello",
        1 => "close",
        2 => "members",
        3 | 4 => "hello",
        16 => "reconcile_init",
        17 => "reconcile_sketch",
        18 => "reconcile_symbols",
        19 => "reconcile_more",
        20 => "reconcile_equal",
        21 => "reconcile_decoded",
        22 => "reconcile_failed",
        32 => "events",
        33 => "ihave",
        34 => "want",
        35 => "prune",
        36 => "graft",
        37 => "spray",
        _ => "other",
    })
}

impl SimNet {
    /// Panics unless each of `nodes` delivered every event of `expected`,
    /// and none twice (the tests' convergence check).
    pub fn assert_converged(&self, nodes: &[usize], expected: &BTreeSet<EventId>) {
        for &i in nodes {
            let n = &self.nodes[i];
            assert!(n.double_deliveries.is_empty(), "node {i} delivered twice");
            let missing = expected
                .iter()
                .filter(|id| !n.delivered.contains_key(id))
                .count();
            assert_eq!(
                missing,
                0,
                "node {i} lacks {missing} of {} events",
                expected.len()
            );
        }
    }

    /// `n` nodes, each with a store of `store` config, seeded by `seed`.
    pub fn new(n: usize, seed: u64, config: NodeConfig, store: StoreConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = (0..n)
            .map(|i| {
                let mut s = [0u8; 32];
                rng.fill(&mut s);
                let identity = Identity::from_seed(&s);
                let node_rng = ChaCha8Rng::seed_from_u64(rng.random());
                let mut store = MemoryStore::new_memory_with(store).expect("valid store config");
                let card = ContactCard::create(&identity, &format!("node{i}"), 0)
                    .expect("a short name makes a valid card");
                // The daemon's start: keys loaded once (the prekey ring
                // staged and committed), then the core opened over the store.
                let keys = DeviceKeys::load(Identity::from_seed(&s), card.clone(), &mut store, 0)
                    .expect("a fresh memory store holds no keys to conflict");
                store.commit().expect("memory commit");
                let core = DeviceCore::new(keys, store, node_rng, config.clone(), 0)
                    .expect("the memory store does not fail");
                SimNode {
                    core,
                    identity,
                    card,
                    seen_rooms: BTreeSet::new(),
                    changed_rooms: BTreeSet::new(),
                    replies: BTreeMap::new(),
                    published: Vec::new(),
                    refused: 0,
                    processing_failures: Vec::new(),
                    next_seq: BTreeMap::new(),
                    delivered: BTreeMap::new(),
                    double_deliveries: Vec::new(),
                    penalties: 0,
                    penalty_reasons: Vec::new(),
                    cpu_free_at_us: 0,
                    inbox: VecDeque::new(),
                    cpu_wake: false,
                    timer_at: None,
                    link_to: BTreeMap::new(),
                }
            })
            .collect();
        Self {
            nodes,
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            wires: BTreeMap::new(),
            next_link: 1,
            rng,
            room_members: BTreeMap::new(),
            bytes_on_air: 0,
            next_op: 0,
            tx_by_frame: BTreeMap::new(),
            sending: BTreeMap::new(),
        }
    }

    /// Virtual time now, in ms.
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    fn push(&mut self, at_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at_us, self.seq, ev)));
    }

    /// Brings up a link between `a` and `b` now.
    pub fn connect(&mut self, a: usize, b: usize, params: LinkParams) {
        self.connect_with_source(a, b, params, a as u64, b as u64);
    }

    /// Brings up a link, naming the source each side sees (a flooder can
    /// come from one source under many link identities).
    pub fn connect_with_source(
        &mut self,
        a: usize,
        b: usize,
        params: LinkParams,
        src_a: u64,
        src_b: u64,
    ) {
        let key = (a.min(b), a.max(b));
        if self.wires.contains_key(&key) || a == b {
            return;
        }
        self.wires.insert(
            key,
            Wire {
                params,
                free_at_us: [self.now_us; 2],
            },
        );
        let la = LinkId(self.next_link);
        let lb = LinkId(self.next_link + 1);
        self.next_link += 2;
        self.nodes[a].link_to.insert(la, (b, lb));
        self.nodes[b].link_to.insert(lb, (a, la));
        let source = |x: u64| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&x.to_be_bytes());
            SourceKey(k)
        };
        self.input(
            a,
            Input::LinkUp {
                link: la,
                kind: params.kind,
                mtu: params.mtu,
                source: source(src_b),
            },
        );
        self.input(
            b,
            Input::LinkUp {
                link: lb,
                kind: params.kind,
                mtu: params.mtu,
                source: source(src_a),
            },
        );
    }

    /// Takes down the link between `a` and `b`, if any.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if self.wires.remove(&(a.min(b), a.max(b))).is_none() {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            let links: Vec<LinkId> = self.nodes[x]
                .link_to
                .iter()
                .filter(|(_, (peer, _))| *peer == y)
                .map(|(l, _)| *l)
                .collect();
            for l in links {
                self.nodes[x].link_to.remove(&l);
                self.sending.remove(&l);
                self.input(x, Input::LinkDown(l));
            }
        }
    }

    /// Whether `a` and `b` are linked.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.wires.contains_key(&(a.min(b), a.max(b)))
    }

    /// Node `i` joins `room` (treats it as its own). Every node that
    /// joined the room learns the new member set: the events of members get
    /// the own-room class, anyone else's stay stranger traffic.
    pub fn join(&mut self, i: usize, room: RoomId) {
        let Some(me) = self.nodes.get(i).map(|n| n.identity.device_id()) else {
            return;
        };
        let entry = self.room_members.entry(room).or_default();
        if !entry.0.insert(i) {
            return;
        }
        entry.1.insert(me);
        let (nodes, members) = (entry.0.clone(), entry.1.clone());
        for n in nodes {
            let cmd = if n == i {
                Command::JoinRoom {
                    room,
                    members: members.clone(),
                }
            } else {
                Command::RoomMembers {
                    room,
                    members: members.clone(),
                }
            };
            self.input(n, Input::Command(cmd));
        }
    }

    /// Node `i` publishes a signed event of `payload_len` bytes in `room`.
    pub fn publish(&mut self, i: usize, room: RoomId, payload_len: usize) -> EventId {
        let expires_ms = self.now_ms() + meshrelay::limits::DEFAULT_EVENT_LIFETIME_MS;
        self.publish_with(i, room, payload_len, expires_ms)
    }

    /// Node `i` publishes a signed event of `payload_len` bytes in `room`
    /// that expires at `expires_ms`.
    pub fn publish_with(
        &mut self,
        i: usize,
        room: RoomId,
        payload_len: usize,
        expires_ms: u64,
    ) -> EventId {
        let now_ms = self.now_ms();
        let n = &mut self.nodes[i];
        let seq = n.next_seq.entry(room).or_insert(0);
        *seq += 1;
        let heads = n.core.store().heads(&room).unwrap_or_default();
        let ev = UnsignedEvent {
            room,
            sender: n.identity.device_id(),
            seq: *seq,
            prev: heads
                .into_iter()
                .take(meshrelay::limits::MAX_PREV_EVENTS)
                .collect(),
            origin_ts_ms: now_ms,
            expires_ms,
            kind: EventKind::Message,
            payload: vec![0x5a; payload_len],
        }
        .sign(&n.identity)
        .expect("simulated events are within limits");
        let id = ev.id();
        self.publish_event(i, ev);
        id
    }

    /// Node `i` publishes an already signed event.
    pub fn publish_event(&mut self, i: usize, ev: Event) {
        self.input(i, Input::Command(Command::Publish(Box::new(ev))));
    }

    /// Feeds one input to node `i` now, then commits and drains.
    pub fn input(&mut self, i: usize, input: Input) {
        let now_ms = self.now_ms();
        let n = &mut self.nodes[i];
        n.core
            .handle(now_ms, input)
            .expect("the memory store does not fail");
        self.settle(i);
    }

    /// One daemon cycle of node `i`: commit what is staged (after the rooms
    /// layer's `prepare_commit`), then drain the outputs.
    pub(crate) fn settle(&mut self, i: usize) {
        let now_ms = self.now_ms();
        // `prepare_commit`, commit, `CommitDone` (the daemon's cycle).
        self.nodes[i]
            .core
            .settle(now_ms)
            .expect("the memory store does not fail");
        let mut drained_links = BTreeSet::new();
        while let Some(out) = self.nodes[i].core.poll_output() {
            let out = match out {
                CoreOutput::Node(o) => o,
                other => {
                    self.nodes[i].core_output(other);
                    continue;
                }
            };
            match out {
                Output::Transmit { link, bytes } => {
                    if let Some(at) = self.transmit(i, link, bytes) {
                        drained_links.insert((link, at));
                    }
                }
                Output::Close { link, .. } => {
                    if let Some((peer, _)) = self.nodes[i].link_to.get(&link).copied() {
                        self.disconnect(i, peer);
                    }
                }
                Output::App(AppEvent::EventStored { id, room }) => {
                    let t = self.now_ms();
                    let n = &mut self.nodes[i];
                    n.seen_rooms.insert(room);
                    if n.delivered.insert(id, t).is_some() {
                        n.double_deliveries.push(id);
                    }
                }
                Output::App(AppEvent::PeerPenalised { reason, .. }) => {
                    let n = &mut self.nodes[i];
                    n.penalties += 1;
                    if n.penalty_reasons.len() < 16 {
                        n.penalty_reasons.push(reason);
                    }
                }
                Output::App(_) => {}
            }
        }
        let mut last: BTreeMap<LinkId, u64> = BTreeMap::new();
        for (link, at) in drained_links {
            let e = last.entry(link).or_insert(at);
            *e = (*e).max(at);
        }
        for (link, at) in last {
            self.push(at, Ev::Drained { node: i, link });
        }
        if let Some(t) = self.nodes[i].core.poll_timeout() {
            let t_us = t.saturating_mul(1000).max(self.now_us);
            if self.nodes[i].timer_at.is_none_or(|cur| t_us < cur) {
                self.nodes[i].timer_at = Some(t_us);
                self.push(t_us, Ev::Timer { node: i });
            }
        }
    }

    /// Schedules a datagram; returns when the transmitter is free again.
    fn transmit(&mut self, from: usize, link: LinkId, bytes: Vec<u8>) -> Option<u64> {
        let (to, peer_link) = *self.nodes[from].link_to.get(&link)?;
        let key = (from.min(to), from.max(to));
        let dir = usize::from(from > to);
        let loss = self.wires.get(&key)?.params.loss;
        // Lost transmissions are repeated: draw the attempts (only on lossy
        // links, so loss-free runs use the RNG exactly as before).
        let mut attempts = 1;
        while loss > 0.0 && attempts < MAX_ATTEMPTS && self.rng.random::<f64>() < loss {
            attempts += 1;
        }
        let wire = self.wires.get_mut(&key)?;
        let start = wire.free_at_us[dir].max(self.now_us);
        let dur = (bytes.len() as u64 * attempts).saturating_mul(1_000_000)
            / wire.params.bytes_per_s.max(1);
        wire.free_at_us[dir] = start + dur.max(1);
        let arrive = start + dur + wire.params.latency_ms * 1000;
        let free = wire.free_at_us[dir];
        self.bytes_on_air += bytes.len() as u64 * attempts;
        let kind = match frame_name(&bytes) {
            Some(k) => {
                self.sending.insert(link, k);
                k
            }
            None => self.sending.get(&link).copied().unwrap_or("other"),
        };
        let nodes = self.nodes.len();
        let per_node = self
            .tx_by_frame
            .entry(kind)
            .or_insert_with(|| vec![0; nodes]);
        if let Some(t) = per_node.get_mut(from) {
            *t += bytes.len() as u64 * attempts;
        }
        self.push(
            arrive,
            Ev::Deliver {
                to,
                link: peer_link,
                bytes,
            },
        );
        Some(free)
    }

    /// Bytes transmitted per frame type (name from [`frame_name`]) by the
    /// nodes `of` keeps.
    pub fn airtime_by_frame_of(&self, of: impl Fn(usize) -> bool) -> BTreeMap<&'static str, u64> {
        self.tx_by_frame
            .iter()
            .map(|(kind, per_node)| {
                let sum = per_node
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| of(*i))
                    .map(|(_, b)| *b)
                    .sum();
                (*kind, sum)
            })
            .collect()
    }

    /// Bytes transmitted per frame type by all nodes.
    pub fn airtime_by_frame(&self) -> BTreeMap<&'static str, u64> {
        self.airtime_by_frame_of(|_| true)
    }

    /// Sends raw bytes from `from` to `to` over their link, bypassing
    /// `from`'s node: how tests play a hostile peer. Returns false if the
    /// two are not linked.
    pub fn send_raw(&mut self, from: usize, to: usize, bytes: Vec<u8>) -> bool {
        let link = self.nodes[from]
            .link_to
            .iter()
            .find(|(_, (peer, _))| *peer == to)
            .map(|(l, _)| *l);
        match link {
            Some(link) => self.transmit(from, link, bytes).is_some(),
            None => false,
        }
    }

    /// The nodes `i` is linked to, ascending.
    pub fn peers(&self, i: usize) -> Vec<usize> {
        let peers: BTreeSet<usize> = self.nodes[i].link_to.values().map(|(p, _)| *p).collect();
        peers.into_iter().collect()
    }

    /// The MTU of the link between `a` and `b`, if they are linked.
    pub fn link_mtu(&self, a: usize, b: usize) -> Option<usize> {
        self.wires.get(&(a.min(b), a.max(b))).map(|w| w.params.mtu)
    }

    /// Charges the receiver's CPU for one datagram and feeds it.
    fn process(&mut self, to: usize, link: LinkId, bytes: Vec<u8>) {
        let cost = CPU_US_PER_DATAGRAM + bytes.len() as u64 * CPU_NS_PER_BYTE / 1000;
        self.nodes[to].cpu_free_at_us = self.now_us + cost;
        self.input(to, Input::Received { link, bytes });
    }

    /// Runs until virtual time `until_ms` or until nothing is left to do.
    pub fn run_until(&mut self, until_ms: u64) {
        let until_us = until_ms.saturating_mul(1000);
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until_us {
                break;
            }
            let Some(Reverse((at, _, ev))) = self.queue.pop() else {
                break;
            };
            self.now_us = self.now_us.max(at);
            match ev {
                Ev::Deliver { to, link, bytes } => {
                    if !self.nodes[to].link_to.contains_key(&link) {
                        continue;
                    }
                    // The receiver's CPU: queue while busy, in arrival order.
                    let n = &mut self.nodes[to];
                    if n.cpu_free_at_us > self.now_us || !n.inbox.is_empty() {
                        n.inbox.push_back((link, bytes));
                        if !n.cpu_wake {
                            n.cpu_wake = true;
                            let at = n.cpu_free_at_us.max(self.now_us);
                            self.push(at, Ev::Cpu { node: to });
                        }
                        continue;
                    }
                    self.process(to, link, bytes);
                }
                Ev::Cpu { node } => {
                    self.nodes[node].cpu_wake = false;
                    while let Some((link, bytes)) = self.nodes[node].inbox.pop_front() {
                        if self.nodes[node].link_to.contains_key(&link) {
                            self.process(node, link, bytes);
                            break;
                        }
                    }
                    let n = &mut self.nodes[node];
                    if !n.inbox.is_empty() && !n.cpu_wake {
                        n.cpu_wake = true;
                        let at = n.cpu_free_at_us.max(self.now_us);
                        self.push(at, Ev::Cpu { node });
                    }
                }
                Ev::Drained { node, link } => {
                    if self.nodes[node].link_to.contains_key(&link) {
                        self.input(node, Input::Drained(link));
                    }
                }
                Ev::Timer { node } => {
                    if self.nodes[node].timer_at == Some(at) {
                        self.nodes[node].timer_at = None;
                        self.input(node, Input::Timeout);
                    }
                }
            }
        }
        self.now_us = self.now_us.max(until_us);
    }
}
