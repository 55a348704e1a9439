//! Real rooms under a Sybil flood (issue 14; `protocol-spec/rooms.md`,
//! "Admission"; `protocol-spec/store.md`, "Priority classes").
//!
//! What is modelled: the scenario's honest nodes hold real rooms. At the
//! start each room's first member creates it (`Op::RoomCreate`) and invites
//! the others by their contact cards (`Op::RoomInvite`); the invites travel
//! through the mesh like any event, and an invitee becomes a member when
//! its invite reaches it. After `warmup_s` the workload's room messages
//! are sent as real encrypted text (`Op::Send`). The hostile nodes are
//! ordinary couriers, and in the attacked run each of them, every
//! `tick_ms`, publishes `events_per_s` validly signed events per second,
//! **each from a fresh key**, into every room whose events it has stored
//! (carried events reveal the room ID), citing the room's heads as it
//! sees them: junk messages, `leave`s and self-invites in turn (the shapes
//! of `tests/it/admission.rs`), and pushes them in `Events` frames straight
//! to every peer it is linked to, as a modified client would (its own core
//! neither stores nor checks them; receivers pay for each datagram in the
//! simulated CPU like any other).
//!
//! What is measured: delivery is what members **show** — a message line
//! with the text, decrypted at the member (`DeviceCore::messages`) — not
//! what their stores hold. Members' shown lines are read every
//! `read_interval_ms` (only rooms that changed); a line first seen at a
//! read counts from the moment its event was stored if that was after the
//! previous read (the commit that stored it also decrypted it), else from
//! the read. Both runs share the seed, the contacts and the workload; the
//! attacked one differs only by the flood.
//!
//! Invariants checked per run: no honest event a member stored was later
//! evicted, no line from a non-member key is ever shown, and (reported)
//! how many honest messages could not be sent because their sender had not
//! received its invite yet.

use std::collections::{BTreeMap, BTreeSet};

use meshrelay::app::EventPlace;
use meshrelay::app::MessageLine;
use meshrelay::crypto::{ContactCard, DeviceId, Identity};
use meshrelay::event::{Event, EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::room::Membership;
use meshrelay::store::EventStore;
use meshrelay::wire::{FRAGMENT_HEADER_BYTES, Frame};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::metrics::quantile;
use crate::net::SimNet;
use crate::scenario::Scenario;
use crate::trace::Workload;

/// Lifetime of an attacker's event (an hour: current, never refused as
/// expired during a run).
pub const ATTACK_EVENT_LIFETIME_MS: u64 = 3_600_000;

/// The `[sybil]` table of a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SybilSpec {
    /// No room message is sent before this: the invites spread first.
    #[serde(default = "d_warmup")]
    pub warmup_s: f64,
    /// Events each hostile node publishes per second into the rooms it
    /// has seen (each from a fresh key).
    pub events_per_s: f64,
    /// How often the hostile nodes act, ms.
    #[serde(default = "d_tick")]
    pub tick_ms: u64,
    /// Payload bytes of a junk message.
    #[serde(default = "d_junk")]
    pub junk_bytes: usize,
    /// How often members' shown lines are read, ms.
    #[serde(default = "d_read")]
    pub read_interval_ms: u64,
}

impl SybilSpec {
    /// Real rooms without hostile nodes (`crate::receipts`,
    /// `crate::photos`): messages after `warmup_s`, members reading every
    /// `read_interval_ms`.
    pub fn quiet(warmup_s: f64, read_interval_ms: u64) -> Self {
        SybilSpec {
            warmup_s,
            events_per_s: 0.0,
            tick_ms: 1_000,
            junk_bytes: 0,
            read_interval_ms,
        }
    }
}

fn d_warmup() -> f64 {
    300.0
}
fn d_tick() -> u64 {
    1_000
}
fn d_junk() -> usize {
    200
}
fn d_read() -> u64 {
    1_000
}

/// Why owed pairs whose event the member stored were not shown.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnshownWhy {
    /// The member never became a member of the room.
    pub not_member: u64,
    /// The member evicted the event after storing it.
    pub evicted: u64,
    /// The member's last read showed the event undecryptable.
    pub undecryptable: u64,
    /// The member holds the event and its view leaves it out.
    pub not_in_view: u64,
    /// Of those, the events waiting in the member's DAG for predecessors
    /// (the rest were refused).
    pub pending: u64,
    /// The predecessors those wait for: the member stores them / some
    /// honest node stores them / nobody does.
    pub missing_held_elsewhere_nowhere: (u64, u64, u64),
}

