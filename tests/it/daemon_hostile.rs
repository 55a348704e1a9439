//! A hostile peer over real libp2p connections to a real daemon: random
//! bytes, an oversize datagram, invalid events and a connection storm. The
//! daemon stays up, closes the offending links, and its honest peer's
//! link keeps working.

use std::time::Duration;

use meshrelay::event::RoomId;
use meshrelay::transport::lan::{self, LanConfig, LanEvent, LanHandle, MAX_DATAGRAM_BYTES};
use meshrelay::wire::{Fragmenter, Frame, MAX_MTU};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

use super::daemon::{Daemon, card, create_room, ok, texts, wait_until};

fn attacker(peer: &str) -> (LanHandle, Receiver<LanEvent>) {
    let (h, rx, _) = lan::spawn(LanConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        peers: vec![peer.parse().unwrap()],
        mdns: false,
    })
    .expect("attacker adapter");
    (h, rx)
}

/// Waits for the attacker's link to come up; returns it.
async fn up(rx: &mut Receiver<LanEvent>) -> meshrelay::proto::LinkId {
    timeout(Duration::from_secs(30), async {
        loop {
            if let Some(LanEvent::Up { link, .. }) = rx.recv().await {
                return link;
            }
        }
    })
    .await
    .expect("link up within 30 s")
}

/// Waits until the daemon drops `link`.
async fn down(rx: &mut Receiver<LanEvent>, link: meshrelay::proto::LinkId) {
    timeout(Duration::from_secs(30), async {
        loop {
            match rx.recv().await {
                Some(LanEvent::Down(l)) if l == link => return,
                None => return,
                _ => {}
            }
        }
    })
    .await
    .expect("the daemon closes the offending link within 30 s")
}

/// What the hostile peer does.
#[derive(Clone, Copy, Debug)]
enum Attack {
    RandomBytes,
    Oversize,
    InvalidEvents,
    Storm,
}

async fn attack(addr: &str, kind: Attack) {
    let (h, mut rx) = attacker(addr);
    let link = up(&mut rx).await;
    match kind {
        Attack::RandomBytes => {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for _ in 0..50 {
                let junk: Vec<u8> = (0..600)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                h.send(link, junk);
            }
        }
        // Beyond the stream's length-prefix limit: cut before allocating.
        Attack::Oversize => h.send(link, vec![0u8; MAX_DATAGRAM_BYTES + 1]),
        // A well-formed frame carrying events that do not decode.
        Attack::InvalidEvents => {
            let frame = Frame::Events {
                room: RoomId([0xee; 16]),
                events: vec![vec![0xa5; 300]; 8],
            }
            .encode();
            for d in Fragmenter::new().fragment(&frame, MAX_MTU).unwrap() {
                h.send(link, d);
            }
        }
        Attack::Storm => {
            // Arrivals must outrun the refill (2/s after a burst of 16)
            // even when each connection takes 0.3 s on a loaded machine:
            // 80 do (80 > 16 + 0.6 × 80), 40 only barely did.
            let mut storm = vec![(h, rx)];
            for _ in 0..80 {
                storm.push(attacker(addr));
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            return;
        }
    }
    down(&mut rx, link).await;
}

/// One victim daemon with an honest peer in a shared room; `kind` is done
/// to the victim over a real connection; the victim must stay up and keep
/// its honest link.
fn victim_survives(kind: Attack) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let (dv, dh) = (tmp.path().join("victim"), tmp.path().join("honest"));
    let mut victim = Daemon::start(&dv, "Vic", &[]);
    let addr = victim.tcp_addr();
    let honest = Daemon::start(&dh, "Hon", std::slice::from_ref(&addr));
    wait_until("the honest link", || victim.peers() == 1);
    let room = create_room(&dh, "ops");
    ok(&dh, &["room", "invite", &room, &card(&dv)]);
    ok(&dh, &["send", &room, "before the attack"]);
    wait_until("the victim reads the honest peer", || {
        texts(&dv, &room) == ["before the attack"]
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(attack(&addr, kind));
    drop(rt);
    assert!(victim.alive(), "{kind:?}: the daemon survived");
    // The honest link was never closed: the next message arrives on it.
    ok(&dh, &["send", &room, "after the attack"]);
    wait_until("the victim reads the honest peer after the attack", || {
        texts(&dv, &room) == ["before the attack", "after the attack"]
    });
    let st = victim.status();
    assert_eq!(
        st["peers"], 1,
        "{kind:?}: only the honest link remains: {st}"
    );
    let log = std::fs::read_to_string(dv.with_extension("log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    drop(honest);
    st
}

#[test]
fn random_bytes_get_the_link_closed_and_the_source_penalised() {
    let st = victim_survives(Attack::RandomBytes);
    assert!(
        st["daemon"]["links_penalised"].as_u64().unwrap() >= 1,
        "{st}"
    );
}

#[test]
fn an_oversize_datagram_gets_the_link_closed() {
    victim_survives(Attack::Oversize);
}

#[test]
fn invalid_events_get_the_link_closed_and_the_source_penalised() {
    let st = victim_survives(Attack::InvalidEvents);
    assert!(
        st["daemon"]["links_penalised"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert!(
        st["daemon"]["invalid_events"].as_u64().unwrap() >= 1,
        "{st}"
    );
}

#[test]
fn a_connection_storm_is_refused_beyond_the_new_link_budget() {
    let st = victim_survives(Attack::Storm);
    assert!(st["daemon"]["links_refused"].as_u64().unwrap() >= 1, "{st}");
}
