//! The LAN adapter: libp2p over TCP and QUIC with Noise and yamux, peers
//! found by mDNS or given as static addresses (`protocol-spec/lan.md`).
//!
//! The adapter only moves datagrams: each peer pair gets one long-lived
//! libp2p stream on the protocol [`PROTOCOL`], which carries the core's
//! datagrams length-prefixed (`u32` big-endian, at most
//! [`MAX_DATAGRAM_BYTES`]). Each stream is one core link
//! ([`crate::proto::LinkId`]).
//!
//! * **Ephemeral peer keys.** The libp2p key is new at every start and is not
//!   the device identity, so LAN observers cannot track a device across runs.
//! * **One link per peer pair.** Only the side with the smaller `PeerId`
//!   opens the stream; the other accepts and replaces any older stream from
//!   the same peer. mDNS dials by `PeerId` with "disconnected and not
//!   dialing"; a duplicate connection from a simultaneous dial is closed by a
//!   deterministic tie-break (keep the connection dialed by the smaller
//!   `PeerId`), and idle connections time out.
//! * **Static peers** are plain multiaddrs (no `/p2p/` suffix needed),
//!   redialled with exponential backoff while not connected.
//! * **Penalties** attach to the remote IP address ([`SourceKey`]), which a
//!   LAN attacker cannot change as cheaply as a libp2p key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, mdns, noise, tcp, yamux};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::proto::LinkId;
use crate::proto::io::SourceKey;

/// The stream protocol name (versioned).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/meshrelay/frames/1");

/// Largest datagram accepted from a peer: the largest packet the wire layer
/// produces (`wire::MAX_MTU`).
pub const MAX_DATAGRAM_BYTES: usize = crate::wire::MAX_MTU;

/// MTU reported to the core for LAN links.
pub const LAN_MTU: usize = MAX_DATAGRAM_BYTES;

/// Datagrams queued for one link's writer; a link whose queue overflows
/// is closed (its peer stopped reading). The core keeps one window of event
/// bytes in flight per link, and control frames are small and batched, so
/// an honest peer never comes near this.
pub const LINK_QUEUE: usize = 4096;

/// Events queued from all links to the driver before readers wait.
pub const EVENT_QUEUE: usize = 1024;

/// Bytes of received datagrams queued from all links to the driver before
/// readers wait (and stop reading, so the peers' streams apply
/// backpressure). Without it the count bound alone would let 1,024
/// datagrams of up to 64 KiB (64 MiB) wait whenever the driver is slower
/// than the links, as on a slow board; honest traffic needs far less.
pub const RECEIVE_QUEUE_BYTES: usize = 512 * 1024;
const _: () = assert!(MAX_DATAGRAM_BYTES < RECEIVE_QUEUE_BYTES);

/// Most static peers.
pub const MAX_STATIC_PEERS: usize = 64;

/// Most mDNS-discovered peers remembered for redialling (further
/// discoveries are dialled once and not remembered).
pub const MAX_MDNS_PEERS: usize = 64;

/// Most addresses remembered per mDNS-discovered peer.
pub const MAX_MDNS_ADDRS: usize = 8;

/// Idle connections (no stream) close after this long.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// First and largest static-peer redial delay.
pub const REDIAL_MIN: Duration = Duration::from_secs(1);
/// Largest static-peer redial delay.
pub const REDIAL_MAX: Duration = Duration::from_secs(30);

/// Why the LAN adapter could not start.
#[derive(Debug, Error)]
pub enum LanError {
    /// Building the transport failed.
    #[error("cannot build the LAN transport: {0}")]
    Build(String),
    /// A listen address could not be used.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// Configuration of the LAN adapter.
#[derive(Debug, Clone)]
pub struct LanConfig {
    /// Addresses to listen on (default: all interfaces, random TCP and QUIC ports).
    pub listen: Vec<Multiaddr>,
    /// Static peers, redialled with backoff.
    pub peers: Vec<Multiaddr>,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
}

impl Default for LanConfig {
    #[allow(clippy::expect_used)] // invariant: the listen addresses are valid multiaddr literals
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0"
                    .parse()
                    .expect("valid multiaddr literal"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr literal"),
            ],
            peers: Vec::new(),
            mdns: true,
        }
    }
}