/// What one run showed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SybilOutcome {
    /// Honest messages sent.
    pub messages_sent: u64,
    /// Honest messages not sent: the sender's invite had not reached it.
    pub messages_unsent: u64,
    /// (message, other member) pairs owed.
    pub pairs_owed: u64,
    /// Pairs whose member shows the message's text by the end.
    pub pairs_shown: u64,
    /// `pairs_shown / pairs_owed`.
    pub delivery_ratio: f64,
    /// Median of send-to-shown latency, s.
    pub latency_median_s: f64,
    /// 90th percentile of send-to-shown latency, s.
    pub latency_p90_s: f64,
    /// Invitees whose invite reached them by the end, of all invitees.
    pub members_joined: u64,
    /// All invitees.
    pub members_invited: u64,
    /// Events the hostile nodes published.
    pub attack_events: u64,
    /// Attackers' events stored at honest room members (as strangers'
    /// traffic, outside the rooms' histories).
    pub attack_events_at_members: u64,
    /// Received events the honest members' rooms layers refused.
    pub refused_at_members: u64,
    /// Honest events of a room a member stored after it joined the room
    /// and later lost (must be 0).
    pub honest_evicted: u64,
    /// Honest events of a room a member stored before its invite reached
    /// it (as anyone's traffic) and no longer holds: the strangers' pool
    /// may evict those.
    pub honest_lost_before_join: u64,
    /// Lines shown at honest members from keys of no honest node (must
    /// be 0).
    pub foreign_lines: u64,
    /// Bytes transmitted by all nodes.
    pub bytes_on_air: u64,
    /// Of those, bytes the honest nodes transmitted (what a flood costs
    /// the members' and carriers' own links).
    pub honest_bytes_on_air: u64,
    /// The same, per frame type.
    pub honest_airtime_by_frame: BTreeMap<String, u64>,
    /// Owed pairs not shown by the end whose event the member did store:
    /// the rest never reached it.
    pub unshown_stored: u64,
    /// Of those, why: the member was not a member of the room by the end
    /// (its invite never reached it), the event was evicted since, the
    /// member's last read showed it undecryptable, or the member holds it
    /// and its view leaves it out (waiting in the DAG, or refused).
    pub unshown_why: UnshownWhy,
    /// Over honest nodes: events sent, duplicates received, links
    /// penalised.
    pub honest_sent_dup_penalised: (u64, u64, u64),
    /// Receipt events the members sent (`rooms.md` §9).
    pub receipt_events: u64,
    /// Copies of rooms' events held at the end by nodes that are not the
    /// room's members (carriers).
    pub carried_copies: u64,
    /// Of those, the copies a carrier may drop by `rooms.md` §9 "Carried
    /// copies": every member signed an event it holds that cites it.
    pub carried_droppable: u64,
    /// Bytes of those droppable copies.
    pub carried_droppable_bytes: u64,
    /// Carried copies the carriers dropped during the run by that rule
    /// (`NodeStats::carried_dropped`, summed over every node).
    pub carried_dropped: u64,
    /// Bytes on air per frame type.
    pub airtime_by_frame: BTreeMap<String, u64>,
    /// Photos sent (`RunOpts::photo_every`).
    pub photos_sent: u64,
    /// (photo, other member) pairs owed.
    pub photo_pairs_owed: u64,
    /// Pairs whose member held every chunk by the end.
    pub photo_pairs_complete: u64,
    /// Median and 90th percentile of send-to-complete latency, s (at the
    /// members' reads: up to a read interval late).
    pub photo_latency_s: (f64, f64),
    /// Encoded bytes of the rooms' message events, and how many (at
    /// their senders).
    pub message_event_bytes: (u64, u64),
    /// Encoded bytes of the rooms' receipt events, and how many.
    pub receipt_event_bytes: (u64, u64),
}

/// How one run goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOpts {
    /// The hostile nodes flood.
    pub attack: bool,
    /// Devices send receipts, and a member's read of its rooms is a person
    /// reading them (read receipts).
    pub receipts: bool,
    /// How long receipts gather before they are sent (None: the core's
    /// default).
    pub receipt_delay_ms: Option<u64>,
    /// Every this many workload messages carries a photo of
    /// `photo_bytes` (0: none; `crate::photos`).
    pub photo_every: u64,
    /// A photo's size in bytes.
    pub photo_bytes: usize,
}

/// A markdown table of two runs of real rooms, one row per figure; it
/// starts with the messages sent, delivery and latency.
pub struct RunsTable<'a> {
    a: &'a SybilOutcome,
    b: &'a SybilOutcome,
    text: String,
}

impl<'a> RunsTable<'a> {
    /// A table of runs `a` and `b`, headed `left` and `right`.
    pub fn new(a: &'a SybilOutcome, b: &'a SybilOutcome, left: &str, right: &str) -> Self {
        let mut t = RunsTable {
            a,
            b,
            text: format!("| | {left} | {right} |\n| --- | ---: | ---: |\n"),
        };
        t.row("honest messages sent (unsent)", |o| {
            format!("{} ({})", o.messages_sent, o.messages_unsent)
        });
        t.row("delivery (pairs shown / owed)", |o| {
            format!(
                "{:.4} ({}/{})",
                o.delivery_ratio, o.pairs_shown, o.pairs_owed
            )
        });
        t.row("latency median / p90, s", |o| {
            format!("{:.1} / {:.1}", o.latency_median_s, o.latency_p90_s)
        });
        t
    }

    /// A row of `figure` for both runs.
    pub fn row(&mut self, name: &str, figure: impl Fn(&SybilOutcome) -> String) {
        let (x, y) = (figure(self.a), figure(self.b));
        self.cells(name, &x, &y);
    }

    /// A row of given cells.
    pub fn cells(&mut self, name: &str, x: &str, y: &str) {
        self.text.push_str(&format!("| {name} | {x} | {y} |\n"));
    }

