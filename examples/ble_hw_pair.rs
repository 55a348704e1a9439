//! Two devices on two real Bluetooth controllers in one process, each a core
//! node driven by the hardware BLE adapter exactly as the daemon drives the
//! LAN adapter: they must discover each other over the air and sync a room.
//! Used by `scripts/ble-vm.sh` (BlueZ in a QEMU guest with two virtual
//! controllers) and usable on a machine with two controllers.
//!
//! `ble_hw_pair [ADAPTER_A] [ADAPTER_B]` (default `hci0 hci1`). Exit code 0
//! when B stored every event A published, 1 on timeout, 2 when BLE is
//! unavailable.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshrelay::crypto::Identity;
use meshrelay::event::{EventId, EventKind, RoomId, UnsignedEvent};
use meshrelay::proto::{AppEvent, Command, Input, LinkKind, Node, NodeConfig, Output};
use meshrelay::store::{MemoryStore, Store};
use meshrelay::transport::ble::{AdvSecret, BleConfig, BleEvent, BleHandle, BleStatus, spawn};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::mpsc;

const EVENTS: u64 = 5;
const TIMEOUT: Duration = Duration::from_secs(120);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Dev {
    name: &'static str,
    node: Node<MemoryStore, StdRng>,
    identity: Identity,
    ble: BleHandle,
    rx: mpsc::Receiver<BleEvent>,
    stored: BTreeSet<EventId>,
}

impl Dev {
    fn settle(&mut self) {
        let now = now_ms();
        if self.node.needs_commit() {
            let _ = self.node.store_mut().commit();
            let _ = self.node.handle(now, Input::CommitDone);
        }
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Transmit { link, bytes } => self.ble.send(link, bytes),
                Output::Close { link, reason } => {
                    println!("{}: core closes link {}: {reason}", self.name, link.0);
                    self.ble.close(link);
                }
                Output::App(AppEvent::EventStored { id, .. }) => {
                    self.stored.insert(id);
                }
                Output::App(other) => println!("{}: {other:?}", self.name),
            }
        }
    }

    fn input(&mut self, input: Input) {
        let _ = self.node.handle(now_ms(), input);
        self.settle();
    }

    fn on_event(&mut self, ev: BleEvent) {
        let input = match ev {
            BleEvent::Up {
                link,
                mtu,
                source,
                address,
            } => {
                println!("{}: BLE link {} up to {address}", self.name, link.0);
                Input::LinkUp {
                    link,
                    kind: LinkKind::Ble,
                    mtu,
                    source,
                }
            }
            BleEvent::Down(link) => {
                println!("{}: BLE link {} down", self.name, link.0);
                Input::LinkDown(link)
            }
            BleEvent::Received { link, bytes } => Input::Received { link, bytes },
            BleEvent::Drained(link) => Input::Drained(link),
        };
        self.input(input);
    }
}

fn device(name: &'static str, seed: u8, adapter: &str) -> Dev {
    let identity = Identity::from_seed(&[seed; 32]);
    let node = Node::new(
        identity.device_id(),
        MemoryStore::new_memory(),
        StdRng::seed_from_u64(u64::from(seed)),
        NodeConfig::default(),
        now_ms(),
    );
    let (ble, rx) = spawn(BleConfig {
        adapter: Some(adapter.to_string()),
        secret: AdvSecret::from_bytes([seed.wrapping_add(50); 32]),
        first_link_id: meshrelay::transport::ble::BLE_LINK_ID_BASE + 1_000_000 * u64::from(seed),
        ..BleConfig::default()
    })
    .expect("inside a runtime");
    Dev {
        name,
        node,
        identity,
        ble,
        rx,
        stored: BTreeSet::new(),
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ha = args.first().map_or("hci0", String::as_str).to_string();
    let hb = args.get(1).map_or("hci1", String::as_str).to_string();
    let mut a = device("A", 1, &ha);
    let mut b = device("B", 2, &hb);
    let room = RoomId([0x42; 16]);
    a.input(Input::Command(Command::JoinRoom(room)));
    b.input(Input::Command(Command::JoinRoom(room)));
    // Wait for both adapters to settle.
    let start = Instant::now();
    loop {
        let (sa, sb) = (a.ble.status(), b.ble.status());
        let starting =
            |s: &BleStatus| matches!(s, BleStatus::Unavailable { reason } if reason == "starting");
        if !starting(&sa) && !starting(&sb) {
            println!("A: {}\nB: {}", sa.summary(), sb.summary());
            if !matches!(sa, BleStatus::Running { .. }) || !matches!(sb, BleStatus::Running { .. })
            {
                std::process::exit(2);
            }
            break;
        }
        if start.elapsed() > Duration::from_secs(20) {
            println!("adapters did not start");
            std::process::exit(2);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut want = Vec::new();
    for seq in 1..=EVENTS {
        let heads = a.node.store().heads(&room).unwrap_or_default();
        let ev = UnsignedEvent {
            room,
            sender: a.identity.device_id(),
            seq,
            prev: heads.into_iter().take(16).collect(),
            origin_ts_ms: now_ms(),
            expires_ms: now_ms() + 3_600_000,
            kind: EventKind::Message,
            payload: format!("hello over BLE #{seq}").into_bytes(),
        }
        .sign(&a.identity)
        .expect("within limits");
        want.push(ev.id());
        a.input(Input::Command(Command::Publish(Box::new(ev))));
    }
    let t0 = Instant::now();
    let mut first_link: Option<Duration> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            Some(ev) = a.rx.recv() => {
                if matches!(ev, BleEvent::Up { .. }) && first_link.is_none() {
                    first_link = Some(t0.elapsed());
                }
                a.on_event(ev);
            }
            Some(ev) = b.rx.recv() => b.on_event(ev),
            _ = tick.tick() => {
                for d in [&mut a, &mut b] {
                    if d.node.poll_timeout().is_some_and(|t| t <= now_ms()) {
                        d.input(Input::Timeout);
                    }
                }
            }
        }
        if want.iter().all(|id| b.stored.contains(id)) {
            println!(
                "PASS: B stored all {EVENTS} events from A over BLE; first link after {:?}, synced after {:?}",
                first_link.unwrap_or_default(),
                t0.elapsed()
            );
            println!(
                "A: {}\nB: {}",
                a.ble.status().summary(),
                b.ble.status().summary()
            );
            std::process::exit(0);
        }
        if t0.elapsed() > TIMEOUT {
            println!(
                "FAIL: B has {}/{EVENTS} events after {:?}; A: {}; B: {}",
                want.iter().filter(|id| b.stored.contains(*id)).count(),
                TIMEOUT,
                a.ble.status().summary(),
                b.ble.status().summary()
            );
            std::process::exit(1);
        }
    }
}
