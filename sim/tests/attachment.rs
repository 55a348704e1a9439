//! Attachments over a simulated BLE link (issue 20,
//! `protocol-spec/attachments.md`): two members linked at MTU 185 and
//! 100 kB/s of ATT payload; a 500 KB photo's goodput (file bytes over the
//! time from sending to complete) as a fraction of the raw link rate.

use meshrelay::app::MessageLine;
use meshrelay::control::{FileData, Op};
use meshrelay::proto::NodeConfig;
use meshrelay::store::StoreConfig;
use meshrelay_sim::net::{LinkParams, SimNet};
use meshrelay_sim::test_seed as seed;

const PHOTO: usize = 500_000;

fn complete(net: &mut SimNet, i: usize, room: &meshrelay::event::RoomId) -> bool {
    net.shown(i, room)
        .expect("shown")
        .iter()
        .any(|l| matches!(l, MessageLine::Text { attachment: Some(a), .. } if a.complete))
}

#[test]
fn a_photo_crosses_a_ble_link_at_most_of_its_raw_rate() {
    let mut net = SimNet::new(2, seed(22), NodeConfig::default(), StoreConfig::default());
    let room = net.room_create(0, "ops").expect("room");
    let ble = LinkParams::ble();
    net.connect(0, 1, ble);
    net.room_invite(0, room, 1).expect("invite");
    net.send_text(0, room, "hello").expect("send");
    let now = net.now_ms();
    net.run_until(now + 20_000);
    assert!(net.is_member(1, &room));

    let photo: Vec<u8> = (0..PHOTO as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let op = Op::Send {
        room: room.to_string(),
        text: "the north gate".into(),
        via: None,
        location: None,
        urgent: false,
        file: Some(FileData {
            name: "gate.jpg".into(),
            media_type: "image/jpeg".into(),
            data: data_encoding::BASE64.encode(&photo),
        }),
    };
    let start = net.now_ms();
    net.op(0, &op).expect("send the photo");
    while !complete(&mut net, 1, &room) {
        assert!(
            net.now_ms() < start + 120_000,
            "the photo did not arrive in 2 minutes"
        );
        let now = net.now_ms();
        net.run_until(now + 100);
    }
    let secs = (net.now_ms() - start) as f64 / 1000.0;
    let goodput = PHOTO as f64 / secs / ble.bytes_per_s as f64;
    println!(
        "500 KB photo over BLE (MTU {}, {} B/s): {secs:.1} s, goodput {:.0} B/s = {goodput:.2} of the raw rate",
        ble.mtu,
        ble.bytes_per_s,
        PHOTO as f64 / secs
    );
    assert!(goodput >= 0.8, "goodput {goodput:.2} of the raw rate");
}