    /// The table's text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// Both runs of a scenario, same seed.
#[derive(Debug, Clone, Serialize)]
pub struct SybilComparison {
    /// The seed.
    pub seed: u64,
    /// The hostile nodes flood.
    pub with_attack: SybilOutcome,
    /// The hostile nodes only carry.
    pub without_attack: SybilOutcome,
}

impl SybilComparison {
    /// Median latency with the flood over without it.
    pub fn median_ratio(&self) -> f64 {
        let base = self.without_attack.latency_median_s;
        if base > 0.0 {
            self.with_attack.latency_median_s / base
        } else {
            1.0
        }
    }

    /// A markdown table of both runs.
    pub fn table(&self) -> String {
        let mut t = RunsTable::new(
            &self.without_attack,
            &self.with_attack,
            "without attack",
            "with attack",
        );
        t.row("invitees joined", |o| {
            format!("{}/{}", o.members_joined, o.members_invited)
        });
        t.row("attack events published", |o| o.attack_events.to_string());
        t.row("attack events stored at members (strangers' pool)", |o| {
            o.attack_events_at_members.to_string()
        });
        t.row("events refused by members' rooms", |o| {
            o.refused_at_members.to_string()
        });
        t.row("honest events evicted after the member joined", |o| {
            o.honest_evicted.to_string()
        });
        t.row("honest events stored before the join, then lost", |o| {
            o.honest_lost_before_join.to_string()
        });
        t.row("lines from non-member keys", |o| {
            o.foreign_lines.to_string()
        });
        t.row("bytes on air", |o| o.bytes_on_air.to_string());
        t.row("of which sent by honest nodes", |o| {
            o.honest_bytes_on_air.to_string()
        });
        t.row(
            "owed pairs not shown: the member stored the event / never did",
            |o| {
                let unshown = o.pairs_owed.saturating_sub(o.pairs_shown);
                format!("{} / {}", o.unshown_stored, unshown - o.unshown_stored)
            },
        );
        t.row(
            "of the stored: not a member / evicted since / undecryptable / held, not in the view",
            |o| {
                let w = &o.unshown_why;
                format!(
                    "{} / {} / {} / {}",
                    w.not_member, w.evicted, w.undecryptable, w.not_in_view
                )
            },
        );
        t.row(
            "of the held: pending (missing predecessors: at the member / elsewhere / nowhere)",
            |o| {
                let w = &o.unshown_why;
                let (a, b, c) = w.missing_held_elsewhere_nowhere;
                format!("{} ({a} / {b} / {c})", w.pending)
            },
        );
        t.row(
            "honest nodes: events sent / duplicates received / links penalised",
            |o| {
                let (a, b, c) = o.honest_sent_dup_penalised;
                format!("{a} / {b} / {c}")
            },
        );
        let kinds: BTreeSet<&String> = [&self.without_attack, &self.with_attack]
            .iter()
            .flat_map(|o| o.honest_airtime_by_frame.keys())
            .collect();
        for k in kinds {
            t.row(&format!("honest nodes' `{k}` bytes"), |o| {
                o.honest_airtime_by_frame
                    .get(k)
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            });
        }
        t.finish()
    }
}

/// Runs the scenario twice with `seed` (without, then with the flood).
/// `progress` gets the run's label and the fraction of virtual time done.
pub fn compare(
    sc: &Scenario,
    spec: &SybilSpec,
    seed: u64,
    progress: &mut dyn FnMut(&str, f64),
) -> SybilComparison {
    let w = sc.workload(seed);
    let hostile = sc.hostile_nodes();
    let quiet = RunOpts {
        receipts: true,
        ..RunOpts::default()
    };
    let loud = RunOpts {
        attack: true,
        ..quiet
    };
    let without_attack = run(sc, spec, &w, &hostile, seed, quiet, &mut |f| {
        progress("without attack", f)
    });
    let with_attack = run(sc, spec, &w, &hostile, seed, loud, &mut |f| {
        progress("with attack", f)
    });
    SybilComparison {
        seed,
        with_attack,
        without_attack,
    }
}

/// One honest message.
struct Sent {
    room: usize,
    at_ms: u64,
    text: String,
    /// Members owed it (the room's other members).
    to: Vec<usize>,
}

/// One run state: the network and what is known of the honest traffic.
struct Run<'a> {
    net: SimNet,
    w: &'a Workload,
    rooms: Vec<RoomId>,
    /// Real room ID -> workload room index.
    room_index: BTreeMap<RoomId, usize>,
    honest_devices: BTreeSet<DeviceId>,
    sent: BTreeMap<EventId, Sent>,
    /// (member, event) -> when it was first shown.
    shown: BTreeMap<(usize, EventId), u64>,
    last_read_ms: u64,
    /// (member, room index) -> the first read at which it held the room.
    joined_at: BTreeMap<(usize, usize), u64>,
    foreign_lines: u64,
    /// (member, event) of honest messages a member's last read showed as
    /// undecryptable.
    undecryptable: BTreeMap<(usize, EventId), String>,
    /// Reads are people reading (read receipts).
    receipts: bool,
    /// Photo workload (`RunOpts::photo_every`, `photo_bytes`).
    photo_every: u64,
    photo_bytes: usize,
    /// Photos sent.
    photos: BTreeSet<EventId>,
    /// (member, photo) -> when a read first found it complete.
    photo_done: BTreeMap<(usize, EventId), u64>,
}

