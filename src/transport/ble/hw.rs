//! The radio (`protocol-spec/ble.md`, "GATT"): the peripheral role through
//! BlueZ over D-Bus (`bluer`: advertising and a GATT server) and the central
//! role through `btleplug`. Everything above the radio is the sans-IO
//! [`Engine`]; this module only moves ATT values and reports connections.
//!
//! One task owns the engine. Each link has one I/O task: for a central link
//! it writes values without response and forwards notifications; for a
//! peripheral link it reads the central's writes (BlueZ `AcquireWrite`) and
//! notifies (`AcquireNotify`). No value is notified to a subscriber before
//! its session produced one, and a session produces only handshake records
//! before the handshake completes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bluer::Uuid;
use bluer::adv::{Advertisement, AdvertisementHandle};
use bluer::gatt::local::{
    Application, ApplicationHandle, Characteristic, CharacteristicControl,
    CharacteristicControlEvent, CharacteristicNotify, CharacteristicNotifyMethod,
    CharacteristicRead, CharacteristicWrite, CharacteristicWriteMethod, Service,
    characteristic_control,
};
use bluer::gatt::{CharacteristicReader, CharacteristicWriter};
use btleplug::api::{
    Central as _, CentralEvent, Manager as _, Peripheral as _, ScanFilter, WriteType,
};
use btleplug::platform::{Adapter as BtAdapter, Manager as BtManager, Peripheral as BtPeripheral};
use futures::StreamExt;
use tokio::sync::mpsc;

use super::adv::AdvToken;
use super::engine::Engine;
use super::privacy::{Privacy, address_kind, read_privacy};
use super::session::Role;
use super::{
    BleConfig, BleEvent, BleStatus, CHARACTERISTIC_UUID, Command, MANUFACTURER_ID, READ_VALUE,
    SERVICE_UUID, ble_source, set_status,
};
use crate::proto::LinkId;

/// Bytes a central leaves unused below the ATT MTU in its writes: BlueZ
/// silently lost write-without-response values that filled the MTU (the
/// same margin bluer leaves for notifications).
pub const BLUEZ_WRITE_MARGIN: usize = 5;
/// ATT values queued for one link's writer.
pub const WRITER_QUEUE: usize = 64;
/// Messages queued from link tasks to the engine task.
pub const RADIO_QUEUE: usize = 1024;
/// How often the engine task wakes without other work.
const TICK: Duration = Duration::from_millis(250);
/// How long a peer's address type lookup (status only) may take.
const PEER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Radio {
    /// A central connection is ready.
    Opened {
        token: AdvToken,
        peripheral: BtPeripheral,
        characteristic: btleplug::api::Characteristic,
        att_mtu: usize,
        address: String,
        /// Whether the peer's address is random (`None`: not reported).
        random: Option<bool>,
    },
    /// A central connection attempt failed (the engine task decides whether
    /// to disconnect: the peer may be linked to us in the other role over
    /// the same LE connection).
    Failed(AdvToken, BtPeripheral),
    Value(LinkId, Vec<u8>),
    Flushed(LinkId),
    Closed(LinkId),
}

struct LinkIo {
    tx: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
    /// The central role's handle on the peer (`None` for peripheral links).
    peripheral: Option<BtPeripheral>,
    /// The peer's address: two controllers share one LE connection, which
    /// carries the links of both roles between them.
    address: String,
}

/// Runs the adapter until the daemon drops its handle (`Ok`) or the radio
/// fails (`Err(reason)`: the caller reports it and starts again later).
pub(super) async fn run(
    config: &BleConfig,
    cmd_rx: &mut mpsc::UnboundedReceiver<Command>,
    ev_tx: &mpsc::Sender<BleEvent>,
    status: &Mutex<BleStatus>,
) -> Result<(), String> {
    let radio = open(config).await?;
    tracing::info!(adapter = %radio.name, privacy = %radio.privacy.status(), "BLE running");
    radio.drive(config, cmd_rx, ev_tx, status).await
}

/// Reads the controller's privacy state (a blocking probe, off the runtime).
async fn privacy_of(adapter: &str) -> Privacy {
    let name = adapter.to_string();
    tokio::task::spawn_blocking(move || read_privacy(&name))
        .await
        .unwrap_or_else(|e| Privacy::Unknown(format!("probe task failed: {e}")))
}

struct Opened {
    name: String,
    privacy: Privacy,
    adapter: bluer::Adapter,
    central: BtAdapter,
    _app: ApplicationHandle,
    control: CharacteristicControl,
}

