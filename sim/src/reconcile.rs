//! `meshrelay-sim reconcile`: measure set reconciliation between two real
//! [`Node`]s.
//!
//! Builds two stores that share `n - d` signed events of one room and
//! differ in `d` (each difference held by one side, chosen by coin flip),
//! starts two `Node`s that both carry the room, links them with an
//! in-memory link of the given MTU and runs them in lock step until both are
//! quiet: in each step every datagram in flight is delivered, the receivers
//! commit (the driver rule of `src/proto/node.rs`) and their replies are the
//! next step's flight. Every datagram byte in both directions is counted by
//! frame type, fragment headers included (`protocol-spec/wire.md`).
//!
//! * `bytes`: the reconciliation frames (`Reconcile/*`), both directions;
//! * `round_trips`: half the number of steps from the first reconciliation
//!   flight to the last, rounded up (`Init` then `Equal` is one);
//! * `hello_bytes` and `event_bytes` are reported beside them: the link's
//!   `Hello`, `Rooms` and `Offer` exchange (once per link whatever the rooms hold) and the
//!   event bodies that reconciliation found missing.
//!
//! The run then checks the outcome: both stores hold the union, and each
//! side received exactly the events it lacked, once.

use std::collections::BTreeMap;

use anyhow::ensure;
use meshrelay::crypto::Identity;
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use meshrelay::proto::{Command, Input, LinkId, LinkKind, Node, NodeConfig, Output};
use meshrelay::store::{EventStore, InsertMeta, MemoryStore, Priority, Source, SourceKey};
use meshrelay_sim::net::frame_name;
use rand::rngs::{ChaCha8Rng, StdRng};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Where the differences sit in the timestamp order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The `d` newest items.
    Clustered,
    /// `d` items chosen uniformly from the whole history.
    Scattered,
}

/// One measurement, printed as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Events in the union of both stores.
    pub n: usize,
    /// Events in exactly one store.
    pub d: usize,
    /// Difference layout.
    pub layout: Layout,
    /// Link MTU.
    pub mtu: usize,
    /// Reconciliation datagram bytes in both directions, frame and fragment
    /// headers included, event bodies and the link's Hello excluded.
    pub bytes: usize,
    /// Round trips of reconciliation.
    pub round_trips: usize,
    /// The Hello, Rooms and Offer exchange's bytes (once per link, not per room).
    pub hello_bytes: usize,
    /// Bytes of the frames that carried the missing events.
    pub event_bytes: usize,
    /// Every other frame's bytes (announcements and the like).
    pub other_bytes: usize,
}

/// Distinct signers of the generated history (each with its own sequence).
const SIGNERS: usize = 16;
/// Payload bytes of each generated event.
const PAYLOAD_BYTES: usize = 16;
/// The clock both nodes run on (ms since the epoch).
const START_MS: u64 = 1_780_000_000_000;
/// One virtual step: a one-way BLE latency.
const STEP_MS: u64 = 15;
/// Steps (or idle timer wake-ups) after which the run is declared stuck.
const MAX_STEPS: usize = 100_000;
/// With nothing on the wire, timers further away than this (the next
/// anti-entropy period) mean both nodes are quiet.
const QUIET_HORIZON_MS: u64 = 10_000;

/// The two stores' events: (initiator-side, responder-side). Both nodes'
/// identities are separate from the signers'.
fn make_events(n: usize, d: usize, layout: Layout, rng: &mut StdRng) -> (Vec<Event>, Vec<Event>) {
    let room = RoomId([7; 16]);
    let signers: Vec<Identity> = (0..SIGNERS)
        .map(|_| {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            Identity::from_seed(&s)
        })
        .collect();
    let d = d.min(n);
    let first_ts = START_MS - n as u64 * 1000 - 10_000;
    let differs: Vec<bool> = match layout {
        Layout::Clustered => (0..n).map(|i| i >= n - d).collect(),
        Layout::Scattered => {
            let mut v = vec![false; n];
            let mut left = d;
            while left > 0 {
                let i = (rng.next_u64() % n as u64) as usize;
                if !v[i] {
                    v[i] = true;
                    left -= 1;
                }
            }
            v
        }
    };
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (i, differs) in differs.into_iter().enumerate() {
        let signer = &signers[i % SIGNERS];
        let mut payload = vec![0u8; PAYLOAD_BYTES];
        rng.fill_bytes(&mut payload);
        let ev = UnsignedEvent {
            room,
            sender: signer.device_id(),
            seq: (i / SIGNERS) as u64 + 1,
            prev: Vec::new(),
            origin_ts_ms: first_ts + i as u64 * 1000 + rng.next_u64() % 1000,
            expires_ms: START_MS + meshrelay::limits::DEFAULT_EVENT_LIFETIME_MS,
            kind: EventKind::Message,
            payload,
        }
        .sign(signer)
        .expect("generated events are within limits");
        if !differs {
            a.push(ev.clone());
            b.push(ev);
        } else if rng.next_u64() & 1 == 0 {
            a.push(ev);
        } else {
            b.push(ev);
        }
    }
    (a, b)
}