/// Runs the scenario once: the hostile nodes flood if `attack`.
pub fn run(
    sc: &Scenario,
    spec: &SybilSpec,
    w: &Workload,
    hostile: &[usize],
    seed: u64,
    opts: RunOpts,
    progress: &mut dyn FnMut(f64),
) -> SybilOutcome {
    let attack = opts.attack;
    let settings = sc.settings(seed);
    let model = settings.model;
    let mut net = SimNet::new(w.nodes, seed, settings.node, settings.store);
    for n in &mut net.nodes {
        n.core.set_receipts(opts.receipts);
        if let Some(ms) = opts.receipt_delay_ms {
            n.core.set_receipt_delay(ms);
        }
    }
    for (k, &a) in w.backhaul.iter().enumerate() {
        for &b in &w.backhaul[k + 1..] {
            net.connect(a, b, model.lan);
        }
    }
    let hostile_set: BTreeSet<usize> = hostile.iter().copied().collect();
    let honest_devices = (0..w.nodes)
        .filter(|i| !hostile_set.contains(i))
        .map(|i| net.nodes[i].identity.device_id())
        .collect();
    let mut out = SybilOutcome::default();
    // Every room is created by its first member, who invites the others.
    let mut rooms = Vec::new();
    for (r, members) in w.rooms.iter().enumerate() {
        let Some(&admin) = members.first() else {
            continue;
        };
        let room = net
            .room_create(admin, &format!("room {r}"))
            .expect("a fresh device creates a room");
        for &m in &members[1..] {
            net.room_invite(admin, room, m)
                .expect("the creator invites a valid card");
            out.members_invited += 1;
        }
        rooms.push(room);
    }
    let room_index = rooms.iter().enumerate().map(|(k, r)| (*r, k)).collect();
    let mut st = Run {
        net,
        w,
        rooms,
        room_index,
        honest_devices,
        sent: BTreeMap::new(),
        shown: BTreeMap::new(),
        last_read_ms: 0,
        joined_at: BTreeMap::new(),
        foreign_lines: 0,
        undecryptable: BTreeMap::new(),
        receipts: opts.receipts,
        photo_every: opts.photo_every,
        photo_bytes: opts.photo_bytes,
        photos: BTreeSet::new(),
        photo_done: BTreeMap::new(),
    };
    let backhaul: BTreeSet<usize> = w.backhaul.iter().copied().collect();
    let warmup_ms = (spec.warmup_s * 1000.0) as u64;
    let messages: Vec<usize> = (0..w.messages.len())
        .filter(|&m| w.messages[m].room.is_some() && w.messages[m].t_ms >= warmup_ms)
        .collect();
    let mut attack_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5359_4249_4c00);
    let mut flooders: Vec<Flooder> = hostile.iter().map(|_| Flooder::default()).collect();
    let mut attack_count = 0u64;
    let mut owed_events = 0.0f64;
    let tick = spec.tick_ms.max(1);
    let read_every = spec.read_interval_ms.max(1);
    let (mut ci, mut mi) = (0, 0);
    let (mut next_read, mut next_tick) = (read_every, tick);
    let end = w.end_ms;
    loop {
        let tc = w.contacts.get(ci).map_or(u64::MAX, |c| c.t_ms);
        let tm = messages.get(mi).map_or(u64::MAX, |&m| w.messages[m].t_ms);
        let ta = if attack { next_tick } else { u64::MAX };
        let t = tc.min(tm).min(next_read).min(ta);
        if t > end {
            break;
        }
        st.net.run_until(t);
        if t == tc {
            let c = w.contacts[ci];
            ci += 1;
            if !(backhaul.contains(&c.a) && backhaul.contains(&c.b)) {
                if c.up {
                    st.net.connect(c.a, c.b, model.params(c.lan));
                } else {
                    st.net.disconnect(c.a, c.b);
                }
            }
        } else if t == tm {
            st.send(messages[mi], &mut out);
            mi += 1;
        } else if t == next_read {
            st.read(false);
            next_read += read_every;
            progress(t as f64 / end.max(1) as f64);
        } else {
            owed_events += spec.events_per_s * tick as f64 / 1000.0;
            let n = owed_events.floor();
            owed_events -= n;
            for (&h, f) in hostile.iter().zip(flooders.iter_mut()) {
                attack_count += flood(&mut st.net, h, n as u64, spec, &mut attack_rng, f);
            }
            next_tick += tick;
        }
    }
    st.net.run_until(end);
    st.read(true);
    progress(1.0);
    out.attack_events = attack_count;
    st.finish(&mut out);
    for i in (0..w.nodes).filter(|i| !hostile_set.contains(i)) {
        let s = st.net.nodes[i].core.node().stats();
        let t = &mut out.honest_sent_dup_penalised;
        t.0 += s.events_sent;
        t.1 += s.duplicates;
        t.2 += s.links_penalised;
    }
    out.honest_airtime_by_frame = named(st.net.airtime_by_frame_of(|i| !hostile_set.contains(&i)));
    out.honest_bytes_on_air = out.honest_airtime_by_frame.values().sum();
    out
}

