//! BLE adapter over the simulated GATT link (`protocol-spec/ble.md`):
//! sessions and engines alone, then real core nodes syncing a room.

use meshrelay::event::RoomId;
use meshrelay::proto::LinkId;
use meshrelay::transport::ble::adv::AdvSecret;
use meshrelay::transport::ble::engine::Engine;
use meshrelay::transport::ble::harness::Pair;
use meshrelay::transport::ble::policy::{CONNECT_DEFER_MS, PolicyConfig, Skip};
use meshrelay::transport::ble::session::{BLE_CORE_MTU, att_payload};
use meshrelay::transport::ble::sim::{Air, AirParams, Faults};
use meshrelay::transport::ble::{BLE_LINK_ID_BASE, BleEvent, ble_source};
use proptest::prelude::*;

fn engine(seed: u8) -> Engine {
    Engine::new(
        AdvSecret::from_bytes([seed; 32]),
        PolicyConfig::default(),
        BLE_LINK_ID_BASE + 1000 * u64::from(seed),
        ble_source("sim"),
    )
}

/// `c` sees `token` advertising and decides to connect (after the deferral
/// when its own token is the larger one).
fn advert(c: &mut Engine, now: &mut u64, token: meshrelay::transport::ble::AdvToken) {
    match c.on_advert(*now, token, Some(-50)) {
        Ok(()) => {}
        Err(Skip::Defer) => {
            *now += CONNECT_DEFER_MS;
            c.on_advert(*now, token, Some(-50)).unwrap();
        }
        Err(e) => panic!("advert skipped: {e:?}"),
    }
}

/// Connects `c` to `p`, runs until both report `Up`; returns the air and
/// both core link IDs.
fn link_up(
    c: &mut Engine,
    p: &mut Engine,
    params: AirParams,
    now: &mut u64,
) -> (Air, LinkId, LinkId) {
    let token = p.token(*now);
    advert(c, now, token);
    let mut air = Air::connect(c, p, *now, params, Some(token), 7);
    let (mut cl, mut pl) = (None, None);
    for _ in 0..100 {
        air.step(c, p, *now);
        *now += params.conn_interval_ms;
        while let Some(ev) = c.poll_event() {
            if let BleEvent::Up { link, mtu, .. } = ev {
                assert_eq!(mtu, BLE_CORE_MTU);
                cl = Some(link);
            }
        }
        while let Some(ev) = p.poll_event() {
            if let BleEvent::Up { link, .. } = ev {
                pl = Some(link);
            }
        }
        if let (Some(c), Some(p)) = (cl, pl) {
            return (air, c, p);
        }
    }
    panic!("link did not come up");
}

/// Sends `datagrams` from the central's core over the air; returns what the
/// peripheral's core received and whether it saw the link go down.
fn transfer(params: AirParams, datagrams: &[Vec<u8>]) -> (Vec<Vec<u8>>, bool, Air) {
    let (mut c, mut p) = (engine(1), engine(2));
    let mut now = 1_000;
    let faults = params.faults;
    let clean = AirParams {
        faults: Faults::default(),
        ..params
    };
    let (mut air, cl, _pl) = link_up(&mut c, &mut p, clean, &mut now);
    // Faults start once the link is up (the handshake is tested on its own).
    air.set_faults(faults);
    for d in datagrams {
        c.core_send(now, cl, d);
    }
    let mut got = Vec::new();
    let mut down = false;
    for _ in 0..20_000 {
        let moved = air.step(&mut c, &mut p, now);
        now += params.conn_interval_ms;
        while let Some(ev) = p.poll_event() {
            match ev {
                BleEvent::Received { bytes, .. } => got.push(bytes),
                BleEvent::Down(_) => down = true,
                _ => {}
            }
        }
        while c.poll_event().is_some() {}
        if down || (!moved && got.len() == datagrams.len()) {
            break;
        }
        if !air.connected() {
            // Let the peripheral's timers and close notices run.
            down = true;
        }
    }
    (got, down, air)
}

fn datagrams(n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| (0..len).map(|j| (i * 31 + j) as u8).collect())
        .collect()
}

#[test]
fn clean_link_delivers_in_order_at_every_mtu() {
    for mtu in [23, 185, 512] {
        let sent = datagrams(20, BLE_CORE_MTU);
        let (got, down, air) = transfer(AirParams::mtu(mtu), &sent);
        assert!(!down, "MTU {mtu}: link went down");
        assert_eq!(got, sent, "MTU {mtu}");
        // Every value fits the ATT payload of the MTU.
        assert!(air.stats().values > 0);
        assert!(air.stats().bytes <= air.stats().values * att_payload(mtu) as u64);
    }
}

