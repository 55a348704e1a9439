//! Real [`Node`]s over a simulated GATT link ([`super::sim::Air`]):
//! the driver rule of the daemon (feed an input, commit if asked, feed
//! `CommitDone`, drain outputs) with BLE engines in place of the LAN
//! adapter. Used by the integration tests and the goodput benchmark
//! (`reports/ble.md`).

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::adv::AdvSecret;
use super::engine::Engine;
use super::policy::PolicyConfig;
use super::sim::{Air, AirParams};
use super::{BLE_LINK_ID_BASE, BleEvent, ble_source};
use crate::crypto::Identity;
use crate::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use crate::proto::{AppEvent, Command, Input, LinkKind, Node, NodeConfig, Output};
use crate::store::{EventStore, MemoryStore};

/// One device: a core node with a memory store, and its BLE engine.
pub struct Device {
    /// The core.
    pub node: Node<MemoryStore, StdRng>,
    /// The adapter's engine.
    pub engine: Engine,
    /// The device's identity (signs events).
    pub identity: Identity,
    /// When each event was stored, by ID.
    pub stored: BTreeMap<EventId, u64>,
    /// Links the core was told about.
    pub links_up: u64,
    /// Links the core saw go down.
    pub links_down: u64,
    /// Penalties the core reported.
    pub penalties: u64,
    next_seq: u64,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("stored", &self.stored.len())
            .finish_non_exhaustive()
    }
}

/// Drives a [`Device`]'s node after an input.
fn settle(d: &mut Device, now_ms: u64) {
    if d.node.needs_commit() {
        let _ = d.node.store_mut().commit();
        let _ = d.node.handle(now_ms, Input::CommitDone);
    }
    while let Some(out) = d.node.poll_output() {
        match out {
            Output::Transmit { link, bytes } => d.engine.core_send(now_ms, link, &bytes),
            Output::Close { link, .. } => d.engine.core_close(link),
            Output::App(AppEvent::EventStored { id, .. }) => {
                d.stored.entry(id).or_insert(now_ms);
            }
            Output::App(AppEvent::PeerPenalised { .. }) => d.penalties += 1,
            Output::App(_) => {}
        }
    }
}

impl Device {
    /// A device seeded by `seed`, numbering BLE links from
    /// `BLE_LINK_ID_BASE + 1000 * seed`.
    pub fn new(seed: u8) -> Self {
        let identity = Identity::from_seed(&[seed; 32]);
        let node = Node::new(
            identity.device_id(),
            MemoryStore::new_memory(),
            StdRng::seed_from_u64(u64::from(seed)),
            NodeConfig::default(),
            0,
        );
        let engine = Engine::new(
            AdvSecret::from_bytes([seed.wrapping_add(100); 32]),
            PolicyConfig::default(),
            BLE_LINK_ID_BASE + 1000 * u64::from(seed),
            ble_source("sim"),
        );
        Self {
            node,
            engine,
            identity,
            stored: BTreeMap::new(),
            links_up: 0,
            links_down: 0,
            penalties: 0,
            next_seq: 0,
        }
    }

    /// Feeds one input, then commits and drains.
    pub fn input(&mut self, now_ms: u64, input: Input) {
        let _ = self.node.handle(now_ms, input);
        settle(self, now_ms);
    }

    /// Joins a room whose members are `members` (their events get the
    /// own-room class).
    pub fn join(&mut self, now_ms: u64, room: RoomId, members: &[crate::crypto::DeviceId]) {
        let members = members.iter().copied().collect();
        self.input(now_ms, Input::Command(Command::JoinRoom { room, members }));
    }