/// Bytes per frame type, keyed by owned names (what outcomes serialise).
fn named(by_frame: BTreeMap<&'static str, u64>) -> BTreeMap<String, u64> {
    by_frame
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

impl Run<'_> {
    /// Sends workload message `m` as real text, if its sender is a member.
    fn send(&mut self, m: usize, out: &mut SybilOutcome) {
        let msg = &self.w.messages[m];
        let Some(r) = msg.room else {
            return;
        };
        let room = self.rooms[r];
        let text = format!("{} from node {} in room {r}", msg.name, msg.from);
        if !self.net.is_member(msg.from, &room) {
            out.messages_unsent += 1;
            return;
        }
        let photo = self.photo_every > 0 && (m as u64).is_multiple_of(self.photo_every);
        let sent = if photo {
            self.send_photo(msg.from, room, m, &text)
        } else {
            self.net.send_text(msg.from, room, &text)
        };
        match sent {
            Ok(id) => {
                if photo {
                    self.photos.insert(id);
                    out.photos_sent += 1;
                }
                out.messages_sent += 1;
                let to = self.w.rooms[r]
                    .iter()
                    .copied()
                    .filter(|&x| x != msg.from)
                    .collect();
                self.sent.insert(
                    id,
                    Sent {
                        room: r,
                        at_ms: self.net.now_ms(),
                        text,
                        to,
                    },
                );
            }
            Err(_) => out.messages_unsent += 1,
        }
    }

    /// Node `from` sends workload message `m` as a photo captioned `text`.
    fn send_photo(
        &mut self,
        from: usize,
        room: RoomId,
        m: usize,
        text: &str,
    ) -> Result<EventId, crate::rooms::RoomOpError> {
        let bytes: Vec<u8> = (0..self.photo_bytes)
            .map(|i| ((i as u64).wrapping_mul(2_654_435_761) ^ m as u64) as u8)
            .collect();
        let op = meshrelay::control::Op::Send {
            room: room.to_string(),
            text: text.to_owned(),
            via: None,
            location: None,
            urgent: false,
            file: Some(meshrelay::control::FileData {
                name: format!("photo-{m}.jpg"),
                media_type: "image/jpeg".into(),
                data: data_encoding::BASE64.encode(&bytes),
            }),
        };
        match self.net.op(from, &op)? {
            meshrelay::control::OkData::Sent { event_id, .. } => event_id
                .parse()
                .map_err(|_| crate::rooms::RoomOpError::Reply("event ID".into())),
            other => Err(crate::rooms::RoomOpError::Reply(format!("{other:?}"))),
        }
    }

    /// Reads the shown lines of every member that stored an honest
    /// message of the room it does not show yet (every member's rooms if
    /// `all`), and records lines seen for the first time. Reading only
    /// then keeps the rebuilds of `messages` off the flood's pace.
    fn read(&mut self, all: bool) {
        let now = self.net.now_ms();
        let mut due: BTreeSet<(usize, usize)> = BTreeSet::new();
        for (id, s) in &self.sent {
            let photo = self.photos.contains(id);
            for &m in &s.to {
                let arriving = photo
                    && self.shown.contains_key(&(m, *id))
                    && !self.photo_done.contains_key(&(m, *id));
                if all
                    || arriving
                    || (!self.shown.contains_key(&(m, *id))
                        && self.net.nodes[m].delivered.contains_key(id))
                {
                    due.insert((m, s.room));
                }
            }
        }
        for (i, r) in due {
            let room = self.rooms[r];
            if !self.net.is_member(i, &room) {
                continue;
            }
            let lines = if self.receipts {
                self.net.read(i, &room)
            } else {
                self.net.shown(i, &room)
            };
            let Ok(lines) = lines else {
                continue;
            };
            for line in lines {
                self.record(i, &line, now);
            }
        }
        for (r, members) in self.w.rooms.iter().enumerate() {
            for &m in members {
                if !self.joined_at.contains_key(&(m, r)) && self.net.is_member(m, &self.rooms[r]) {
                    self.joined_at.insert((m, r), now);
                }
            }
        }
        self.last_read_ms = now;
    }

    fn record(&mut self, i: usize, line: &MessageLine, now: u64) {
        let (event_id, sender, text) = match line {
            MessageLine::Text {
                event_id,
                sender,
                text,
                ..
            } => (event_id, sender, Some(text)),
            MessageLine::Undecryptable {
                event_id, sender, ..
            }
            | MessageLine::Unauthorized {
                event_id, sender, ..
            } => (event_id, sender, None),
            MessageLine::Gap { .. } | MessageLine::Fork { .. } => return,
        };
        let honest = sender
            .parse::<DeviceId>()
            .is_ok_and(|d| self.honest_devices.contains(&d));
        if !honest {
            self.foreign_lines += 1;
            return;
        }
        let Ok(id) = event_id.parse::<EventId>() else {
            return;
        };
        let Some(text) = text else {
            if let MessageLine::Undecryptable { reason, .. } = line {
                self.undecryptable.insert((i, id), reason.clone());
            }
            return;
        };
        self.undecryptable.remove(&(i, id));
        if let MessageLine::Text {
            attachment: Some(a),
            ..
        } = line
            && a.complete
            && self.photos.contains(&id)
        {
            self.photo_done.entry((i, id)).or_insert(now);
        }
        if self.sent.get(&id).is_none_or(|s| &s.text != text) || self.shown.contains_key(&(i, id)) {
            return;
        }
        let stored = self.net.nodes[i].delivered.get(&id).copied();
        let at = match stored {
            Some(t) if t > self.last_read_ms => t,
            _ => now,
        };
        self.shown.insert((i, id), at);
    }

    /// Delivery, latency and the invariants.
    fn finish(&mut self, out: &mut SybilOutcome) {
        let mut lat = Vec::new();
        let mut hidden = Vec::new();
        for (id, s) in &self.sent {
            for &m in &s.to {
                out.pairs_owed += 1;
                if let Some(&at) = self.shown.get(&(m, *id)) {
                    out.pairs_shown += 1;
                    lat.push(at.saturating_sub(s.at_ms) as f64 / 1000.0);
                } else if self.net.nodes[m].delivered.contains_key(id) {
                    out.unshown_stored += 1;
                    let why = &mut out.unshown_why;
                    if !self.net.is_member(m, &self.rooms[s.room]) {
                        why.not_member += 1;
                    } else if !self.net.nodes[m]
                        .core
                        .store()
                        .has_event(id)
                        .unwrap_or(false)
                    {
                        why.evicted += 1;
                    } else if let Some(reason) = self.undecryptable.get(&(m, *id)) {
                        why.undecryptable += 1;
                        if why.undecryptable <= MAX_LOSSES_SHOWN {
                            eprintln!(
                                "undecryptable at member {m}, room {}, event {id}: {reason}",
                                s.room
                            );
                        }
                    } else {
                        why.not_in_view += 1;
                        hidden.push((m, s.room, *id));
                    }
                }
            }
        }
        self.explain_hidden(&hidden, &mut out.unshown_why);
        lat.sort_by(f64::total_cmp);
        out.delivery_ratio = if out.pairs_owed > 0 {
            out.pairs_shown as f64 / out.pairs_owed as f64
        } else {
            1.0
        };
        out.latency_median_s = quantile(&lat, 0.5);
        out.latency_p90_s = quantile(&lat, 0.9);
        let mut photo_lat = Vec::new();
        for id in &self.photos {
            let Some(s) = self.sent.get(id) else { continue };
            for &m in &s.to {
                out.photo_pairs_owed += 1;
                if let Some(&at) = self.photo_done.get(&(m, *id)) {
                    out.photo_pairs_complete += 1;
                    photo_lat.push(at.saturating_sub(s.at_ms) as f64 / 1000.0);
                }
            }
        }
        photo_lat.sort_by(f64::total_cmp);
        out.photo_latency_s = (quantile(&photo_lat, 0.5), quantile(&photo_lat, 0.9));
        out.foreign_lines = self.foreign_lines;
        out.bytes_on_air = self.net.bytes_on_air;
        out.airtime_by_frame = named(self.net.airtime_by_frame());
        self.carried(out);
        // Honest events (every event an honest operation published) a
        // member of their room stored, and no longer holds.
        let mut members: BTreeSet<usize> = BTreeSet::new();
        for (r, ms) in self.w.rooms.iter().enumerate() {
            let room = self.rooms[r];
            for &m in ms {
                if m != ms[0] && self.net.is_member(m, &room) {
                    out.members_joined += 1;
                }
                members.insert(m);
            }
        }
        for &m in &members {
            let n = &self.net.nodes[m];
            out.refused_at_members += n.refused;
            for id in n.delivered.keys() {
                let Ok(Some(info)) = n.core.store().event_info(id) else {
                    continue;
                };
                if self.room_index.contains_key(&info.room)
                    && !self.honest_devices.contains(&info.sender)
                {
                    out.attack_events_at_members += 1;
                }
            }
        }
        // Honest events of a room at its members: once they hold the room
        // every one must stay; before that a member carries them as
        // anyone's traffic.
        for p in 0..self.net.nodes.len() {
            for id in &self.net.nodes[p].published {
                let Some(room) = self.published_room(p, id) else {
                    continue;
                };
                let Some(&r) = self.room_index.get(&room) else {
                    continue;
                };
                for &m in &self.w.rooms[r] {
                    let n = &self.net.nodes[m];
                    let Some(&stored) = n.delivered.get(id) else {
                        continue;
                    };
                    if n.core.store().has_event(id).unwrap_or(false) {
                        continue;
                    }
                    // Joined (first seen holding the room) at a read; a
                    // member never seen holding it counts as not joined.
                    match self.joined_at.get(&(m, r)) {
                        Some(&j) if stored >= j => {
                            out.honest_evicted += 1;
                            if out.honest_evicted <= MAX_LOSSES_SHOWN {
                                self.show_loss(m, r, p, id, stored, j);
                            }
                        }
                        _ => out.honest_lost_before_join += 1,
                    }
                }
            }
        }
    }

    /// Receipts sent, and the carried copies a carrier may drop because
    /// every member signed an event that cites them (`rooms.md` §9).
    fn carried(&self, out: &mut SybilOutcome) {
        for (r, ms) in self.w.rooms.iter().enumerate() {
            let room = self.rooms[r];
            let members: Vec<DeviceId> = ms
                .iter()
                .map(|&m| self.net.nodes[m].identity.device_id())
                .collect();
            for &m in ms {
                let me = self.net.nodes[m].identity.device_id();
                for (e, len) in self.net.events_of(m, &room) {
                    if e.sender() != me {
                        continue;
                    }
                    let slot = match e.kind() {
                        EventKind::Receipt => &mut out.receipt_event_bytes,
                        EventKind::Message => &mut out.message_event_bytes,
                        _ => continue,
                    };
                    slot.0 += len as u64;
                    slot.1 += 1;
                }
            }
            out.receipt_events = out.receipt_event_bytes.1;
            for c in 0..self.net.nodes.len() {
                if ms.contains(&c) {
                    continue;
                }
                let events = self.net.events_of(c, &room);
                let (held, droppable, bytes) = droppable_copies(&events, &members);
                out.carried_copies += held;
                out.carried_droppable += droppable;
                out.carried_droppable_bytes += bytes;
            }
        }
        out.carried_dropped = self
            .net
            .nodes
            .iter()
            .map(|n| n.core.node().stats().carried_dropped)
            .sum();
    }

    /// Prints one honest event member `m` of room `r` lost after joining
    /// (the invariant's failure), with what tells its cause apart.
    fn show_loss(&self, m: usize, r: usize, p: usize, id: &EventId, stored: u64, joined: u64) {
        let ev = self.any_copy(id);
        let (kind, seq) = ev.map_or((None, 0), |e| (Some(e.kind()), e.seq()));
        eprintln!(
            "honest event lost after its member joined: member {m}, room {r}, publisher {p} \
             (in the room's workload: {}), kind {kind:?}, seq {seq}, stored at {:.1} s, \
             joined at {:.1} s, member now: {}",
            self.w.rooms[r].contains(&p),
            stored as f64 / 1000.0,
            joined as f64 / 1000.0,
            self.net.is_member(m, &self.rooms[r]),
        );
    }

    /// Splits owed events members hold but do not show (`hidden`: member,
    /// room, event) by where they stand in the member's DAG, and prints
    /// the first few with what they wait for.
    fn explain_hidden(&mut self, hidden: &[(usize, usize, EventId)], why: &mut UnshownWhy) {
        let honest: Vec<usize> = (0..self.net.nodes.len())
            .filter(|&i| {
                self.honest_devices
                    .contains(&self.net.nodes[i].identity.device_id())
            })
            .collect();
        for (k, &(m, r, id)) in hidden.iter().enumerate() {
            let room = self.rooms[r];
            let place = self.net.nodes[m].core.place_of(&room, &id);
            let Ok(EventPlace::Pending(missing)) = place else {
                if k < MAX_LOSSES_SHOWN as usize {
                    let what = self.any_copy(&id).map(|e| (e.kind(), e.seq(), e.sender()));
                    let class = self.net.nodes[m]
                        .core
                        .store()
                        .event_info(&id)
                        .ok()
                        .flatten();
                    eprintln!(
                        "held, not shown: member {m}, room {r}, event {id} {what:?}, class {:?}: \
                         {place:?}",
                        class.map(|c| c.priority)
                    );
                }
                continue;
            };
            why.pending += 1;
            for p in &missing {
                let (held, elsewhere, nowhere) = &mut why.missing_held_elsewhere_nowhere;
                let at = |i: usize| self.net.nodes[i].core.store().has_event(p).unwrap_or(false);
                let place = if at(m) {
                    *held += 1;
                    "held by the member"
                } else if honest.iter().any(|&i| at(i)) {
                    *elsewhere += 1;
                    "held by another honest node"
                } else {
                    *nowhere += 1;
                    "held by no honest node"
                };
                if k < MAX_LOSSES_SHOWN as usize {
                    let ev = self.any_copy(p);
                    let honest = ev
                        .as_ref()
                        .map(|e| self.honest_devices.contains(&e.sender()));
                    let kind = ev.as_ref().map(Event::kind);
                    let place_at_m = self.net.nodes[m].core.place_of(&room, p).ok();
                    eprintln!(
                        "held, not shown, pending: member {m}, room {r}, event {id} waits for \
                         {p} ({place}; kind {kind:?}, honest sender {honest:?}, at the member: \
                         {place_at_m:?})"
                    );
                }
            }
        }
    }

    /// Event `id` as the first node that still stores it holds it.
    fn any_copy(&self, id: &EventId) -> Option<Event> {
        self.net.nodes.iter().find_map(|n| {
            let bytes = n.core.store().get_event(id).ok()??;
            Event::decode_unverified(&bytes).ok()
        })
    }

    /// The room of an event node `p` published (from its own store, or
    /// from any store that still holds it).
    fn published_room(&self, p: usize, id: &EventId) -> Option<RoomId> {
        std::iter::once(p)
            .chain(0..self.net.nodes.len())
            .find_map(|i| self.net.nodes[i].core.store().event_info(id).ok().flatten())
            .map(|info| info.room)
    }
}