#[test]
fn reordered_notifications_are_delivered_in_order() {
    for mtu in [23, 185, 512] {
        let sent = datagrams(30, 700);
        let params = AirParams {
            faults: Faults {
                reorder: 0.3,
                ..Faults::default()
            },
            ..AirParams::mtu(mtu)
        };
        let (got, down, _) = transfer(params, &sent);
        assert!(!down, "MTU {mtu}: reordering must not break the link");
        assert_eq!(got, sent, "MTU {mtu}");
    }
}

#[test]
fn loss_closes_the_link_and_never_delivers_wrong_bytes() {
    for mtu in [23, 185, 512] {
        let sent = datagrams(40, 1500);
        let params = AirParams {
            faults: Faults {
                loss: 0.05,
                ..Faults::default()
            },
            ..AirParams::mtu(mtu)
        };
        let (got, down, air) = transfer(params, &sent);
        assert!(
            air.stats().lost > 0,
            "MTU {mtu}: the loss model dropped nothing"
        );
        assert!(down, "MTU {mtu}: a lost value must close the link");
        assert!(got.len() < sent.len());
        // What did arrive is a prefix of what was sent, byte for byte.
        assert_eq!(got[..], sent[..got.len()], "MTU {mtu}");
    }
}

#[test]
fn disconnect_mid_transfer_reports_down_and_a_new_link_works() {
    let (mut c, mut p) = (engine(1), engine(2));
    let mut now = 1_000;
    let params = AirParams::mtu(185);
    let (mut air, cl, _) = link_up(&mut c, &mut p, params, &mut now);
    for d in datagrams(10, 4000) {
        c.core_send(now, cl, &d);
    }
    for _ in 0..3 {
        air.step(&mut c, &mut p, now);
        now += 15;
    }
    air.disconnect(&mut c, &mut p);
    let downs = |e: &mut Engine| {
        std::iter::from_fn(|| e.poll_event())
            .filter(|ev| matches!(ev, BleEvent::Down(_)))
            .count()
    };
    assert_eq!(downs(&mut c), 1);
    assert_eq!(downs(&mut p), 1);
    assert_eq!(c.scheduler().links(), 0);
    // Reconnect: a new link with new numbers carries data again.
    let (mut air, cl2, _) = link_up(&mut c, &mut p, params, &mut now);
    assert_ne!(cl2, cl);
    c.core_send(now, cl2, b"after");
    let mut got = None;
    for _ in 0..20 {
        air.step(&mut c, &mut p, now);
        now += 15;
        while let Some(ev) = p.poll_event() {
            if let BleEvent::Received { bytes, .. } = ev {
                got = Some(bytes);
            }
        }
    }
    assert_eq!(got.as_deref(), Some(&b"after"[..]));
}

#[test]
fn simultaneous_connections_keep_one_link_on_both_sides() {
    let (mut a, mut b) = (engine(1), engine(2));
    let now = 1_000;
    let params = AirParams::mtu(185);
    let ta = a.token(now);
    let tb = b.token(now);
    // Both see each other; the larger token defers, but here its deferral
    // ends before the smaller one's attempt completes: both connect.
    let _ = a.on_advert(now, tb, Some(-50));
    let _ = b.on_advert(now, ta, Some(-50));
    let now = now + CONNECT_DEFER_MS;
    let _ = a.on_advert(now, tb, Some(-50));
    let _ = b.on_advert(now, ta, Some(-50));
    let mut ab = Air::connect(&mut a, &mut b, now, params, Some(tb), 1);
    let mut ba = Air::connect(&mut b, &mut a, now, params, Some(ta), 2);
    let mut t = now;
    for _ in 0..50 {
        ab.step(&mut a, &mut b, t);
        ba.step(&mut b, &mut a, t);
        t += 15;
    }
    let ups = |e: &mut Engine| {
        let mut up = 0i32;
        while let Some(ev) = e.poll_event() {
            match ev {
                BleEvent::Up { .. } => up += 1,
                BleEvent::Down(_) => up -= 1,
                _ => {}
            }
        }
        up
    };
    assert_eq!(ups(&mut a), 1, "A keeps one link");
    assert_eq!(ups(&mut b), 1, "B keeps one link");
    // The surviving connection is the one whose central has the smaller token.
    let survivor_is_ab = ta < tb;
    assert_eq!(ab.connected(), survivor_is_ab);
    assert_eq!(ba.connected(), !survivor_is_ab);
}