    /// Signs and publishes an event with `payload_len` bytes of payload.
    pub fn publish(&mut self, now_ms: u64, room: RoomId, payload_len: usize) -> Option<Event> {
        self.next_seq += 1;
        let heads = self.node.store().heads(&room).unwrap_or_default();
        let ev = UnsignedEvent {
            room,
            sender: self.identity.device_id(),
            seq: self.next_seq,
            prev: heads
                .into_iter()
                .take(crate::limits::MAX_PREV_EVENTS)
                .collect(),
            origin_ts_ms: now_ms,
            expires_ms: now_ms + crate::limits::DEFAULT_EVENT_LIFETIME_MS,
            kind: EventKind::Message,
            payload: vec![0x5a; payload_len],
        }
        .sign(&self.identity)
        .ok()?;
        self.input(
            now_ms,
            Input::Command(Command::Publish(Box::new(ev.clone()))),
        );
        Some(ev)
    }

    /// Moves the engine's events into the node; also runs its timers.
    pub fn pump(&mut self, now_ms: u64) {
        if self.node.poll_timeout().is_some_and(|t| t <= now_ms) {
            self.input(now_ms, Input::Timeout);
        }
        while let Some(ev) = self.engine.poll_event() {
            let input = match ev {
                BleEvent::Up {
                    link, mtu, source, ..
                } => {
                    self.links_up += 1;
                    Input::LinkUp {
                        link,
                        kind: LinkKind::Ble,
                        mtu,
                        source,
                    }
                }
                BleEvent::Down(link) => {
                    self.links_down += 1;
                    Input::LinkDown(link)
                }
                BleEvent::Received { link, bytes } => Input::Received { link, bytes },
                BleEvent::Drained(link) => Input::Drained(link),
            };
            self.input(now_ms, input);
        }
    }
}

/// Two devices and the connection between them.
#[derive(Debug)]
pub struct Pair {
    /// The device that connected.
    pub central: Device,
    /// The device that advertised.
    pub peripheral: Device,
    /// The connection, once made.
    pub air: Option<Air>,
    /// Virtual time.
    pub now_ms: u64,
}

impl Pair {
    /// Two fresh devices (seeds 1 and 2) at time `now_ms`, not connected.
    pub fn new(now_ms: u64) -> Self {
        Self {
            central: Device::new(1),
            peripheral: Device::new(2),
            air: None,
            now_ms,
        }
    }

    /// Both devices join `room`, as its two members.
    pub fn join_both(&mut self, room: RoomId) {
        let members = [
            self.central.identity.device_id(),
            self.peripheral.identity.device_id(),
        ];
        self.central.join(self.now_ms, room, &members);
        self.peripheral.join(self.now_ms, room, &members);
    }

    /// The central sees the peripheral's advertisement and connects with
    /// these air parameters. Returns whether the policy allowed it.
    pub fn discover_and_connect(&mut self, params: AirParams, seed: u64) -> bool {
        let token = self.peripheral.engine.token(self.now_ms);
        let mut r = self.central.engine.on_advert(self.now_ms, token, Some(-60));
        if r == Err(super::policy::Skip::Defer) {
            // The central's token is larger: it waits for the peripheral to
            // connect first, which it does not here; then it connects.
            self.now_ms += super::policy::CONNECT_DEFER_MS;
            r = self.central.engine.on_advert(self.now_ms, token, Some(-60));
        }
        if r.is_err() {
            return false;
        }
        self.air = Some(Air::connect(
            &mut self.central.engine,
            &mut self.peripheral.engine,
            self.now_ms,
            params,
            Some(token),
            seed,
        ));
        true
    }

    /// Runs one connection event and lets both nodes react. Returns
    /// whether any ATT value moved.
    pub fn step(&mut self) -> bool {
        let moved = match self.air.as_mut() {
            Some(air) => air.step(
                &mut self.central.engine,
                &mut self.peripheral.engine,
                self.now_ms,
            ),
            None => false,
        };
        self.central.pump(self.now_ms);
        self.peripheral.pump(self.now_ms);
        let interval = self
            .air
            .as_ref()
            .map_or(super::sim::SIM_CONN_INTERVAL_MS, |a| {
                a.params().conn_interval_ms
            });
        self.now_ms += interval;
        moved
    }

    /// Steps until `done` holds or `max_steps` pass; returns the steps taken.
    pub fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&Pair) -> bool) -> usize {
        for i in 0..max_steps {
            if done(self) {
                return i;
            }
            self.step();
        }
        max_steps
    }
}