/// Losses [`Run::show_loss`] prints per run, at most.
const MAX_LOSSES_SHOWN: u64 = 20;

/// Of a carrier's `events` of one room: how many it holds, how many every
/// one of `members` signed an event citing (directly or through events it
/// holds; its own event counts), and their bytes.
pub fn droppable_copies(events: &[(Event, usize)], members: &[DeviceId]) -> (u64, u64, u64) {
    let index: BTreeMap<EventId, usize> = events
        .iter()
        .enumerate()
        .map(|(k, (e, _))| (e.id(), k))
        .collect();
    // Members as bits of one word (the simulator's rooms are far smaller).
    if members.is_empty() || members.len() > 64 {
        return (events.len() as u64, 0, 0);
    }
    let bit = |d: &DeviceId| members.iter().position(|m| m == d).map(|p| 1u64 << p);
    let full: u64 = (0..members.len()).fold(0, |a, p| a | (1 << p));
    // Signers among each event's descendants (itself included): a child
    // passes its set to its parents once all of its own children have
    // passed theirs (Kahn's order, from the heads down).
    let parents: Vec<Vec<usize>> = events
        .iter()
        .map(|(e, _)| {
            e.prev()
                .iter()
                .filter_map(|p| index.get(p).copied())
                .collect()
        })
        .collect();
    let mut children = vec![0usize; events.len()];
    for p in parents.iter().flatten() {
        children[*p] += 1;
    }
    let mut ready: Vec<usize> = (0..events.len()).filter(|&k| children[k] == 0).collect();
    let mut seen = vec![0u64; events.len()];
    while let Some(k) = ready.pop() {
        seen[k] |= bit(&events[k].0.sender()).unwrap_or(0);
        let mine = seen[k];
        for &p in &parents[k] {
            seen[p] |= mine;
            children[p] -= 1;
            if children[p] == 0 {
                ready.push(p);
            }
        }
    }
    let mut droppable = 0;
    let mut bytes = 0;
    for (k, (_, len)) in events.iter().enumerate() {
        if seen[k] & full == full {
            droppable += 1;
            bytes += *len as u64;
        }
    }
    (events.len() as u64, droppable, bytes)
}