#[test]
fn nodes_sync_a_room_over_ble_at_every_mtu() {
    for mtu in [23, 185, 512] {
        let mut pair = Pair::new(1_000_000);
        let room = RoomId([9; 16]);
        pair.join_both(room);
        let mut ids = Vec::new();
        for _ in 0..5 {
            let now = pair.now_ms;
            ids.push(pair.peripheral.publish(now, room, 1024).unwrap().id());
        }
        assert!(pair.discover_and_connect(AirParams::mtu(mtu), 3));
        let steps = pair.run_until(20_000, |p| {
            ids.iter().all(|id| p.central.stored.contains_key(id))
        });
        assert!(steps < 20_000, "MTU {mtu}: events did not sync");
        assert_eq!(pair.central.links_up, 1);
        assert_eq!(pair.central.penalties + pair.peripheral.penalties, 0);
        // And live push the other way once linked.
        let now = pair.now_ms;
        let id = pair.central.publish(now, room, 1024).unwrap().id();
        let steps = pair.run_until(20_000, |p| p.peripheral.stored.contains_key(&id));
        assert!(steps < 20_000, "MTU {mtu}: live event did not arrive");
    }
}

#[test]
fn nodes_resync_after_a_disconnect_mid_transfer() {
    let mut pair = Pair::new(1_000_000);
    let room = RoomId([8; 16]);
    pair.join_both(room);
    let mut ids = Vec::new();
    for _ in 0..40 {
        let now = pair.now_ms;
        ids.push(pair.peripheral.publish(now, room, 1024).unwrap().id());
    }
    let params = AirParams {
        faults: Faults {
            disconnect_after: Some(150),
            ..Faults::default()
        },
        ..AirParams::mtu(185)
    };
    assert!(pair.discover_and_connect(params, 5));
    pair.run_until(2_000, |p| p.air.as_ref().is_some_and(|a| !a.connected()));
    let got = ids
        .iter()
        .filter(|id| pair.central.stored.contains_key(*id))
        .count();
    assert!(
        got < ids.len(),
        "the disconnect came too late to test anything"
    );
    assert_eq!(pair.central.links_down, 1);
    assert_eq!(pair.peripheral.links_down, 1);
    // Reconnect on a clean link: reconciliation fetches the rest.
    pair.now_ms += 10_000;
    assert!(pair.discover_and_connect(AirParams::mtu(185), 6));
    let steps = pair.run_until(50_000, |p| {
        ids.iter().all(|id| p.central.stored.contains_key(id))
    });
    assert!(steps < 50_000, "resync after the disconnect did not finish");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any datagrams at any MTU with any reordering arrive intact and in order.
    #[test]
    fn prop_datagrams_survive_fragmentation_and_reordering(
        mtu in 23usize..=515,
        lens in proptest::collection::vec(0usize..=BLE_CORE_MTU, 1..8),
        reorder in 0.0f64..0.5,
    ) {
        let sent: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, n)| (0..*n).map(|j| (i + j * 7) as u8).collect())
            .collect();
        let params = AirParams {
            faults: Faults { reorder, ..Faults::default() },
            ..AirParams::mtu(mtu)
        };
        let (got, down, _) = transfer(params, &sent);
        prop_assert!(!down);
        prop_assert_eq!(got, sent);
    }
}

/// Where there is no system bus or no controller (as on CI), the adapter
/// settles in `unavailable` with a reason, sends no events, and `spawn`
/// does not fail. Where BlueZ runs, it is `running`.
#[tokio::test]
async fn hardware_adapter_reports_unavailable_without_bluez() {
    use meshrelay::transport::ble::{BleConfig, BleStatus, spawn};
    let (handle, mut events) = spawn(BleConfig::default()).expect("spawn never fails in a runtime");
    let mut status = handle.status();
    for _ in 0..100 {
        status = handle.status();
        if !matches!(&status, BleStatus::Unavailable { reason } if reason == "starting") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    match &status {
        BleStatus::Unavailable { reason } => {
            assert_ne!(reason, "starting");
            assert!(!reason.is_empty());
            assert!(events.try_recv().is_err(), "no events while unavailable");
            let json = status.to_json();
            assert_eq!(json["state"], "unavailable");
            eprintln!("ble: {}", status.summary());
        }
        BleStatus::Running { adapter, .. } => assert!(adapter.starts_with("hci")),
        BleStatus::Off => panic!("enabled adapter reported off"),
    }
}
