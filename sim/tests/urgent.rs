//! Urgent messages jump every queue on every hop that can read them
//! (issue 20, `protocol-spec/wire.md`, "Urgent messages"). Three members on
//! a line 0 – 1 – 2 over BLE. Node 0, alone, composes a long backlog and
//! then one urgent message; when it meets node 1, the urgent message
//! reaches node 1 and, through node 1 (a member that reads the mark),
//! node 2 long before the backlog, which still arrives whole.

use meshrelay::app::MessageLine;
use meshrelay::control::Op;
use meshrelay::event::RoomId;
use meshrelay::proto::NodeConfig;
use meshrelay::store::StoreConfig;
use meshrelay_sim::net::{LinkParams, SimNet};
use meshrelay_sim::test_seed as seed;

const BACKLOG: usize = 300;

/// (ordinary text lines, whether the urgent one is shown) at node `i`.
fn seen(net: &mut SimNet, i: usize, room: &RoomId) -> (usize, bool) {
    let lines = net.shown(i, room).expect("shown");
    let mut ordinary = 0;
    let mut urgent = false;
    for l in &lines {
        if let MessageLine::Text {
            urgent: u, text, ..
        } = l
        {
            if *u {
                assert_eq!(text, "help: flooding at the north gate");
                urgent = true;
            } else if text.starts_with("log ") {
                ordinary += 1;
            }
        }
    }
    (ordinary, urgent)
}

#[test]
fn an_urgent_message_overtakes_a_backlog_on_every_member_hop() {
    let mut net = SimNet::new(3, seed(20), NodeConfig::default(), StoreConfig::default());
    let room = net.room_create(0, "ops").expect("room");
    net.connect(0, 1, LinkParams::ble());
    net.connect(1, 2, LinkParams::ble());
    net.room_invite(0, room, 1).expect("invite 1");
    net.room_invite(0, room, 2).expect("invite 2");
    net.send_text(0, room, "hello").expect("send");
    let now = net.now_ms();
    net.run_until(now + 30_000);
    assert!(net.is_member(2, &room), "node 2 joined");

    // Node 0 alone: a backlog of about 200 KB, then a call for help.
    net.disconnect(0, 1);
    let text = "x".repeat(600);
    for i in 0..BACKLOG {
        net.send_text(0, room, &format!("log {i} {text}"))
            .expect("send");
    }
    let op = Op::Send {
        room: room.to_string(),
        text: "help: flooding at the north gate".into(),
        via: None,
        location: None,
        urgent: true,
        file: None,
    };
    net.op(0, &op).expect("urgent send");
    assert_eq!(seen(&mut net, 0, &room), (BACKLOG, true));

    net.connect(0, 1, LinkParams::ble());
    let start = net.now_ms();
    let mut first_urgent: [Option<(u64, usize)>; 3] = [None; 3];
    let mut all_at = [None; 3];
    while net.now_ms() < start + 120_000 && all_at[1..].iter().any(Option::is_none) {
        let now = net.now_ms();
        net.run_until(now + 100);
        for i in 1..3 {
            let (ordinary, urgent) = seen(&mut net, i, &room);
            if urgent && first_urgent[i].is_none() {
                first_urgent[i] = Some((net.now_ms() - start, ordinary));
            }
            if ordinary == BACKLOG && urgent && all_at[i].is_none() {
                all_at[i] = Some(net.now_ms() - start);
            }
        }
    }
    for i in 1..3 {
        let (urgent_ms, before) = first_urgent[i].expect("the urgent message arrived");
        let all_ms = all_at[i].expect("the whole backlog arrived");
        println!(
            "node {i}: urgent after {urgent_ms} ms with {before} of {BACKLOG} backlog \
             messages shown; whole backlog after {all_ms} ms"
        );
        assert!(
            before < BACKLOG / 10,
            "node {i}: {before} backlog messages arrived before the urgent one"
        );
        // The first second is the link's Hello and reconciliation; the
        // urgent message is the first event through, and the backlog takes
        // more than twice as long (about 1.0 s against 4.3 s at node 1,
        // 1.7 s against 4.9 s at node 2 over two hops).
        assert!(
            urgent_ms * 2 < all_ms,
            "node {i}: urgent after {urgent_ms} ms, backlog after {all_ms} ms"
        );
    }
}

#[test]
fn a_sender_gets_three_urgent_messages_per_window() {
    let mut net = SimNet::new(1, seed(21), NodeConfig::default(), StoreConfig::default());
    let room = net.room_create(0, "ops").expect("room");
    let urgent = |text: &str| Op::Send {
        room: room.to_string(),
        text: text.into(),
        via: None,
        location: None,
        urgent: true,
        file: None,
    };
    for i in 0..3 {
        net.op(0, &urgent(&format!("help {i}")))
            .expect("within the burst");
    }
    let refused = net.op(0, &urgent("help 3")).expect_err("over the burst");
    assert!(
        format!("{refused:?}").contains("at most 3 urgent messages per 10 minutes"),
        "{refused:?}"
    );
    // Ten minutes on, the window has room again.
    let now = net.now_ms();
    net.run_until(now + 10 * 60 * 1000 + 1);
    net.op(0, &urgent("help 4")).expect("a new window");
    let shown = net.shown(0, &room).expect("shown");
    let marked = shown
        .iter()
        .filter(|l| matches!(l, MessageLine::Text { urgent: true, .. }))
        .count();
    assert_eq!(marked, 4);
}
