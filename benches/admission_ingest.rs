//! What admission costs at intake (`reports/admission.md`): events per
//! second through the device core (the node classes by standing, the rooms
//! layer judges every event at its causal position and decrypts the
//! members' messages before the commit) against the bare node alone (store
//! only, nothing judged: the intake of the release before the device core,
//! whose rooms layer judged later), in the same run, interleaved rounds.
//!
//! The input: a real room (created, B invited, through the typed
//! operations), `HONEST` encrypted messages from member B, and `FLOOD`
//! signed events of the room from fresh outsider keys, interleaved.
//!
//! Run: `cargo bench --bench admission_ingest`. Prints a Markdown table.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::time::Instant;

use meshrelay::app::DeviceKeys;
use meshrelay::control::{OkData, Op, Reply, ReplyBody};
use meshrelay::crypto::{ContactCard, Identity};
use meshrelay::device::{CoreOutput, DeviceCore};
use meshrelay::event::{Event, EventKind, RoomId, UnsignedEvent};
use meshrelay::proto::{Command, Input, Node, NodeConfig};
use meshrelay::store::roles::*;
use meshrelay::store::{MemoryStore, Source, StoreConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;

const HONEST: usize = 2_000;
const FLOOD: usize = 8_000;
const BATCH: usize = 512;
const ROUNDS: usize = 3;
const NOW: u64 = 1_796_000_000_000;

type Core = DeviceCore<MemoryStore, StdRng>;

fn store() -> MemoryStore {
    MemoryStore::new_memory_with(StoreConfig::with_budget(1 << 30)).expect("store")
}

fn core(seed: u8, name: &str) -> (Core, ContactCard) {
    let id = Identity::from_seed(&[seed; 32]);
    let card = ContactCard::create(&id, name, NOW).expect("card");
    let mut s = store();
    let keys = DeviceKeys::load(id, card.clone(), &mut s, NOW).expect("keys");
    s.commit().expect("commit");
    let c = DeviceCore::new(
        keys,
        s,
        StdRng::seed_from_u64(u64::from(seed)),
        NodeConfig::default(),
        NOW,
    )
    .expect("core");
    (c, card)
}

/// Commits what `c` staged and returns the replies it released.
fn cycle(c: &mut Core) -> Vec<Reply> {
    c.settle(NOW).expect("commit");
    let mut replies = Vec::new();
    while let Some(o) = c.poll_output() {
        if let CoreOutput::Replies { replies: r, .. } = o {
            replies.extend(r);
        }
    }
    replies
}

fn op(c: &mut Core, request: Op) -> Vec<Reply> {
    c.handle_op(NOW, 0, &request).expect("op");
    cycle(c)
}

/// Every event `c` holds of `room`, in (time, ID) order.
fn events(c: &Core, room: &RoomId) -> Vec<Event> {
    let items = c
        .store()
        .room_items(room, (Bound::Unbounded, Bound::Unbounded), 65_536)
        .expect("items");
    items
        .iter()
        .filter_map(|i| c.store().get_event(&i.id).expect("get"))
        .map(|b| Event::decode(&b).expect("decode"))
        .collect()
}

/// The room's history as B wrote it, and A's state before receiving it.
struct Input0 {
    room: RoomId,
    start: Vec<Event>,
    stream: Vec<Event>,
    members: BTreeSet<meshrelay::crypto::DeviceId>,
}

fn prepare() -> Input0 {
    let (mut a, _) = core(1, "Ana");
    let (mut b, b_card) = core(2, "Ben");
    let replies = op(&mut a, Op::RoomCreate { name: "ops".into() });
    let room: RoomId = replies
        .iter()
        .find_map(|r| match &r.body {
            ReplyBody::Ok(OkData::Room { room_id }) => room_id.parse().ok(),
            _ => None,
        })
        .expect("room created");
    op(
        &mut a,
        Op::RoomInvite {
            room: room.to_string(),
            contact: b_card.to_text(),
        },
    );
    let start = events(&a, &room);
    b.deliver(NOW, start.clone(), Source::Import)
        .expect("deliver");
    cycle(&mut b);
    for i in 0..HONEST {
        op(
            &mut b,
            Op::Send {
                room: room.to_string(),
                text: format!("message {i} from the north gate, all quiet"),
                via: None,
                location: None,
                urgent: false,
                file: None,
            },
        );
    }
    let known: BTreeSet<_> = start.iter().map(Event::id).collect();
    let honest: Vec<Event> = events(&b, &room)
        .into_iter()
        .filter(|e| !known.contains(&e.id()))
        .collect();
    let members = [a.device_id(), b.device_id()].into_iter().collect();
    let mut stream = Vec::with_capacity(HONEST + FLOOD);
    let mut h = honest.into_iter();
    for i in 0..FLOOD {
        let mut seed = [0x66u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let who = Identity::from_seed(&seed);
        stream.push(
            UnsignedEvent {
                room,
                sender: who.device_id(),
                seq: 1,
                prev: Vec::new(),
                origin_ts_ms: NOW,
                expires_ms: NOW + 86_400_000,
                kind: EventKind::Message,
                payload: vec![0xa5; 120],
            }
            .sign(&who)
            .expect("sign"),
        );
        if i % (FLOOD / HONEST).max(1) == 0
            && let Some(e) = h.next()
        {
            stream.push(e);
        }
    }
    stream.extend(h);
    Input0 {
        room,
        start,
        stream,
        members,
    }
}

/// Events/s through the bare node.
fn node_only(inp: &Input0) -> f64 {
    let id = Identity::from_seed(&[1; 32]);
    let mut node = Node::new(
        id.device_id(),
        store(),
        StdRng::seed_from_u64(1),
        NodeConfig::default(),
        NOW,
    );
    node.handle(
        NOW,
        Input::Command(Command::JoinRoom {
            room: inp.room,
            members: inp.members.clone(),
        }),
    )
    .expect("join");
    let t = Instant::now();
    for chunk in inp.stream.chunks(BATCH) {
        for ev in chunk {
            node.handle(
                NOW,
                Input::Command(Command::Deliver {
                    event: Box::new(ev.clone()),
                    source: Source::Import,
                }),
            )
            .expect("deliver");
        }
        node.store_mut().commit().expect("commit");
        node.handle(NOW, Input::CommitDone).expect("done");
        while node.poll_output().is_some() {}
    }
    inp.stream.len() as f64 / t.elapsed().as_secs_f64()
}

/// Events/s through the device core of member A.
fn device_core(inp: &Input0) -> f64 {
    let (mut a, _) = core(1, "Ana");
    op(&mut a, Op::RoomCreate { name: "ops".into() });
    // A's own start of the room: the same events as in `prepare` (same
    // seeds, same time), delivered so A holds exactly that state.
    a.deliver(NOW, inp.start.clone(), Source::Import)
        .expect("deliver");
    cycle(&mut a);
    let t = Instant::now();
    for chunk in inp.stream.chunks(BATCH) {
        a.deliver(NOW, chunk.to_vec(), Source::Import)
            .expect("deliver");
        cycle(&mut a);
    }
    let rate = inp.stream.len() as f64 / t.elapsed().as_secs_f64();
    let lines = a.messages(&inp.room, None).expect("messages");
    let shown: Vec<String> = lines
        .iter()
        .map(|l| serde_json::to_string(l).expect("json"))
        .collect();
    let honest = shown.iter().filter(|l| l.contains("north gate")).count();
    assert_eq!(honest, HONEST, "A shows every member's message");
    assert!(
        shown.len() < HONEST + 16,
        "none of the flood is shown ({} lines)",
        shown.len()
    );
    rate
}

fn main() {
    let inp = prepare();
    println!(
        "| round | bare node (events/s) | device core with admission (events/s) | ratio |\n|---|---|---|---|"
    );
    let (mut n, mut d) = (Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        let x = node_only(&inp);
        let y = device_core(&inp);
        println!("| {r} | {x:.0} | {y:.0} | {:.2} |", y / x);
        n.push(x);
        d.push(y);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (x, y) = (med(&mut n), med(&mut d));
    println!(
        "\nmedian: bare node {x:.0} events/s, device core {y:.0} events/s, ratio {:.2} \
         ({} events: {HONEST} members' messages, {FLOOD} outsiders')",
        y / x,
        inp.stream.len()
    );
}