/// Most events in one flood frame.
pub const FLOOD_EVENTS_PER_FRAME: usize = 16;

/// Fragment IDs a flooder uses, counting down from the top of the range
/// (a node's own fragmenter counts up from 0, so the two streams of one
/// link never share an ID within a contact).
const FLOOD_FRAGMENT_ID_TOP: u16 = u16::MAX;

/// One hostile node's flood state.
#[derive(Debug, Default)]
struct Flooder {
    /// Events made so far (numbers the keys and picks the shapes).
    made: u64,
    /// Fragments sent so far (their IDs count down).
    fragments: u16,
}

/// Hostile node `h` makes `n` events for the rooms it has seen, each from
/// a fresh key, and pushes them in `Events` frames straight to every peer
/// it is linked to (a modified client: its own core neither stores nor
/// checks them). Returns how many it made.
fn flood(
    net: &mut SimNet,
    h: usize,
    n: u64,
    spec: &SybilSpec,
    rng: &mut ChaCha8Rng,
    f: &mut Flooder,
) -> u64 {
    let rooms: Vec<RoomId> = net.nodes[h].seen_rooms.iter().copied().collect();
    let peers = net.peers(h);
    if rooms.is_empty() || peers.is_empty() {
        return 0;
    }
    let now = net.now_ms();
    let mut by_room: BTreeMap<RoomId, Vec<Vec<u8>>> = BTreeMap::new();
    for _ in 0..n {
        let c = f.made;
        f.made += 1;
        let room = rooms[(c as usize) % rooms.len()];
        let mut seed = [0u8; 32];
        rng.fill(&mut seed);
        let key = Identity::from_seed(&seed);
        let (kind, payload) = match c % 3 {
            0 => {
                let mut junk = vec![0u8; spec.junk_bytes];
                rng.fill(&mut junk[..]);
                (EventKind::Message, junk)
            }
            1 => (EventKind::Membership, Membership::Leave.to_bytes()),
            _ => match ContactCard::create(&key, "x", now) {
                Ok(card) => (
                    EventKind::Membership,
                    Membership::Invite { card }.to_bytes(),
                ),
                Err(_) => continue,
            },
        };
        let prev = net.nodes[h]
            .core
            .store()
            .heads(&room)
            .unwrap_or_default()
            .into_iter()
            .take(meshrelay::limits::MAX_PREV_EVENTS)
            .collect();
        let ev = UnsignedEvent {
            room,
            sender: key.device_id(),
            seq: 1,
            prev,
            origin_ts_ms: now,
            expires_ms: now + ATTACK_EVENT_LIFETIME_MS,
            kind,
            payload,
        }
        .sign(&key);
        if let Ok(ev) = ev {
            by_room.entry(room).or_default().push(ev.bytes().to_vec());
        }
    }
    let mut made = 0;
    for (room, evs) in by_room {
        made += evs.len() as u64;
        for chunk in evs.chunks(FLOOD_EVENTS_PER_FRAME) {
            let frame = Frame::Events {
                room,
                events: chunk.to_vec(),
            }
            .encode();
            for &p in &peers {
                let Some(mtu) = net.link_mtu(h, p) else {
                    continue;
                };
                for d in packets(&frame, mtu, f) {
                    net.send_raw(h, p, d);
                }
            }
        }
    }
    made
}

/// The packets of `frame` on a link of `mtu` (`protocol-spec/wire.md`,
/// "Fragmentation"), with the flooder's fragment IDs.
fn packets(frame: &[u8], mtu: usize, f: &mut Flooder) -> Vec<Vec<u8>> {
    // A whole packet is one kind byte and the frame.
    if frame.len() < mtu {
        let mut p = vec![0u8];
        p.extend_from_slice(frame);
        return vec![p];
    }
    let chunk = mtu.saturating_sub(FRAGMENT_HEADER_BYTES).max(1);
    let count = frame.len().div_ceil(chunk);
    let Ok(count) = u16::try_from(count) else {
        return Vec::new();
    };
    let id = FLOOD_FRAGMENT_ID_TOP.wrapping_sub(f.fragments);
    f.fragments = f.fragments.wrapping_add(1);
    frame
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| {
            let mut p = vec![1u8];
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&(i as u16).to_be_bytes());
            p.extend_from_slice(&count.to_be_bytes());
            p.extend_from_slice(c);
            p
        })
        .collect()
}
