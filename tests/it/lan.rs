//! The LAN adapter over real libp2p connections on 127.0.0.1.

use std::time::Duration;

use meshrelay::transport::lan::{self, LanConfig, LanEvent};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

fn config(listen: &str, peers: Vec<String>) -> LanConfig {
    LanConfig {
        listen: vec![listen.parse().expect("listen multiaddr")],
        peers: peers
            .into_iter()
            .map(|p| p.parse().expect("peer multiaddr"))
            .collect(),
        mdns: false,
    }
}

async fn next_matching<F: Fn(&LanEvent) -> bool>(rx: &mut Receiver<LanEvent>, f: F) -> LanEvent {
    timeout(Duration::from_secs(30), async {
        loop {
            let ev = rx.recv().await.expect("adapter alive");
            if f(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("event within 30 s")
}

/// The adapter's first listening address.
async fn listening(rx: &mut Receiver<LanEvent>) -> String {
    match next_matching(rx, |e| matches!(e, LanEvent::Listening(_))).await {
        LanEvent::Listening(addr) => addr.to_string(),
        _ => unreachable!(),
    }
}

/// The next link that comes up: its number and remote address.
async fn link_up(rx: &mut Receiver<LanEvent>) -> (meshrelay::proto::LinkId, String) {
    match next_matching(rx, |e| matches!(e, LanEvent::Up { .. })).await {
        LanEvent::Up { link, address, .. } => (link, address),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_adapters_link_over_tcp_and_exchange_datagrams() {
    let (_ha, mut ea, _) = lan::spawn(config("/ip4/127.0.0.1/tcp/0", vec![])).expect("spawn a");
    let addr = listening(&mut ea).await;
    // A plain address, without /p2p/<id>: peer keys are ephemeral.
    let (hb, mut eb, _) = lan::spawn(config("/ip4/127.0.0.1/tcp/0", vec![addr])).expect("spawn b");
    let (la, _) = link_up(&mut ea).await;
    let (lb, address) = link_up(&mut eb).await;
    assert!(address.contains("127.0.0.1"), "address {address}");
    hb.send(lb, b"hello over libp2p".to_vec());
    let LanEvent::Received { link, bytes, .. } =
        next_matching(&mut ea, |e| matches!(e, LanEvent::Received { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(link, la);
    assert_eq!(bytes, b"hello over libp2p");
    // Exactly one link per pair: no second Up arrives on either side.
    let extra = timeout(Duration::from_secs(2), async {
        loop {
            if let Some(LanEvent::Up { .. }) = ea.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "a second link came up");
}

/// The core must see a link's `Up` before any datagram that arrived on it:
/// a peer's first datagram (its Hello) delivered ahead of the link would be
/// dropped as stray and the link would never reconcile. Peers here write
/// the moment their own side is up, while the listener's event queue is
/// not being drained, over several fresh links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_up_before_its_first_datagram() {
    let (_ha, mut ea, _) = lan::spawn(config("/ip4/127.0.0.1/tcp/0", vec![])).expect("spawn a");
    let LanEvent::Listening(addr) =
        next_matching(&mut ea, |e| matches!(e, LanEvent::Listening(_))).await
    else {
        unreachable!()
    };
    const PEERS: usize = 6;
    let mut peers = Vec::new();
    for _ in 0..PEERS {
        let (hb, mut eb, _) =
            lan::spawn(config("/ip4/127.0.0.1/tcp/0", vec![addr.to_string()])).expect("spawn b");
        let LanEvent::Up { link, .. } =
            next_matching(&mut eb, |e| matches!(e, LanEvent::Up { .. })).await
        else {
            unreachable!()
        };
        for i in 0..50u8 {
            hb.send(link, vec![i; 64]);
        }
        peers.push((hb, eb));
    }
    // Now read the listener's events in order.
    let mut up = std::collections::BTreeSet::new();
    let mut received = 0usize;
    timeout(Duration::from_secs(60), async {
        while received < PEERS * 50 {
            match ea.recv().await.expect("adapter alive") {
                LanEvent::Up { link, .. } => {
                    up.insert(link);
                }
                LanEvent::Received { link, .. } => {
                    assert!(
                        up.contains(&link),
                        "a datagram on link {link:?} came before its Up"
                    );
                    received += 1;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("every datagram arrives");
    assert_eq!(up.len(), PEERS);
}

/// A driver that falls behind (here: one that does not read its events)
/// holds at most `RECEIVE_QUEUE_BYTES` of received datagrams, whatever a
/// peer writes: large datagrams stop the readers, not the node's memory.
/// Once the driver takes them, everything written arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_datagrams_wait_within_the_byte_bound() {
    let (_ha, mut ea, _) = lan::spawn(config("/ip4/127.0.0.1/tcp/0", vec![])).expect("spawn a");
    let addr = listening(&mut ea).await;
    let (hb, mut eb, _) = lan::spawn(config("/ip4/127.0.0.1/tcp/0", vec![addr])).expect("spawn b");
    link_up(&mut ea).await;
    let (lb, _) = link_up(&mut eb).await;
    const N: usize = 64;
    let size = lan::MAX_DATAGRAM_BYTES;
    for i in 0..N {
        hb.send(lb, vec![i as u8; size]);
    }
    // Let the reader take what the bound allows, without draining.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut held = Vec::new();
    while let Ok(ev) = ea.try_recv() {
        if let LanEvent::Received { bytes, .. } = &ev {
            assert_eq!(bytes.len(), size);
            held.push(ev);
        }
    }
    let waiting = held.len() * size;
    assert!(
        !held.is_empty() && waiting <= lan::RECEIVE_QUEUE_BYTES,
        "{} datagrams ({waiting} bytes) waited for the driver",
        held.len()
    );
    // While they are held, no more arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !matches!(ea.try_recv(), Ok(LanEvent::Received { .. })),
        "a datagram arrived past the byte bound"
    );
    let mut received = held.len();
    drop(held);
    while received < N {
        if let LanEvent::Received { bytes, .. } =
            next_matching(&mut ea, |e| matches!(e, LanEvent::Received { .. })).await
        {
            assert_eq!(bytes[0], received as u8, "datagrams in order");
            received += 1;
        }
    }
}
