//! Receipts in the simulator (`protocol-spec/rooms.md` §8): three members
//! of a room, node 2 away at first. Node 0 sends; node 1 receives, its
//! person reads; node 1 then walks to node 2 (store and forward) and back.
//! Node 0's view shows who holds and who read each message, receipts are
//! coalesced, and nobody sends a receipt for a receipt.

use meshrelay::app::MessageLine;
use meshrelay::event::EventKind;
use meshrelay::proto::NodeConfig;
use meshrelay::store::StoreConfig;
use meshrelay_sim::net::{LinkParams, SimNet};
use meshrelay_sim::test_seed as seed;

/// (delivered_to, read_by) of every text line, in order.
fn figures(lines: &[MessageLine]) -> Vec<(Vec<String>, Vec<String>)> {
    lines
        .iter()
        .filter_map(|l| match l {
            MessageLine::Text {
                delivered_to,
                read_by,
                ..
            } => Some((delivered_to.clone(), read_by.clone())),
            _ => None,
        })
        .collect()
}

fn run_for(net: &mut SimNet, ms: u64) {
    let now = net.now_ms();
    net.run_until(now + ms);
}

#[test]
fn receipts_show_delivery_and_reading_after_store_and_forward() {
    let mut net = SimNet::new(3, seed(18), NodeConfig::default(), StoreConfig::default());
    let room = net.room_create(0, "ops").expect("room");
    net.connect(0, 1, LinkParams::ble());
    net.room_invite(0, room, 1).expect("invite 1");
    net.room_invite(0, room, 2).expect("invite 2");
    run_for(&mut net, 20_000);
    assert!(net.is_member(1, &room), "node 1 joined");
    // Its delivered receipt for the room's name message.
    let joined = net.senders_of(0, &room, EventKind::Receipt).len();
    for i in 0..3 {
        net.send_text(0, room, &format!("message {i}"))
            .expect("send");
        run_for(&mut net, 500);
    }
    run_for(&mut net, 30_000);
    let (id1, id2) = (
        net.nodes[1].card.device_id.to_string(),
        net.nodes[2].card.device_id.to_string(),
    );
    let shown = net.shown(0, &room).expect("node 0 reads");
    let f = figures(&shown);
    assert_eq!(f.len(), 3);
    for (delivered, read) in &f {
        assert_eq!(delivered, &vec![id1.clone()], "held by node 1 only");
        assert!(read.is_empty(), "nobody read yet");
    }
    // Three messages half a second apart: one delivered receipt.
    assert_eq!(
        net.senders_of(0, &room, EventKind::Receipt).len(),
        joined + 1
    );

    // A person on node 1 reads the room.
    net.read(1, &room).expect("node 1 reads");
    run_for(&mut net, 30_000);
    let f = figures(&net.shown(0, &room).expect("node 0 reads"));
    assert!(
        f.iter().all(|(_, read)| read == &vec![id1.clone()]),
        "{f:?}"
    );

    // Node 1 carries the room to node 2, and node 2's receipt back.
    net.disconnect(0, 1);
    net.connect(1, 2, LinkParams::ble());
    run_for(&mut net, 60_000);
    assert!(net.is_member(2, &room), "node 2 joined through node 1");
    net.disconnect(1, 2);
    net.connect(0, 1, LinkParams::ble());
    run_for(&mut net, 60_000);
    let f = figures(&net.shown(0, &room).expect("node 0 reads"));
    let mut both = vec![id1.clone(), id2.clone()];
    both.sort();
    assert!(f.iter().all(|(d, _)| d == &both), "{f:?}");

    // Nobody answered a receipt with a receipt: node 0 received receipts
    // but no message, so it sent none; node 1 sent one per thing it had to
    // say (joined, delivered, read), node 2 one (joined with everything).
    let receipts = net.senders_of(0, &room, EventKind::Receipt);
    let by = |i: usize| {
        let d = net.nodes[i].card.device_id;
        receipts.iter().filter(|s| **s == d).count()
    };
    assert_eq!((by(0), by(1), by(2)), (0, joined + 2, 1), "{receipts:?}");
    run_for(&mut net, 120_000);
    let later = net.senders_of(0, &room, EventKind::Receipt);
    assert_eq!(later.len(), receipts.len(), "quiet stays quiet");
}

#[test]
fn a_carrier_that_holds_an_own_message_marks_it_stored_on_the_next_hop() {
    // Node 1 carries (it is in no room); node 2 is invited but far away.
    let mut net = SimNet::new(3, seed(19), NodeConfig::default(), StoreConfig::default());
    let room = net.room_create(0, "ops").expect("room");
    net.room_invite(0, room, 2).expect("invite");
    let id = net.send_text(0, room, "water at the gate").expect("send");
    let line = |net: &mut SimNet| {
        net.shown(0, &room)
            .expect("node 0 reads")
            .into_iter()
            .find_map(|l| match l {
                MessageLine::Text {
                    event_id,
                    next_hop,
                    delivered_to,
                    ..
                } if event_id == id.to_string() => Some((next_hop, delivered_to)),
                _ => None,
            })
            .expect("the message is shown")
    };
    run_for(&mut net, 30_000);
    assert_eq!(line(&mut net), (false, vec![]), "nobody holds it yet");
    net.connect(0, 1, LinkParams::ble());
    // Acknowledged with a later commit: keep the node busy with a message.
    run_for(&mut net, 90_000);
    net.send_text(0, room, "still here").expect("send");
    run_for(&mut net, 5_000);
    assert_eq!(line(&mut net), (true, vec![]), "the carrier holds it");
}
