//! `meshrelay-sim reconcile`: measure set reconciliation between two parties.
//!
//! Builds two sets that share `n - d` items and differ in `d` (each
//! difference held by one side, chosen by coin flip), then runs a
//! [`Session`] pair over an in-memory link: every message is framed
//! ([`Frame::encode`]), fragmented for the MTU ([`Fragmenter`]), reassembled
//! ([`Reassembler`]) and decoded on the other side. Every packet byte in both
//! directions is counted, headers included.

use std::collections::BTreeSet;

use anyhow::{Context, bail, ensure};
use meshrelay::event::{EventId, RoomId};
use meshrelay::reconcile::{Item, Message, Session};
use meshrelay::wire::{Fragmenter, Frame, Reassembler};
use rand::Rng;
use rand::rngs::StdRng;
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
    /// Items in the union of both sets.
    pub n: usize,
    /// Items in exactly one set.
    pub d: usize,
    /// Difference layout.
    pub layout: Layout,
    /// Link MTU.
    pub mtu: usize,
    /// Packet bytes in both directions, headers and fragmentation included.
    pub bytes: usize,
    /// Round trips (a request flight and its answer count as one).
    pub round_trips: usize,
}

fn random_item(rng: &mut StdRng, ts_ms: u64) -> Item {
    let mut id = [0u8; 32];
    rng.fill_bytes(&mut id);
    Item {
        ts_ms,
        id: EventId(id),
    }
}

/// The two sets: (initiator, responder).
pub fn make_sets(n: usize, d: usize, layout: Layout, rng: &mut StdRng) -> (Vec<Item>, Vec<Item>) {
    let base = 1_780_000_000_000u64;
    let all: Vec<Item> = (0..n)
        .map(|i| {
            let jitter = rng.next_u64() % 1000;
            random_item(rng, base + i as u64 * 1000 + jitter)
        })
        .collect();
    let d = d.min(n);
    let diff: BTreeSet<usize> = match layout {
        Layout::Clustered => (n - d..n).collect(),
        Layout::Scattered => {
            let mut s = BTreeSet::new();
            while s.len() < d {
                s.insert((rng.next_u64() % n as u64) as usize);
            }
            s
        }
    };
    let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (i, it) in all.into_iter().enumerate() {
        if !diff.contains(&i) {
            a.push(it);
            b.push(it);
        } else if rng.next_u64() & 1 == 0 {
            a.push(it);
        } else {
            b.push(it);
        }
    }
    (a, b)
}

/// One direction of the in-memory link.
struct Pipe {
    frag: Fragmenter,
    reasm: Reassembler,
    bytes: usize,
}

impl Pipe {
    fn new() -> Self {
        Pipe {
            frag: Fragmenter::new(),
            reasm: Reassembler::new(),
            bytes: 0,
        }
    }