/// What the adapter reports to the driver.
#[derive(Debug)]
pub enum LanEvent {
    /// The adapter listens on a new address.
    Listening(Multiaddr),
    /// A link to a peer is up.
    Up {
        /// The link.
        link: LinkId,
        /// The remote address, for status output.
        address: String,
        /// The penalty key (remote IP).
        source: SourceKey,
    },
    /// A link went down.
    Down(LinkId),
    /// A datagram arrived.
    Received {
        /// The link.
        link: LinkId,
        /// The datagram.
        bytes: Vec<u8>,
        /// Its share of `RECEIVE_QUEUE_BYTES`, returned when the event is
        /// dropped (after the driver handed the bytes to the core).
        credit: ReceiveCredit,
    },
    /// All datagrams queued on the link were written.
    Drained(LinkId),
}

/// A received datagram's share of [`RECEIVE_QUEUE_BYTES`]: the bytes it
/// holds return to the readers when this is dropped.
pub struct ReceiveCredit(OwnedSemaphorePermit);

impl std::fmt::Debug for ReceiveCredit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiveCredit({})", self.0.num_permits())
    }
}

enum Command {
    Send(LinkId, Vec<u8>),
    Close(LinkId),
}

/// A handle for sending on links. Cheap to clone.
///
/// Sends never wait: the driver must not block on the adapter while the
/// adapter waits for the driver to take its events. The queue is bounded by
/// the core, which keeps at most one window of event bytes in flight per
/// link until the adapter reports the link drained.
#[derive(Clone)]
pub struct LanHandle {
    cmd: mpsc::UnboundedSender<Command>,
}

impl LanHandle {
    /// Queues a datagram on a link.
    pub fn send(&self, link: LinkId, bytes: Vec<u8>) {
        let _ = self.cmd.send(Command::Send(link, bytes));
    }

    /// Closes a link.
    pub fn close(&self, link: LinkId) {
        let _ = self.cmd.send(Command::Close(link));
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    mdns: Toggle<mdns::tokio::Behaviour>,
    stream: libp2p_stream::Behaviour,
}

/// The penalty key of a remote address: a hash of its IP (not its port).
pub fn source_of(addr: &Multiaddr) -> SourceKey {
    let ip: Option<IpAddr> = addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    });
    let text = ip.map_or_else(|| addr.to_string(), |ip| ip.to_string());
    let h = Sha256::new()
        .chain_update(b"meshrelay/v1/lan-source\0")
        .chain_update(text.as_bytes())
        .finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&h[..16]);
    SourceKey(k)
}