/// One side: a real node over a memory store that holds `events`.
fn make_node(events: &[Event], rng: &mut StdRng) -> anyhow::Result<Node<MemoryStore, ChaCha8Rng>> {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let me = Identity::from_seed(&seed);
    let mut store = MemoryStore::new_memory();
    let meta = InsertMeta {
        priority: Priority::OwnRoom,
        source: Source::Local,
        received_ms: START_MS,
        carried: false,
    };
    for ev in events {
        store.insert_event(ev, &meta)?;
    }
    store.commit()?;
    let node_rng = ChaCha8Rng::seed_from_u64(rng.next_u64());
    let mut node = Node::new(
        me.device_id(),
        store,
        node_rng,
        NodeConfig::default(),
        START_MS,
    );
    if let Some(room) = events.first().map(Event::room) {
        // The events' signers are the room's members (their events are
        // the own-room class).
        let members = events.iter().map(Event::sender).collect();
        node.handle(
            START_MS,
            Input::Command(Command::JoinRoom { room, members }),
        )?;
    }
    Ok(node)
}

/// What a datagram counts towards.
fn bucket(name: Option<&'static str>) -> &'static str {
    match name {
        Some(n) if n.starts_with("reconcile") => "reconcile",
        Some("hello") => "hello",
        Some("events") => "events",
        _ => "other",
    }
}

/// One direction of the link: datagrams in flight and byte counts.
#[derive(Default)]
struct Pipe {
    in_flight: Vec<Vec<u8>>,
    /// The bucket of the frame whose fragments are being sent.
    current: &'static str,
    bytes: BTreeMap<&'static str, usize>,
}

impl Pipe {
    /// Counts one datagram towards its frame's bucket and queues it.
    fn push(&mut self, bytes: Vec<u8>) {
        if let Some(name) = frame_name(&bytes) {
            self.current = bucket(Some(name));
        } else if self.current.is_empty() {
            self.current = "other";
        }
        *self.bytes.entry(self.current).or_default() += bytes.len();
        self.in_flight.push(bytes);
    }
}

/// Commits if asked, then moves the node's datagrams into `pipe`.
fn settle(
    node: &mut Node<MemoryStore, ChaCha8Rng>,
    now: u64,
    pipe: &mut Pipe,
) -> anyhow::Result<()> {
    if node.needs_commit() {
        node.store_mut().commit()?;
        node.handle(now, Input::CommitDone)?;
    }
    while let Some(out) = node.poll_output() {
        match out {
            Output::Transmit { bytes, .. } => pipe.push(bytes),
            Output::Close { reason, .. } => anyhow::bail!("a node closed the link: {reason}"),
            Output::App(_) => {}
        }
    }
    Ok(())
}

/// Runs one reconciliation between two nodes and checks its result.
pub fn run(
    n: usize,
    d: usize,
    layout: Layout,
    mtu: usize,
    rng: &mut StdRng,
) -> anyhow::Result<Report> {
    let (a_events, b_events) = make_events(n, d, layout, rng);
    let mut a = make_node(&a_events, rng)?;
    let mut b = make_node(&b_events, rng)?;
    let link = LinkId(1);
    let mut now = START_MS;
    for (node, src) in [(&mut a, 1u8), (&mut b, 2u8)] {
        node.handle(
            now,
            Input::LinkUp {
                link,
                kind: LinkKind::Ble,
                mtu,
                source: SourceKey([src; 16]),
            },
        )?;
    }
    let (mut a_to_b, mut b_to_a) = (Pipe::default(), Pipe::default());
    settle(&mut a, now, &mut a_to_b)?;
    settle(&mut b, now, &mut b_to_a)?;
    // Steps that delivered reconciliation datagrams.
    let (mut first_recon, mut last_recon) = (None, 0usize);
    let (mut step, mut idle) = (0usize, 0usize);
    loop {
        let flights = [
            std::mem::take(&mut a_to_b.in_flight),
            std::mem::take(&mut b_to_a.in_flight),
        ];
        if flights.iter().all(Vec::is_empty) {
            // Nothing on the wire: wake whichever node has a timer due
            // (pacing, anti-entropy) unless only far periodic work is left.
            let next = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next.filter(|t| *t <= now + QUIET_HORIZON_MS) else {
                break;
            };
            idle += 1;
            ensure!(
                idle < MAX_STEPS,
                "a node's timer keeps firing with nothing to send"
            );
            now = now.max(t);
            for (node, pipe) in [(&mut a, &mut a_to_b), (&mut b, &mut b_to_a)] {
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle(now, Input::Timeout)?;
                    settle(node, now, pipe)?;
                }
            }
            continue;
        }
        step += 1;
        ensure!(step < MAX_STEPS, "the nodes did not go quiet");
        now += STEP_MS;
        let [to_b, to_a] = flights;
        let carried_recon = to_b
            .iter()
            .chain(&to_a)
            .any(|p| bucket(frame_name(p)) == "reconcile");
        if carried_recon {
            first_recon.get_or_insert(step);
            last_recon = step;
        }
        for (node, flight, back) in [(&mut b, to_b, &mut b_to_a), (&mut a, to_a, &mut a_to_b)] {
            for bytes in flight {
                node.handle(now, Input::Received { link, bytes })?;
            }
            settle(node, now, back)?;
        }
        // Both directions were delivered: the senders' buffers are empty.
        for (node, pipe) in [(&mut a, &mut a_to_b), (&mut b, &mut b_to_a)] {
            node.handle(now, Input::Drained(link))?;
            settle(node, now, pipe)?;
        }
    }
    check_union(&a, &b, &a_events, &b_events)?;
    let total = |k: &str| {
        a_to_b.bytes.get(k).copied().unwrap_or(0) + b_to_a.bytes.get(k).copied().unwrap_or(0)
    };
    let round_trips = first_recon.map_or(0, |f| (last_recon - f + 1).div_ceil(2));
    Ok(Report {
        n,
        d,
        layout,
        mtu,
        bytes: total("reconcile"),
        round_trips,
        hello_bytes: total("hello"),
        event_bytes: total("events"),
        other_bytes: total("other"),
    })
}

