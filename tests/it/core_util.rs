//! Device cores for tests that drive the sans-IO core directly (no
//! daemon): one made from a seed, typed operations, deliveries, and what
//! a core holds of a room.

use std::ops::Bound;

use meshrelay::app::DeviceKeys;
use meshrelay::control::{OkData, Op, ReplyBody};
use meshrelay::crypto::{ContactCard, Identity};
use meshrelay::device::{CoreOutput, DeviceCore};
use meshrelay::event::{Event, RoomId};
use meshrelay::proto::NodeConfig;
use meshrelay::store::roles::*;
use meshrelay::store::{MemoryStore, Source};
use rand::SeedableRng;
use rand::rngs::StdRng;

pub const NOW: u64 = 1_796_000_000_000;

pub type Core = DeviceCore<MemoryStore, StdRng>;

pub fn core(seed: u8, name: &str) -> (Core, ContactCard) {
    let id = Identity::from_seed(&[seed; 32]);
    let card = ContactCard::create(&id, name, NOW).unwrap();
    let mut s = MemoryStore::new_memory();
    let keys = DeviceKeys::load(id, card.clone(), &mut s, NOW).unwrap();
    s.commit().unwrap();
    let c = DeviceCore::new(
        keys,
        s,
        StdRng::seed_from_u64(u64::from(seed)),
        NodeConfig::default(),
        NOW,
    )
    .unwrap();
    (c, card)
}

/// Runs `request` and returns its final data.
pub fn op(c: &mut Core, request: Op) -> OkData {
    c.handle_op(NOW, 0, &request).unwrap();
    c.settle(NOW).unwrap();
    let mut data = None;
    while let Some(o) = c.poll_output() {
        if let CoreOutput::Replies { replies, .. } = o {
            for r in replies {
                match r.body {
                    ReplyBody::Ok(d) => data = Some(d),
                    ReplyBody::Error(e) => panic!("{request:?}: {e:?}"),
                    ReplyBody::Line(_) => {}
                }
            }
        }
    }
    data.expect("a final reply")
}

/// Delivers one batch as an import and runs the cycle; the rooms layer
/// must not fail.
pub fn deliver(c: &mut Core, batch: Vec<Event>) {
    c.deliver(NOW, batch, Source::Import).unwrap();
    c.settle(NOW).unwrap();
    while let Some(o) = c.poll_output() {
        if let CoreOutput::ProcessingFailed(e) = o {
            panic!("the rooms layer failed: {e}");
        }
    }
}

/// Every event `c` holds of `room`.
pub fn held(c: &Core, room: &RoomId) -> Vec<Event> {
    let items = c
        .store()
        .room_items(room, (Bound::Unbounded, Bound::Unbounded), 65_536)
        .unwrap();
    items
        .iter()
        .filter_map(|i| c.store().get_event(&i.id).unwrap())
        .map(|b| Event::decode(&b).unwrap())
        .collect()
}

/// `c` creates a room named `name` and invites `cards`: its ID as given to
/// operations, and parsed.
pub fn room_with(c: &mut Core, name: &str, cards: &[&ContactCard]) -> (String, RoomId) {
    let OkData::Room { room_id } = op(c, Op::RoomCreate { name: name.into() }) else {
        panic!("no room");
    };
    for card in cards {
        op(
            c,
            Op::RoomInvite {
                room: room_id.clone(),
                contact: card.to_text(),
            },
        );
    }
    let room = room_id.parse().unwrap();
    (room_id, room)
}

/// `c` sends `text` to `room`.
pub fn send(c: &mut Core, room: &str, text: &str) {
    op(c, Op::send_text(room, text));
}