struct LinkIo {
    peer: PeerId,
    tx: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the adapter. Returns the handle, the event stream, and this
/// run's (ephemeral) `PeerId`.
pub fn spawn(config: LanConfig) -> Result<(LanHandle, mpsc::Receiver<LanEvent>, PeerId), LanError> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| LanError::Build(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| {
            let mdns = if config.mdns {
                mdns::tokio::Behaviour::new(mdns::Config::default(), key.public().to_peer_id()).ok()
            } else {
                None
            };
            Behaviour {
                mdns: Toggle::from(mdns),
                stream: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| LanError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| LanError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
    }
    let me = *swarm.local_peer_id();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let peers: Vec<Multiaddr> = config.peers.into_iter().take(MAX_STATIC_PEERS).collect();
    tokio::spawn(run(swarm, peers, cmd_rx, ev_tx));
    Ok((LanHandle { cmd: cmd_tx }, ev_rx, me))
}

/// Exponential redial backoff: `REDIAL_MIN` doubling to `REDIAL_MAX`.
struct Redial {
    delay: Duration,
    next: tokio::time::Instant,
}

impl Redial {
    /// Due at `first`.
    fn new(first: tokio::time::Instant) -> Self {
        Redial {
            delay: REDIAL_MIN,
            next: first,
        }
    }

    /// Whether a dial is due at `now`; if so, the next one waits twice as
    /// long as this one.
    fn due(&mut self, now: tokio::time::Instant) -> bool {
        if self.next > now {
            return false;
        }
        self.next = now + self.delay;
        self.delay = (self.delay * 2).min(REDIAL_MAX);
        true
    }

    /// Connected: the next loss redials from the shortest delay.
    fn reset(&mut self) {
        self.delay = REDIAL_MIN;
    }
}

struct StaticPeer {
    addr: Multiaddr,
    peer: Option<PeerId>,
    redial: Redial,
}

/// An mDNS-discovered peer, redialled with backoff while its record lives
/// and no connection to it exists (libp2p's mDNS reports a peer once, so a
/// lost connection is otherwise never redialled before the record expires).
struct MdnsPeer {
    addrs: Vec<Multiaddr>,
    redial: Redial,
}

/// Dials a discovered peer by `PeerId` ("disconnected and not dialing").
fn dial_discovered(swarm: &mut Swarm<Behaviour>, peer: PeerId, addrs: Vec<Multiaddr>) {
    let opts = DialOpts::peer_id(peer)
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .addresses(addrs)
        .build();
    let _ = swarm.dial(opts);
}

struct State {
    me: PeerId,
    links: BTreeMap<LinkId, LinkIo>,
    by_peer: BTreeMap<PeerId, LinkId>,
    remote_addr: BTreeMap<PeerId, Multiaddr>,
    connected: BTreeSet<PeerId>,
    opening: BTreeSet<PeerId>,
    next_link: Arc<AtomicU64>,
    ev_tx: mpsc::Sender<LanEvent>,
    closed_tx: mpsc::Sender<LinkId>,
    /// `RECEIVE_QUEUE_BYTES`, shared by every link's reader.
    receive_credit: Arc<Semaphore>,
}

impl State {
    /// Starts the reader and writer of a new stream and reports the link.
    async fn add_link(&mut self, peer: PeerId, stream: libp2p::Stream) {
        if let Some(old) = self.by_peer.remove(&peer) {
            self.drop_link(old).await;
        }
        let link = LinkId(self.next_link.fetch_add(1, Ordering::Relaxed));
        let addr = self.remote_addr.get(&peer).cloned();
        let source = addr.as_ref().map_or(SourceKey([0; 16]), source_of);
        // `Up` is queued before the reader starts: the peer's first
        // datagram (its Hello) must never reach the core ahead of the
        // link it arrived on, or the core drops it as stray and the link
        // never reconciles (seen under load, when the event queue is full
        // and the reader's send wins the race for a free slot).
        let _ = self
            .ev_tx
            .send(LanEvent::Up {
                link,
                address: addr.map_or_else(|| peer.to_string(), |a| a.to_string()),
                source,
            })
            .await;
        let (tx, rx) = mpsc::channel::<Vec<u8>>(LINK_QUEUE);
        let ev_tx = self.ev_tx.clone();
        let task = tokio::spawn(link_io(
            link,
            stream,
            rx,
            ev_tx,
            self.closed_tx.clone(),
            Arc::clone(&self.receive_credit),
        ));
        self.links.insert(link, LinkIo { peer, tx, task });
        self.by_peer.insert(peer, link);
    }

    /// Whether this side should open the link's stream to a connected
    /// `peer`: it has the smaller `PeerId`, and no link or opening exists.
    fn needs_stream(&self, peer: &PeerId) -> bool {
        self.me < *peer && !self.by_peer.contains_key(peer) && !self.opening.contains(peer)
    }

    /// Opens the link's stream to `peer` in a task; the result arrives on
    /// `opened_tx`.
    fn open_stream(
        &mut self,
        peer: PeerId,
        control: &libp2p_stream::Control,
        opened_tx: &mpsc::Sender<(PeerId, Option<libp2p::Stream>)>,
    ) {
        self.opening.insert(peer);
        let mut control = control.clone();
        let opened_tx = opened_tx.clone();
        tokio::spawn(async move {
            let s = control.open_stream(peer, PROTOCOL).await.ok();
            let _ = opened_tx.send((peer, s)).await;
        });
    }

    async fn drop_link(&mut self, link: LinkId) {
        if let Some(io) = self.links.remove(&link) {
            io.task.abort();
            if self.by_peer.get(&io.peer) == Some(&link) {
                self.by_peer.remove(&io.peer);
            }
            let _ = self.ev_tx.send(LanEvent::Down(link)).await;
        }
    }
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    peers: Vec<Multiaddr>,
    mut cmd_rx: mpsc::UnboundedReceiver<Command>,
    ev_tx: mpsc::Sender<LanEvent>,
) {
    let (closed_tx, mut closed_rx) = mpsc::channel::<LinkId>(64);
    let mut control = swarm.behaviour().stream.new_control();
    let Ok(mut incoming) = control.accept(PROTOCOL) else {
        tracing::error!("the LAN stream protocol was registered twice");
        return;
    };
    let now = tokio::time::Instant::now();
    let mut statics: Vec<StaticPeer> = peers
        .into_iter()
        .map(|addr| StaticPeer {
            addr,
            peer: None,
            redial: Redial::new(now),
        })
        .collect();
    let mut mdns_peers: BTreeMap<PeerId, MdnsPeer> = BTreeMap::new();
    let mut st = State {
        me: *swarm.local_peer_id(),
        links: BTreeMap::new(),
        by_peer: BTreeMap::new(),
        remote_addr: BTreeMap::new(),
        connected: BTreeSet::new(),
        opening: BTreeSet::new(),
        next_link: Arc::new(AtomicU64::new(1)),
        ev_tx: ev_tx.clone(),
        closed_tx,
        receive_credit: Arc::new(Semaphore::new(RECEIVE_QUEUE_BYTES)),
    };
    // Streams we open arrive here from their opening tasks.
    let (opened_tx, mut opened_rx) = mpsc::channel::<(PeerId, Option<libp2p::Stream>)>(64);
    let mut redial = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            // Local work first: commands from the driver.
            biased;
            cmd = cmd_rx.recv() => match cmd {
                None => return,
                Some(Command::Send(link, bytes)) => {
                    // Never block the swarm on one slow link: the core keeps
                    // at most one window in flight per link, far below the
                    // queue, so a full queue means the peer stopped reading.
                    if let Some(io) = st.links.get(&link)
                        && io.tx.try_send(bytes).is_err()
                    {
                        tracing::debug!(link = link.0, "link writer queue full or closed: closing");
                        st.drop_link(link).await;
                    }
                }
                Some(Command::Close(link)) => {
                    if let Some(peer) = st.links.get(&link).map(|io| io.peer) {
                        st.drop_link(link).await;
                        let _ = swarm.disconnect_peer_id(peer);
                    }
                }
            },
            Some(link) = closed_rx.recv() => st.drop_link(link).await,
            Some((peer, stream)) = opened_rx.recv() => {
                st.opening.remove(&peer);
                match stream {
                    Some(s) if st.connected.contains(&peer) => st.add_link(peer, s).await,
                    Some(_) => {}
                    None => tracing::debug!(%peer, "could not open a stream"),
                }
            }
            Some((peer, stream)) = incoming.next() => {
                if peer < st.me {
                    st.add_link(peer, stream).await;
                } else {
                    // The smaller PeerId opens; a stream from the larger side
                    // breaks the one-link rule (or is a bug): refuse it.
                    tracing::debug!(%peer, "refusing stream from the side that should accept");
                }
            }
            _ = redial.tick() => {
                let now = tokio::time::Instant::now();
                for sp in statics.iter_mut() {
                    let up = sp.peer.is_some_and(|p| st.connected.contains(&p));
                    if !up && sp.redial.due(now) {
                        tracing::debug!(addr = %sp.addr, "dialling static peer");
                        let _ = swarm.dial(DialOpts::unknown_peer_id().address(sp.addr.clone()).build());
                    }
                }
                for (peer, mp) in mdns_peers.iter_mut() {
                    if st.connected.contains(peer) {
                        mp.redial.reset();
                    } else if mp.redial.due(now) {
                        tracing::debug!(%peer, "redialling mDNS peer");
                        dial_discovered(&mut swarm, *peer, mp.addrs.clone());
                    }
                }
                // A connection without a link (its stream failed to open, or
                // died with the duplicate connection of a simultaneous dial)
                // gets a new stream: nothing else would open one.
                let orphans: Vec<PeerId> = st
                    .connected
                    .iter()
                    .filter(|p| st.needs_stream(p))
                    .copied()
                    .collect();
                for peer in orphans {
                    tracing::debug!(%peer, "connection without a link: opening a stream");
                    st.open_stream(peer, &control, &opened_tx);
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    let _ = ev_tx.send(LanEvent::Listening(address)).await;
                }
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                    for (peer, addr) in found {
                        if peer == st.me {
                            continue;
                        }
                        if let Some(mp) = mdns_peers.get_mut(&peer) {
                            if !mp.addrs.contains(&addr) && mp.addrs.len() < MAX_MDNS_ADDRS {
                                mp.addrs.push(addr.clone());
                            }
                        } else if mdns_peers.len() < MAX_MDNS_PEERS {
                            mdns_peers.insert(peer, MdnsPeer {
                                addrs: vec![addr.clone()],
                                redial: Redial::new(tokio::time::Instant::now() + REDIAL_MIN),
                            });
                        }
                        dial_discovered(&mut swarm, peer, vec![addr]);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(gone))) => {
                    for (peer, addr) in gone {
                        if let Some(mp) = mdns_peers.get_mut(&peer) {
                            mp.addrs.retain(|a| *a != addr);
                            if mp.addrs.is_empty() {
                                mdns_peers.remove(&peer);
                            }
                        }
                    }
                }
                SwarmEvent::Behaviour(_) => {}
                SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, num_established, .. } => {
                    let (remote, dialed_by_me) = match &endpoint {
                        ConnectedPoint::Dialer { address, .. } => (address.clone(), true),
                        ConnectedPoint::Listener { send_back_addr, .. } => (send_back_addr.clone(), false),
                    };
                    if let ConnectedPoint::Dialer { address, .. } = &endpoint {
                        for sp in statics.iter_mut().filter(|sp| sp.addr == *address || address.to_string().starts_with(&sp.addr.to_string())) {
                            sp.peer = Some(peer_id);
                            sp.redial.reset();
                        }
                    }
                    if num_established.get() > 1 {
                        // Simultaneous dial: keep the connection dialled by the
                        // smaller PeerId, on both sides.
                        let initiator = if dialed_by_me { st.me } else { peer_id };
                        if initiator != st.me.min(peer_id) {
                            swarm.close_connection(connection_id);
                            continue;
                        }
                    }
                    st.remote_addr.entry(peer_id).or_insert(remote);
                    st.connected.insert(peer_id);
                    if st.needs_stream(&peer_id) {
                        st.open_stream(peer_id, &control, &opened_tx);
                    }
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    st.connected.remove(&peer_id);
                    st.remote_addr.remove(&peer_id);
                    if let Some(link) = st.by_peer.get(&peer_id).copied() {
                        st.drop_link(link).await;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Reads and writes one link's stream until either side fails.
async fn link_io(
    link: LinkId,
    stream: libp2p::Stream,
    mut rx: mpsc::Receiver<Vec<u8>>,
    ev_tx: mpsc::Sender<LanEvent>,
    closed_tx: mpsc::Sender<LinkId>,
    receive_credit: Arc<Semaphore>,
) {
    let (mut reader, mut writer) = stream.split();
    let ev_read = ev_tx.clone();
    let read = async move {
        let mut len = [0u8; 4];
        loop {
            if reader.read_exact(&mut len).await.is_err() {
                return;
            }
            let n = u32::from_be_bytes(len) as usize;
            if n > MAX_DATAGRAM_BYTES {
                tracing::debug!(link = link.0, n, "oversize datagram: closing the link");
                return;
            }
            // Credit for the bytes before they are allocated: a driver
            // that falls behind stops every reader at
            // `RECEIVE_QUEUE_BYTES` (n <= MAX_DATAGRAM_BYTES < it).
            let Ok(permit) = Arc::clone(&receive_credit)
                .acquire_many_owned(n.max(1) as u32)
                .await
            else {
                return;
            };
            let mut buf = vec![0u8; n];
            if reader.read_exact(&mut buf).await.is_err() {
                return;
            }
            if ev_read
                .send(LanEvent::Received {
                    link,
                    bytes: buf,
                    credit: ReceiveCredit(permit),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    };
    let ev_write = ev_tx.clone();
    let write = async move {
        while let Some(bytes) = rx.recv().await {
            let len = (bytes.len() as u32).to_be_bytes();
            if writer.write_all(&len).await.is_err() || writer.write_all(&bytes).await.is_err() {
                return;
            }
            if rx.is_empty() {
                if writer.flush().await.is_err() {
                    return;
                }
                let _ = ev_write.send(LanEvent::Drained(link)).await;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
    let _ = closed_tx.send(link).await;
}