/// Both stores hold the union, and each node stored exactly the events it
/// lacked (its event counter grew by that many, no duplicates arrived).
fn check_union(
    a: &Node<MemoryStore, ChaCha8Rng>,
    b: &Node<MemoryStore, ChaCha8Rng>,
    a_events: &[Event],
    b_events: &[Event],
) -> anyhow::Result<()> {
    for ev in a_events.iter().chain(b_events) {
        let id = ev.id();
        ensure!(a.store().has_event(&id)?, "side A lacks {id:?} at the end");
        ensure!(b.store().has_event(&id)?, "side B lacks {id:?} at the end");
    }
    let a_ids: std::collections::BTreeSet<_> = a_events.iter().map(Event::id).collect();
    let b_ids: std::collections::BTreeSet<_> = b_events.iter().map(Event::id).collect();
    let a_lacked = b_ids.difference(&a_ids).count() as u64;
    let b_lacked = a_ids.difference(&b_ids).count() as u64;
    ensure!(
        a.stats().events_stored == a_lacked && b.stats().events_stored == b_lacked,
        "stored {}/{} events, expected {a_lacked}/{b_lacked}",
        a.stats().events_stored,
        b.stats().events_stored
    );
    ensure!(
        a.stats().duplicates == 0 && b.stats().duplicates == 0,
        "events were sent twice ({} and {} duplicates)",
        a.stats().duplicates,
        b.stats().duplicates
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn once(seed: u64, n: usize, d: usize, layout: Layout, mtu: usize) -> Report {
        let mut rng = StdRng::seed_from_u64(seed);
        run(n, d, layout, mtu, &mut rng).unwrap()
    }

    #[test]
    fn same_seed_same_json_and_within_goal() {
        for layout in [Layout::Clustered, Layout::Scattered] {
            let a = serde_json::to_string(&once(42, 2000, 50, layout, 185)).unwrap();
            let b = serde_json::to_string(&once(42, 2000, 50, layout, 185)).unwrap();
            assert_eq!(a, b);
            let r = once(42, 2000, 50, layout, 185);
            assert!(r.bytes <= 64 * 50 + 512, "{a}");
            assert!(r.round_trips <= 2, "{a}");
            assert!(r.event_bytes > 50 * PAYLOAD_BYTES, "{a}");
        }
    }

    #[test]
    fn identical_sets_fit_64_bytes_in_one_round_trip() {
        let r = once(1, 20_000, 0, Layout::Scattered, 185);
        assert_eq!(r.round_trips, 1, "{r:?}");
        assert!(r.bytes <= 64, "{r:?}");
        assert_eq!(r.event_bytes, 0, "{r:?}");
        // At the minimum BLE MTU the same exchange needs more fragments.
        let small = once(1, 20_000, 0, Layout::Scattered, 20);
        assert_eq!(small.round_trips, 1, "{small:?}");
        assert!(small.bytes > r.bytes, "{small:?}");
    }

    #[test]
    fn more_differences_than_one_session_decodes_split_and_converge() {
        let r = once(3, 12_000, 5_000, Layout::Scattered, 512);
        assert!(r.round_trips >= 2, "{r:?}");
        assert!(r.bytes <= 100 * 5_000 + 1024, "{r:?}");
    }
}
