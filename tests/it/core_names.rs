//! The rooms list of the device core (issue 23, cost per operation): the
//! core answers `rooms` from its cached sessions and remembers each room's
//! name, so a `rooms` (which the CLI asks for on every `send` to name the
//! room) costs no replay of the history. The name it shows must be the
//! one a rebuild from the store reads (`protocol-spec/app.md` §4: the last
//! rename in display order), through local and received renames,
//! concurrent ones and own sends.

use meshrelay::control::{OkData, Op};
use meshrelay::event::{Event, RoomId};

use super::core_util::{Core, core, deliver, held, op, room_with, send};

fn name_of(c: &mut Core) -> String {
    let OkData::Rooms { rooms } = op(c, Op::Rooms) else {
        panic!("no rooms");
    };
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    rooms[0].name.clone()
}

fn rename(c: &mut Core, room: &str, name: &str) {
    op(
        c,
        Op::RoomRename {
            room: room.into(),
            name: name.into(),
        },
    );
}

/// What `from` holds of `room` that `to` lacks.
fn news(from: &Core, to: &Core, room: &RoomId) -> Vec<Event> {
    let have: std::collections::BTreeSet<_> = held(to, room).iter().map(Event::id).collect();
    held(from, room)
        .into_iter()
        .filter(|e| !have.contains(&e.id()))
        .collect()
}

#[test]
fn the_cached_rooms_list_names_rooms_as_a_rebuild_does() {
    let (mut a, _) = core(21, "Ana");
    let (mut b, b_card) = core(22, "Ben");
    let (mut c, c_card) = core(23, "Cy");
    let (room_id, room) = room_with(&mut a, "ops", &[&b_card, &c_card]);
    for x in [&mut b, &mut c] {
        deliver(x, held(&a, &room));
    }
    // Ben's session is cached once he sends; his own sends keep the name.
    send(&mut b, &room_id, "Ben here");
    assert_eq!(name_of(&mut b), "ops");
    send(&mut b, &room_id, "Ben again");
    assert_eq!(name_of(&mut b), "ops");

    // A received rename, then a local one.
    rename(&mut a, &room_id, "north");
    send(&mut a, &room_id, "moved");
    let n = news(&a, &b, &room);
    deliver(&mut b, n);
    assert_eq!(name_of(&mut b), "north");
    rename(&mut b, &room_id, "north-2");
    assert_eq!(name_of(&mut b), "north-2");
    send(&mut b, &room_id, "after my rename");
    assert_eq!(name_of(&mut b), "north-2");
    for x in [&mut a, &mut c] {
        let n = news(&b, x, &room);
        deliver(x, n);
    }
    let n = news(&a, &c, &room);
    deliver(&mut c, n);

    // Concurrent renames by Ana and Cy, each followed by messages; Ben
    // hears them in two batches, Cy's first.
    rename(&mut a, &room_id, "east");
    send(&mut a, &room_id, "east side");
    rename(&mut c, &room_id, "west");
    send(&mut c, &room_id, "west side");
    for from in [&c, &a] {
        let n = news(from, &b, &room);
        deliver(&mut b, n);
    }
    let n = news(&c, &a, &room);
    deliver(&mut a, n);
    let n = news(&a, &c, &room);
    deliver(&mut c, n);
    send(&mut b, &room_id, "which is it?");
    let shown = name_of(&mut b);
    assert!(shown == "east" || shown == "west", "{shown}");
    assert_eq!(name_of(&mut a), shown);
    assert_eq!(name_of(&mut c), shown);

    // A rebuild from the store: Ben's device again, empty, given every
    // event at once (it reads Ana's and Cy's renames through the key
    // shares sealed to its prekey).
    let (mut fresh, _) = core(22, "Ben");
    let mut all = held(&b, &room);
    all.extend(news(&a, &b, &room));
    deliver(&mut fresh, all);
    assert_eq!(name_of(&mut fresh), shown);
}