async fn open(config: &BleConfig) -> Result<Opened, String> {
    let session = bluer::Session::new()
        .await
        .map_err(|e| format!("no system bus or bluetoothd: {e}"))?;
    let adapter = match &config.adapter {
        Some(name) => session
            .adapter(name)
            .map_err(|e| format!("no controller {name}: {e}"))?,
        None => session
            .default_adapter()
            .await
            .map_err(|e| format!("no Bluetooth controller: {e}"))?,
    };
    let name = adapter.name().to_string();
    if !adapter.is_powered().await.unwrap_or(false) {
        adapter
            .set_powered(true)
            .await
            .map_err(|e| format!("cannot power on {name}: {e}"))?;
    }
    let manager = BtManager::new()
        .await
        .map_err(|e| format!("central role unavailable: {e}"))?;
    let mut central = None;
    for a in manager.adapters().await.map_err(|e| e.to_string())? {
        let info = a.adapter_info().await.unwrap_or_default();
        if info.split_whitespace().next() == Some(name.as_str()) {
            central = Some(a);
            break;
        }
    }
    let central = central.ok_or_else(|| format!("btleplug does not see {name}"))?;
    let (control, control_handle) = characteristic_control();
    let app = Application {
        services: vec![Service {
            uuid: Uuid::from_u128(SERVICE_UUID),
            primary: true,
            characteristics: vec![Characteristic {
                uuid: Uuid::from_u128(CHARACTERISTIC_UUID),
                read: Some(CharacteristicRead {
                    read: true,
                    fun: Box::new(|_req| Box::pin(async { Ok(READ_VALUE.to_vec()) })),
                    ..Default::default()
                }),
                write: Some(CharacteristicWrite {
                    write_without_response: true,
                    method: CharacteristicWriteMethod::Io,
                    ..Default::default()
                }),
                notify: Some(CharacteristicNotify {
                    notify: true,
                    method: CharacteristicNotifyMethod::Io,
                    ..Default::default()
                }),
                control_handle,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let app = adapter
        .serve_gatt_application(app)
        .await
        .map_err(|e| format!("cannot register the GATT service: {e}"))?;
    Ok(Opened {
        privacy: privacy_of(&name).await,
        name,
        adapter,
        central,
        _app: app,
        control,
    })
}

fn advertisement(token: AdvToken) -> Advertisement {
    Advertisement {
        advertisement_type: bluer::adv::Type::Peripheral,
        service_uuids: [Uuid::from_u128(SERVICE_UUID)].into_iter().collect(),
        manufacturer_data: [(MANUFACTURER_ID, token.0.to_vec())].into_iter().collect(),
        discoverable: Some(true),
        ..Default::default()
    }
}

fn token_of(props: &btleplug::api::PeripheralProperties) -> Option<AdvToken> {
    if !props.services.contains(&Uuid::from_u128(SERVICE_UUID)) {
        return None;
    }
    AdvToken::from_bytes(props.manufacturer_data.get(&MANUFACTURER_ID)?)
}

/// Connects, discovers, subscribes; reports `Opened` or `Failed`.
async fn connect(
    peripheral: BtPeripheral,
    token: AdvToken,
    timeout: Duration,
    radio_tx: mpsc::Sender<Radio>,
) {
    let attempt = async {
        peripheral
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        peripheral
            .discover_services()
            .await
            .map_err(|e| format!("discover: {e}"))?;
        let ch = peripheral
            .characteristics()
            .into_iter()
            .find(|c| c.uuid == Uuid::from_u128(CHARACTERISTIC_UUID))
            .ok_or_else(|| "no meshrelay characteristic".to_string())?;
        peripheral
            .subscribe(&ch)
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        Ok::<_, String>(ch)
    };
    let r = match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err("timed out".to_string()),
    };
    let msg = match r {
        Ok(characteristic) => Radio::Opened {
            // BlueZ loses write commands that fill the whole ATT MTU
            // (seen: every 512-byte write at ATT MTU 517 vanished, shorter
            // ones and 512-byte notifications arrived): leave a margin.
            att_mtu: usize::from(peripheral.mtu()).saturating_sub(BLUEZ_WRITE_MARGIN),
            address: peripheral.address().to_string(),
            random: match peripheral.properties().await {
                Ok(Some(p)) => p
                    .address_type
                    .map(|t| t == btleplug::api::AddressType::Random),
                _ => None,
            },
            token,
            peripheral,
            characteristic,
        },
        Err(e) => {
            tracing::debug!(address = %peripheral.address(), "BLE connect failed: {e}");
            Radio::Failed(token, peripheral)
        }
    };
    let _ = radio_tx.send(msg).await;
}

/// A central link: writes without response, forwards notifications.
async fn central_io(
    link: LinkId,
    peripheral: BtPeripheral,
    ch: btleplug::api::Characteristic,
    mut rx: mpsc::Receiver<Vec<u8>>,
    radio_tx: mpsc::Sender<Radio>,
) {
    let Ok(mut notes) = peripheral.notifications().await else {
        let _ = radio_tx.send(Radio::Closed(link)).await;
        return;
    };
    let read_tx = radio_tx.clone();
    let uuid = ch.uuid;
    let read = async move {
        while let Some(n) = notes.next().await {
            if n.uuid == uuid && read_tx.send(Radio::Value(link, n.value)).await.is_err() {
                return;
            }
        }
        tracing::debug!(link = link.0, "BLE notifications ended");
    };
    let write_tx = radio_tx.clone();
    let write = async move {
        while let Some(v) = rx.recv().await {
            if let Err(e) = peripheral.write(&ch, &v, WriteType::WithoutResponse).await {
                tracing::debug!(link = link.0, "BLE write failed: {e}");
                return;
            }
            tracing::trace!(link = link.0, len = v.len(), "BLE value written");
            if rx.is_empty() {
                let _ = write_tx.send(Radio::Flushed(link)).await;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
    let _ = radio_tx.send(Radio::Closed(link)).await;
}

/// A peripheral link: reads the central's writes, notifies.
async fn peripheral_io(
    link: LinkId,
    reader: CharacteristicReader,
    writer: CharacteristicWriter,
    mut rx: mpsc::Receiver<Vec<u8>>,
    radio_tx: mpsc::Sender<Radio>,
) {
    let read_tx = radio_tx.clone();
    let read = async move {
        loop {
            match reader.recv().await {
                Ok(v) => {
                    if read_tx.send(Radio::Value(link, v)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(link = link.0, "BLE peripheral read ended: {e}");
                    return;
                }
            }
        }
    };
    let write_tx = radio_tx.clone();
    let write = async move {
        while let Some(v) = rx.recv().await {
            if let Err(e) = writer.send(&v).await {
                tracing::debug!(link = link.0, "BLE notify failed: {e}");
                return;
            }
            tracing::trace!(link = link.0, len = v.len(), "BLE value notified");
            if rx.is_empty() {
                let _ = write_tx.send(Radio::Flushed(link)).await;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
    let _ = radio_tx.send(Radio::Closed(link)).await;
}

/// The kind of address a central connected from (BlueZ's device record).
async fn peer_kind(adapter: &bluer::Adapter, addr: &str) -> &'static str {
    let Ok(address) = addr.parse::<bluer::Address>() else {
        return "unknown";
    };
    let lookup = async {
        let device = adapter.device(address).ok()?;
        device.address_type().await.ok()
    };
    match tokio::time::timeout(PEER_LOOKUP_TIMEOUT, lookup).await {
        Ok(Some(bluer::AddressType::LeRandom)) => address_kind(addr, Some(true)),
        Ok(Some(_)) => address_kind(addr, Some(false)),
        _ => "unknown",
    }
}

/// Half-open peripheral connections: BlueZ reports the central's
/// subscription and its write channel separately.
#[derive(Default)]
struct Pending {
    readers: BTreeMap<String, CharacteristicReader>,
    writers: BTreeMap<String, CharacteristicWriter>,
}

/// Most half-open peripheral connections kept.
const MAX_PENDING: usize = 8;

impl Opened {
    async fn drive(
        self,
        config: &BleConfig,
        cmd_rx: &mut mpsc::UnboundedReceiver<Command>,
        ev_tx: &mpsc::Sender<BleEvent>,
        status: &Mutex<BleStatus>,
    ) -> Result<(), String> {
        let Opened {
            name,
            mut privacy,
            adapter,
            central,
            _app,
            mut control,
        } = self;
        let mut engine = Engine::new(
            config.secret.clone(),
            config.policy.clone(),
            config.first_link_id,
            ble_source(&name),
        );
        let connect_timeout = Duration::from_millis(engine.scheduler().config().connect_timeout_ms);
        let (radio_tx, mut radio_rx) = mpsc::channel::<Radio>(RADIO_QUEUE);
        let mut links: BTreeMap<LinkId, LinkIo> = BTreeMap::new();
        // Peers' address kinds (status only).
        let mut kinds: BTreeMap<LinkId, &'static str> = BTreeMap::new();
        let mut pending = Pending::default();
        let mut central_events = central
            .events()
            .await
            .map_err(|e| format!("cannot watch scan results: {e}"))?;
        let mut adv: Option<AdvertisementHandle> = None;
        let mut advertising = String::from("starting");
        let mut scanning = false;
        let mut tick = tokio::time::interval(TICK);
        let result = loop {
            let now = now_ms();
            // Re-register the advertisement at each epoch boundary (the
            // engine's schedule: at start, at every boundary, and soon
            // after a failure) with that epoch's token. The kernel rotates
            // the resolvable private address on its own timer (see the
            // spec's known limit). The privacy state is read again each time.
            if let Some(token) = engine.advert_due(now) {
                drop(adv.take());
                let ok = match adapter.advertise(advertisement(token)).await {
                    Ok(h) => {
                        adv = Some(h);
                        advertising = "on".into();
                        true
                    }
                    Err(e) => {
                        tracing::warn!("cannot advertise: {e}");
                        advertising = format!("failed: {e}");
                        false
                    }
                };
                engine.advert_registered(now, ok);
                let p = privacy_of(&name).await;
                if p != privacy {
                    tracing::info!(adapter = %name, privacy = %p.status(), "BLE privacy changed");
                    privacy = p;
                }
                tracing::debug!(?token, ok, privacy = %privacy.status(), "BLE advertisement registered");
            }
            // Duty-cycled scanning.
            let want_scan = engine.scanning(now);
            if want_scan != scanning {
                let r = if want_scan {
                    central
                        .start_scan(ScanFilter {
                            services: vec![Uuid::from_u128(SERVICE_UUID)],
                        })
                        .await
                } else {
                    central.stop_scan().await
                };
                if let Err(e) = r {
                    tracing::debug!("scan toggle failed: {e}");
                }
                scanning = want_scan;
            }
            tokio::select! {
                biased;
                cmd = cmd_rx.recv() => match cmd {
                    None => break Ok(()),
                    Some(Command::Send(link, bytes)) => engine.core_send(now, link, &bytes),
                    Some(Command::Close(link)) => engine.core_close(link),
                },
                Some(msg) = radio_rx.recv() => match msg {
                    Radio::Opened { token, peripheral, characteristic, att_mtu, address, random } => {
                        let kind = address_kind(&address, random);
                        tracing::debug!(%address, kind, att_mtu, "BLE central link open");
                        let address_copy = address.clone();
                        match engine.link_opened(now, Role::Central, att_mtu, address, Some(token)) {
                            Some(link) => {
                                kinds.insert(link, kind);
                                let (tx, rx) = mpsc::channel(WRITER_QUEUE);
                                let task = tokio::spawn(central_io(
                                    link, peripheral.clone(), characteristic, rx, radio_tx.clone()));
                                links.insert(link, LinkIo { tx, task, peripheral: Some(peripheral), address: address_copy });
                            }
                            None => {
                                if !links.values().any(|o| o.address == address_copy) {
                                    let _ = peripheral.disconnect().await;
                                }
                            }
                        }
                    }
                    Radio::Failed(token, peripheral) => {
                        engine.connect_failed(now, token);
                        let address = peripheral.address().to_string();
                        if !links.values().any(|o| o.address == address) {
                            tokio::spawn(async move {
                                let _ = peripheral.disconnect().await;
                            });
                        }
                    }
                    Radio::Value(link, v) => {
                        tracing::trace!(link = link.0, len = v.len(), "BLE value in");
                        engine.radio_received(now, link, &v);
                    }
                    Radio::Flushed(link) => engine.radio_flushed(link),
                    Radio::Closed(link) => {
                        tracing::debug!(link = link.0, "BLE radio closed the link");
                        if let Some(io) = links.remove(&link) {
                            io.task.abort();
                        }
                        kinds.remove(&link);
                        engine.radio_closed(link);
                    }
                },
                Some(ev) = control.next() => {
                    let (addr, mtu) = match ev {
                        CharacteristicControlEvent::Write(req) => {
                            let addr = req.device_address().to_string();
                            let mtu = req.mtu();
                            if let Ok(r) = req.accept() {
                                pending.readers.insert(addr.clone(), r);
                            }
                            (addr, mtu)
                        }
                        CharacteristicControlEvent::Notify(w) => {
                            let addr = w.device_address().to_string();
                            let mtu = w.mtu();
                            pending.writers.insert(addr.clone(), w);
                            (addr, mtu)
                        }
                    };
                    tracing::debug!(%addr, mtu, "BLE peripheral: central subscribed or wrote");
                    // Only once both halves are there (taking one alone would drop it).
                    if pending.readers.contains_key(&addr) && pending.writers.contains_key(&addr)
                        && let (Some(r), Some(w)) = (pending.readers.remove(&addr), pending.writers.remove(&addr))
                    {
                        // The notify half's size is what this side sends (bluer
                        // already leaves BlueZ's margin); the engine wants the ATT MTU.
                        let att_mtu = w.mtu() + super::session::ATT_HEADER_BYTES;
                        let opened = engine.link_opened(now, Role::Peripheral, att_mtu, addr.clone(), None);
                        tracing::debug!(%addr, att_mtu, ?opened, "BLE peripheral link open");
                        if let Some(link) = opened {
                            kinds.insert(link, peer_kind(&adapter, &addr).await);
                            let (tx, rx) = mpsc::channel(WRITER_QUEUE);
                            let task = tokio::spawn(peripheral_io(link, r, w, rx, radio_tx.clone()));
                            links.insert(link, LinkIo { tx, task, peripheral: None, address: addr.clone() });
                        }
                    }
                    while pending.readers.len() > MAX_PENDING {
                        pending.readers.pop_first();
                    }
                    while pending.writers.len() > MAX_PENDING {
                        pending.writers.pop_first();
                    }
                }
                Some(ev) = central_events.next() => {
                    // The LE connection to a peer is gone: every link to it
                    // (either role) is dead, even if its I/O task has not
                    // noticed yet (notification streams do not end).
                    if let CentralEvent::DeviceDisconnected(id) = &ev
                        && let Ok(p) = central.peripheral(id).await
                    {
                        let address = p.address().to_string();
                        let dead: Vec<LinkId> = links
                            .iter()
                            .filter(|(_, o)| o.address == address)
                            .map(|(l, _)| *l)
                            .collect();
                        for link in dead {
                            tracing::debug!(link = link.0, %address, "BLE peer disconnected");
                            if let Some(io) = links.remove(&link) {
                                io.task.abort();
                            }
                            kinds.remove(&link);
                            engine.radio_closed(link);
                        }
                    }
                    if let CentralEvent::DeviceDiscovered(id) | CentralEvent::DeviceUpdated(id)
                        | CentralEvent::ManufacturerDataAdvertisement { id, .. } = ev
                        && let Ok(p) = central.peripheral(&id).await
                        && let Ok(Some(props)) = p.properties().await
                        && let Some(token) = token_of(&props)
                        && engine.on_advert(now, token, props.rssi).is_ok()
                    {
                        tracing::debug!(address = %props.address, ?token, rssi = ?props.rssi, "BLE connecting");
                        tokio::spawn(connect(p, token, connect_timeout, radio_tx.clone()));
                    }
                }
                _ = tick.tick() => {
                    engine.handle_timeout(now);
                }
            }
            // Hand ATT values to the link writers, closes to the radio,
            // events to the daemon.
            for link in engine.links_with_outbound() {
                let Some(io) = links.get(&link) else { continue };
                while let Ok(permit) = io.tx.try_reserve() {
                    match engine.poll_radio(link) {
                        Some(v) => permit.send(v),
                        None => break,
                    }
                }
            }
            // A closed link ends the LE connection to that peer, unless
            // another link (the tie-break's winner, in the other role) still
            // rides on it: disconnecting would kill that one too.
            while let Some(link) = engine.poll_close() {
                kinds.remove(&link);
                if let Some(io) = links.remove(&link) {
                    io.task.abort();
                    if links.values().any(|o| o.address == io.address) {
                        tracing::debug!(link = link.0, address = %io.address, "BLE link closed; connection kept for the other link");
                        continue;
                    }
                    match io.peripheral {
                        Some(p) => {
                            tokio::spawn(async move {
                                let _ = p.disconnect().await;
                            });
                        }
                        None => {
                            if let Some(device) = io
                                .address
                                .parse::<bluer::Address>()
                                .ok()
                                .and_then(|a| adapter.device(a).ok())
                            {
                                tokio::spawn(async move {
                                    let _ = device.disconnect().await;
                                });
                            }
                        }
                    }
                }
            }
            while let Some(ev) = engine.poll_event() {
                if ev_tx.send(ev).await.is_err() {
                    break;
                }
            }
            if ev_tx.is_closed() {
                break Ok(());
            }
            let mut link_status = engine.link_status();
            for l in &mut link_status {
                l.address_type = kinds.get(&LinkId(l.link)).map(|k| (*k).to_string());
            }
            set_status(
                status,
                BleStatus::Running {
                    adapter: name.clone(),
                    privacy: privacy.status(),
                    advertising: advertising.clone(),
                    links: link_status,
                },
            );
        };
        for (_, io) in links {
            io.task.abort();
        }
        result
    }
}