    /// Frames, fragments, "transmits", reassembles and decodes `msgs`.
    fn carry(&mut self, msgs: Vec<Message>, mtu: usize) -> anyhow::Result<Vec<Message>> {
        let mut out = Vec::new();
        for msg in msgs {
            if std::env::var_os("SIM_TRACE").is_some() {
                let desc = match &msg {
                    Message::Symbols { start, symbols } => {
                        format!("Symbols {start}+{}", symbols.len())
                    }
                    Message::Decoded { you_lack, i_lack } => {
                        format!("Decoded {}/{}", you_lack.len(), i_lack.len())
                    }
                    other => format!("{other:?}").chars().take(60).collect(),
                };
                eprintln!("trace: {desc}");
            }
            let frame = Frame::Reconcile { session: 1, msg }.encode();
            for packet in self.frag.fragment(&frame, mtu)? {
                self.bytes += packet.len();
                if let Some(whole) = self.reasm.receive(0, &packet)? {
                    match Frame::decode(&whole)? {
                        Frame::Reconcile { msg, .. } => out.push(msg),
                        other => bail!("unexpected frame {other:?}"),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Runs one reconciliation and checks its result against the truth.
pub fn run(
    n: usize,
    d: usize,
    layout: Layout,
    mtu: usize,
    rng: &mut StdRng,
) -> anyhow::Result<Report> {
    let (a, b) = make_sets(n, d, layout, rng);
    let room = RoomId([7; 16]);
    let mut salt = [0u8; 8];
    rng.fill_bytes(&mut salt);
    let (mut ini, init) = Session::initiate(room, a.clone(), salt);
    let (mut a_to_b, mut b_to_a) = (Pipe::new(), Pipe::new());
    let first = a_to_b.carry(vec![init], mtu)?;
    let first = first.first().context("Init lost")?;
    let (mut resp, mut msgs) = Session::respond(b.clone(), first).context("not an Init")?;
    let mut flights: usize = 1;
    let mut towards_a = true;
    while !msgs.is_empty() {
        flights += 1;
        ensure!(flights < 64, "reconciliation did not converge");
        if towards_a {
            let mut replies = Vec::new();
            for m in b_to_a.carry(msgs, mtu)? {
                replies.extend(ini.handle(m)?);
            }
            msgs = replies;
        } else {
            let mut replies = Vec::new();
            for m in a_to_b.carry(msgs, mtu)? {
                replies.extend(resp.handle(m)?);
            }
            msgs = replies;
        }
        towards_a = !towards_a;
    }
    let (oa, ob) = (
        ini.outcome().context("initiator not done")?,
        resp.outcome().context("responder not done")?,
    );
    ensure!(
        oa.failed.is_none() && ob.failed.is_none(),
        "session failed: {oa:?} {ob:?}"
    );
    let sa: BTreeSet<Item> = a.iter().copied().collect();
    let sb: BTreeSet<Item> = b.iter().copied().collect();
    let a_only: Vec<Item> = sa.difference(&sb).copied().collect();
    let b_only: Vec<Item> = sb.difference(&sa).copied().collect();
    ensure!(oa.peer_lacks == a_only, "initiator's peer_lacks is wrong");
    ensure!(ob.peer_lacks == b_only, "responder's peer_lacks is wrong");
    ensure!(oa.i_lack.len() == b_only.len() && ob.i_lack.len() == a_only.len());
    Ok(Report {
        n,
        d,
        layout,
        mtu,
        bytes: a_to_b.bytes + b_to_a.bytes,
        round_trips: flights.div_ceil(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn once(seed: u64, layout: Layout, mtu: usize) -> String {
        let mut rng = StdRng::seed_from_u64(seed);
        serde_json::to_string(&run(2000, 50, layout, mtu, &mut rng).unwrap()).unwrap()
    }

    #[test]
    fn same_seed_same_json_and_correct_result() {
        for layout in [Layout::Clustered, Layout::Scattered] {
            let a = once(42, layout, 185);
            assert_eq!(a, once(42, layout, 185));
            let r: serde_json::Value = serde_json::from_str(&a).unwrap();
            assert!(r["bytes"].as_u64().unwrap() <= 64 * 50 + 512, "{a}");
        }
    }

    #[test]
    fn identical_sets_fit_64_bytes_in_one_round_trip() {
        let mut rng = StdRng::seed_from_u64(1);
        let r = run(100_000, 0, Layout::Scattered, 185, &mut rng).unwrap();
        assert_eq!(r.round_trips, 1);
        assert!(r.bytes <= 64, "{} bytes", r.bytes);
        // At the minimum BLE MTU the 53-byte Init needs 5 fragments.
        let r = run(100_000, 0, Layout::Scattered, 20, &mut rng).unwrap();
        assert_eq!((r.round_trips, r.bytes), (1, 85));
    }

    #[test]
    fn smaller_mtu_costs_more_headers() {
        let big = once(7, Layout::Scattered, 512);
        let small = once(7, Layout::Scattered, 20);
        let bytes = |s: &str| {
            serde_json::from_str::<serde_json::Value>(s).unwrap()["bytes"]
                .as_u64()
                .unwrap()
        };
        assert!(bytes(&small) > bytes(&big));
    }
}
