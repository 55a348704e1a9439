//! The daemon's run loop: the tokio driver of the sans-IO [`DeviceCore`]
//! (`protocol-spec/daemon.md`, "Run loop").
//!
//! One task owns the core, and with it the store. It only pumps: it waits
//! for the next input (a LAN or BLE event, a control request, a homeserver
//! step, the core's timer, a signal), feeds it, then runs one *cycle*:
//!
//! 1. if the core staged writes, [`DeviceCore::prepare_commit`] lets the
//!    rooms layer judge and process what the node stored, and everything is
//!    committed in **one** transaction;
//! 2. [`Input::CommitDone`] releases what acknowledges or relays them;
//! 3. the core's outputs go to the adapters; replies to control requests
//!    come out only now, after the commit.
//!
//! LAN events that queue up meanwhile are fed as one batch before the
//! cycle, so a burst of received events costs one commit (group commit).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_core::Rng;
use tokio::sync::mpsc;

use super::clock::{CLOCK_FLOOR_META_KEY, DaemonClock};
use super::disk::{DiskLevel, DiskWatch, disk_full_reply, writes};
use super::report;
use super::{DaemonError, DaemonOptions, server};
use crate::app::DeviceKeys;
use crate::control::{ApiError, ErrorCode, OkData, Op, Reply, Request};
use crate::datadir::{CARD_FILE, DataDir};
use crate::device::{CoreError, CoreOutput, DeviceCore, OpId};
use crate::event::RoomId;
use crate::proto::{Input, LinkKind, Output};
use crate::store::{EventStore, MetaStore, RedbStore, Source, StoreConfig, StoreError};
use crate::transport::ble::{self, BleEvent, BleHandle};
use crate::transport::lan::{self, LAN_MTU, LanEvent, LanHandle};

/// Most LAN events fed before one commit cycle.
pub const MAX_BATCH_INPUTS: usize = 512;

/// Events stored after which a cycle's batch ends early: a long catch-up
/// is committed, acknowledged and read by the rooms layer in steps of
/// this size, not in one cycle (a new member's invite, the first event a
/// holder sends, makes it a member after the first step; the write
/// transaction's pages stay small).
pub const MAX_EVENTS_PER_CYCLE: usize = 256;

/// Most `messages --follow` clients at once.
pub const MAX_FOLLOWERS: usize = 32;

/// Replies queued per control client before a slow follower is dropped.
pub const REPLY_QUEUE: usize = 1024;

/// How often the daemon expires events and checks its prekey.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// How often a follower's room is re-read at most.
pub const FOLLOW_REFRESH: Duration = Duration::from_millis(200);

/// A control request with the channel its replies go to.
pub(super) struct ControlMsg {
    pub req: Request,
    pub reply: mpsc::Sender<Reply>,
}

struct Follower {
    room: RoomId,
    /// Lines of the last this many messages only (the follow's `last`).
    last: Option<usize>,
    reply: mpsc::Sender<Reply>,
    /// The lines sent, by digest of their JSON (16 bytes a line, not the
    /// line: a follower of a large room holds no copy of its texts).
    shown: BTreeSet<[u8; 16]>,
}

/// A line's identity for a follower: the first 16 bytes of the SHA-256 of
/// its JSON.
fn line_digest(json: &[u8]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(json);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

pub(super) struct Driver {
    dir: PathBuf,
    core: DeviceCore<RedbStore, StdRng>,
    lan: LanHandle,
    /// The BLE adapter, if it could start (it may still report
    /// "unavailable" in its status).
    ble: Option<BleHandle>,
    /// Remote address of each LAN link, for `peers`.
    addresses: BTreeMap<crate::proto::LinkId, String>,
    listening: Vec<String>,
    started_ms: u64,
    /// Where the replies of each operation in the core go.
    waiting: BTreeMap<OpId, mpsc::Sender<Reply>>,
    next_op: OpId,
    followers: Vec<Follower>,
    next_maintenance: tokio::time::Instant,
    /// The homeserver sync's state for `status`.
    homeserver: String,
    /// Rooms with new events since the followers were last refreshed.
    follow_dirty: BTreeSet<RoomId>,
    next_follow_refresh: tokio::time::Instant,
    shutting_down: bool,
    /// Free space of the data directory, and the admission it allows.
    disk: DiskWatch,
    /// The daemon's time: wall clock, never turned back by a backward jump
    /// (`super::clock`).
    clock: DaemonClock,
}

/// Opens the store. A command run without a daemon holds it for a moment:
/// unless a daemon's control socket answers (then one really runs), wait up
/// to `STORE_LOCK_WAIT` for it to be released.
async fn open_store(dir: &Path, path: &Path) -> Result<RedbStore, DaemonError> {
    let deadline = tokio::time::Instant::now() + crate::control::STORE_LOCK_WAIT;
    loop {
        match RedbStore::open(path, StoreConfig::default()) {
            Ok(s) => return Ok(s),
            Err(StoreError::Locked { .. })
                if crate::control::connect(dir).is_none()
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(crate::control::LOCK_POLL).await;
            }
            Err(StoreError::Locked { .. }) => return Err(DaemonError::AlreadyRunning(dir.into())),
            Err(e) => return Err(DaemonError::Store(e)),
        }
    }
}

/// Runs the daemon until `shutdown` completes or a fatal error.
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let dir = opts.dir.clone();
    let (identity, card) = crate::app::load_identity(&dir)?;
    let store_path = dir.join(crate::store::redb_backend::STORE_FILE_NAME);
    let mut store = open_store(&dir, &store_path).await?;
    let clock = DaemonClock::new(store.get_meta(CLOCK_FLOOR_META_KEY)?.as_deref());
    let mut seed = [0u8; 32];
    rand_core::UnwrapErr(rand::rngs::SysRng).fill_bytes(&mut seed);
    let now = clock.now();
    // The keys are read once; the prekey ring is created on first open,
    // committed before serving.
    let keys = DeviceKeys::load(identity, card, &mut store, now)?;
    store.commit()?;
    let device = keys.device_id();
    let core = DeviceCore::new(keys, store, StdRng::from_seed(seed), opts.node.clone(), now)?;
    // Homeserver sync: the engine runs in its own task; its store steps
    // come to this loop as requests (`sync::channel`).
    let (hs_stop_tx, hs_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (mut host_rx, mut sync_task) = if opts.homeserver_sync {
        let (client, sync_opts) =
            crate::sync::daemon_setup(&dir).map_err(|e| DaemonError::Homeserver(e.to_string()))?;
        let (mut host, rx) = crate::sync::channel::channel_host();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = hs_stop_rx.await;
            };
            crate::sync::run_continuous(
                &mut host,
                &client,
                &sync_opts,
                &mut crate::sync::LogProgress,
                stop,
            )
            .await
        });
        tracing::info!("homeserver sync running");
        (Some(rx), Some(task))
    } else {
        (None, None)
    };
    let (lan, mut lan_rx, peer_id) = lan::spawn(opts.lan.clone())?;
    // BLE: reports "unavailable" (not an error) without an adapter or bus.
    let (ble, mut ble_rx) = match ble::spawn(opts.ble.clone()) {
        Ok((h, rx)) => (Some(h), Some(rx)),
        Err(e) => {
            tracing::warn!(error = %e, "BLE unavailable");
            (None, None)
        }
    };
    if let Some(h) = &ble {
        tracing::info!(ble = %h.status().summary(), "BLE");
    }
    tracing::info!(%peer_id, "LAN adapter started (ephemeral peer key)");
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlMsg>(crate::control::MAX_CONTROL_CONNECTIONS);
    let listener = server::bind(&dir)?;
    let server_task = tokio::spawn(server::serve(listener, ctl_tx));
    let (metrics_task, mut metrics_rx) = match opts.metrics {
        Some(addr) => {
            let (task, rx, local) = super::metrics::spawn(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?;
            tracing::info!(%local, "metrics on http://{local}/metrics");
            (Some(task), Some(rx))
        }
        None => (None, None),
    };
    let mut watchdog = super::notify::watchdog_interval().map(tokio::time::interval);
    let dir_for_disk = dir.clone();
    let mut d = Driver {
        dir,
        core,
        lan,
        ble,
        addresses: BTreeMap::new(),
        listening: Vec::new(),
        started_ms: now,
        waiting: BTreeMap::new(),
        next_op: 0,
        followers: Vec::new(),
        next_maintenance: tokio::time::Instant::now(),
        follow_dirty: BTreeSet::new(),
        next_follow_refresh: tokio::time::Instant::now(),
        shutting_down: false,
        disk: DiskWatch::new(&dir_for_disk),
        clock,
        homeserver: if opts.homeserver_sync {
            "running".to_owned()
        } else {
            "off".to_owned()
        },
    };
    d.update_disk(true);
    tracing::info!(%device, dir = %d.dir.display(), "daemon running");
    super::notify::notify("READY=1");
    tokio::pin!(shutdown);
    let result = loop {
        let deadline = d.timer_deadline();
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            ev = lan_rx.recv() => match ev {
                Some(ev) => {
                    // Group commit: feed what else is queued, up to a batch.
                    let mut fed = Ok(());
                    let mut next = Some(ev);
                    let mut n = 0;
                    while let Some(ev) = next.take() {
                        fed = d.on_lan(ev);
                        n += 1;
                        if fed.is_err()
                            || n >= MAX_BATCH_INPUTS
                            || d.core.uncommitted_len() >= MAX_EVENTS_PER_CYCLE
                        {
                            break;
                        }
                        next = lan_rx.try_recv().ok();
                    }
                    if let Err(e) = fed {
                        break Err(e);
                    }
                }
                None => break Err(DaemonError::Lan(lan::LanError::Build("the LAN adapter stopped".into()))),
            },
            Some(ev) = async { match ble_rx.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                if let Err(e) = d.on_ble(ev) { break Err(e); }
            },
            Some(msg) = ctl_rx.recv() => {
                if let Err(e) = d.on_control(msg) { break Err(e); }
            },
            // While the disk is full the sync engine waits (its cursor must
            // not pass events that could not be stored).
            Some(req) = async { match host_rx.as_mut() { Some(rx) => rx.recv().await, None => None } }, if d.disk.level() != DiskLevel::Full => {
                if let Err(e) = d.on_host(req) { break Err(e); }
            },
            r = async { match sync_task.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                sync_task = None;
                host_rx = None;
                d.homeserver = match r {
                    Ok(Ok(())) => "stopped".to_owned(),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "homeserver sync stopped; the mesh keeps running");
                        format!("stopped: {e}")
                    }
                    Err(e) => format!("stopped: {e}"),
                };
            },
            Some(scrape) = async { match metrics_rx.as_mut() { Some(rx) => rx.recv().await, None => None } } => {
                let facts = super::metrics::DaemonFacts { dir: &d.dir, started_ms: d.started_ms, homeserver: &d.homeserver, disk: &d.disk };
                let _ = scrape.send(super::metrics::render(d.core.node(), &facts, d.clock.now()));
            },
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                super::notify::notify("WATCHDOG=1");
            },
            _ = tokio::time::sleep_until(deadline) => {
                if let Err(e) = d.core.handle(d.clock.now(), Input::Timeout) { break Err(e.into()); }
                if tokio::time::Instant::now() >= d.next_maintenance
                    && let Err(e) = d.maintenance()
                {
                    break Err(e);
                }
                d.refresh_followers();
            }
        }
        d.update_disk(false);
        if let Err(e) = d.cycle() {
            break Err(e);
        }
        if d.shutting_down {
            break Ok(());
        }
    };
    // Graceful shutdown: stop accepting, flush what is staged, close links.
    server_task.abort();
    super::notify::notify("STOPPING=1");
    if let Some(t) = metrics_task {
        t.abort();
    }
    let _ = hs_stop_tx.send(());
    drop(host_rx);
    if let Some(t) = sync_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = std::fs::remove_file(crate::control::socket_path(&d.dir));
    let flushed = d.cycle();
    for link in d.addresses.keys().copied().collect::<Vec<_>>() {
        d.close_link(link);
    }
    for f in d.followers.drain(..) {
        let _ = f.reply.try_send(Reply::ok(OkData::Done {}));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    tracing::info!("daemon stopped");
    result.and(flushed)
}

impl Driver {
    /// The next wake-up: the node's timer or the followers' refresh.
    fn timer_deadline(&self) -> tokio::time::Instant {
        let now_wall = self.clock.now();
        let now = tokio::time::Instant::now();
        let node = self
            .core
            .poll_timeout()
            .map_or(now + Duration::from_secs(3600), |t| {
                now + Duration::from_millis(t.saturating_sub(now_wall))
            });
        let mut node = node.min(self.next_maintenance);
        if self.disk.level() != DiskLevel::Ok {
            // Notice freed space without waiting for traffic.
            node = node.min(now + super::disk::DISK_CHECK_INTERVAL);
        }
        if self.follow_dirty.is_empty() {
            node
        } else {
            node.min(self.next_follow_refresh.max(now))
        }
    }

    fn ble_status(&self) -> serde_json::Value {
        match &self.ble {
            Some(b) => match b.status() {
                ble::BleStatus::Off => serde_json::json!("off"),
                other => other.to_json(),
            },
            None => {
                serde_json::json!({"state": "unavailable", "reason": "the adapter did not start"})
            }
        }
    }

    fn close_link(&self, link: crate::proto::LinkId) {
        match &self.ble {
            Some(b) if ble::is_ble_link(link) => b.close(link),
            _ => self.lan.close(link),
        }
    }

    /// BLE links enter the node exactly like LAN links (`LinkKind::Ble`).
    fn on_ble(&mut self, ev: BleEvent) -> Result<(), DaemonError> {
        let now = self.clock.now();
        match ev {
            BleEvent::Up {
                link,
                mtu,
                source,
                address,
            } => {
                tracing::info!(link = link.0, %address, mtu, "BLE link up");
                self.addresses.insert(link, address);
                self.core.handle(
                    now,
                    Input::LinkUp {
                        link,
                        kind: LinkKind::Ble,
                        mtu,
                        source,
                    },
                )?;
            }
            BleEvent::Down(link) => {
                if self.addresses.remove(&link).is_some() {
                    tracing::info!(link = link.0, "BLE link down");
                }
                self.core.handle(now, Input::LinkDown(link))?;
            }
            BleEvent::Received { link, bytes } => {
                self.core.handle(now, Input::Received { link, bytes })?;
            }
            BleEvent::Drained(link) => self.core.handle(now, Input::Drained(link))?,
        }
        Ok(())
    }

    fn on_lan(&mut self, ev: LanEvent) -> Result<(), DaemonError> {
        let now = self.clock.now();
        match ev {
            LanEvent::Listening(addr) => {
                tracing::info!(%addr, "listening");
                self.listening.push(addr.to_string());
            }
            LanEvent::Up {
                link,
                address,
                source,
            } => {
                tracing::info!(link = link.0, %address, "LAN link up");
                self.addresses.insert(link, address);
                self.core.handle(
                    now,
                    Input::LinkUp {
                        link,
                        kind: LinkKind::Lan,
                        mtu: LAN_MTU,
                        source,
                    },
                )?;
            }
            LanEvent::Down(link) => {
                if self.addresses.remove(&link).is_some() {
                    tracing::info!(link = link.0, "LAN link down");
                }
                self.core.handle(now, Input::LinkDown(link))?;
            }
            // The credit returns to the readers once the core has the bytes.
            LanEvent::Received {
                link,
                bytes,
                credit,
            } => {
                self.core.handle(now, Input::Received { link, bytes })?;
                drop(credit);
            }
            LanEvent::Drained(link) => self.core.handle(now, Input::Drained(link))?,
        }
        Ok(())
    }

    /// One commit cycle (see the module docs).
    pub(super) fn cycle(&mut self) -> Result<(), DaemonError> {
        let now = self.clock.now();
        if self.core.needs_commit() {
            self.core.prepare_commit(now)?;
            self.core
                .store_mut()
                .put_meta(CLOCK_FLOOR_META_KEY, &self.clock.persisted())?;
            if self.commit()? {
                self.core.handle(now, Input::CommitDone)?;
            }
        }
        self.flush_outputs();
        if tokio::time::Instant::now() >= self.next_follow_refresh {
            self.refresh_followers();
        }
        Ok(())
    }

    /// Reads the free space (forced, or when due) and tells the node what
    /// it may store.
    fn update_disk(&mut self, force: bool) {
        let level = self.disk.check(force);
        self.core.node_mut().set_admission(level.admission());
    }

    /// Commits the staged writes. A commit that fails for lack of space is
    /// not fatal (`protocol-spec/daemon.md`, "Disk full"): the writes are
    /// dropped (the node forgets what they would have released, so nothing
    /// is acknowledged and peers offer it again), the store is reopened at
    /// its last commit, the disk counts as full, and the replies held for
    /// this cycle become `disk_full` errors. Returns whether it committed.
    fn commit(&mut self) -> Result<bool, DaemonError> {
        let err = match self.core.store_mut().commit() {
            Ok(()) => return Ok(true),
            Err(e) if e.is_storage_full() => e,
            Err(e) => return Err(e.into()),
        };
        tracing::error!(error = %err, "commit failed for lack of space; nothing of it was acknowledged");
        self.space_ran_out()?;
        Ok(false)
    }

    /// A write failed for lack of space, at commit or while staging (redb
    /// writes pages of a large transaction before its commit): the staged
    /// writes are dropped as for a failed commit (see [`Self::commit`]).
    fn space_ran_out(&mut self) -> Result<(), DaemonError> {
        self.core.store_mut().reopen()?;
        self.core
            .commit_failed(self.clock.now(), disk_full_reply())?;
        self.disk.commit_failed();
        self.core
            .node_mut()
            .set_admission(self.disk.level().admission());
        Ok(())
    }

    /// Serves one store step of the homeserver sync engine. Downloaded
    /// events enter through the node (verified, stored, relayed to the
    /// mesh) and the rooms layer, committed together with the cursor.
    fn on_host(&mut self, req: crate::sync::channel::HostRequest) -> Result<(), DaemonError> {
        // Nothing of the node may be staged: the steps commit themselves.
        self.cycle()?;
        let now = self.clock.now();
        let Some(mut dl) = req.serve_store(self.core.store_mut(), now) else {
            return Ok(());
        };
        let total = dl.events.len() as u64;
        let new = match dl.known(self.core.store_mut()) {
            Ok(n) => n,
            Err(e) => {
                self.core.store_mut().rollback()?;
                dl.fail(e);
                return Ok(());
            }
        };
        let offered = new.len() as u64;
        let o = self.core.deliver(now, new, Source::Homeserver)?;
        let outcome = crate::sync::DownlinkOutcome {
            stored: o.stored,
            present: total - offered + offered.saturating_sub(o.stored + o.refused),
            rejected: o.refused,
            unauthorized: o.unauthorized,
        };
        // Stages the cursor and commits the core's writes with it.
        dl.finish(self.core.store_mut(), outcome);
        // Release what the core held for that commit (relay to the mesh).
        self.cycle()
    }

    /// Hourly upkeep: drop expired events (and their plaintexts), rotate
    /// the prekey when due (publishing the update through the node), and
    /// delete prekeys past their grace period.
    fn maintenance(&mut self) -> Result<(), DaemonError> {
        self.next_maintenance = tokio::time::Instant::now() + MAINTENANCE_INTERVAL;
        let now = self.clock.now();
        // A rotation publishes an event: not while the disk is full.
        let may_publish = self.disk.level() != DiskLevel::Full;
        let up = self.core.maintain(now, may_publish)?;
        if up.expired > 0 {
            tracing::info!(expired = up.expired, "expired events dropped");
        }
        if up.plaintexts > 0 {
            tracing::info!(
                plaintexts = up.plaintexts,
                "plaintexts of dropped events deleted"
            );
        }
        if let Some(r) = &up.rotated {
            tracing::info!(prekey_id = r.prekey_id, rooms = r.rooms, "prekey rotated");
        }
        for e in &up.errors {
            tracing::error!(error = %e, "upkeep failed; retrying in an hour");
        }
        Ok(())
    }

    fn flush_outputs(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                CoreOutput::Node(Output::Transmit { link, bytes }) => match &self.ble {
                    Some(b) if ble::is_ble_link(link) => b.send(link, bytes),
                    _ => self.lan.send(link, bytes),
                },
                CoreOutput::Node(Output::Close { link, reason }) => {
                    tracing::info!(link = link.0, %reason, "closing link");
                    self.close_link(link);
                }
                CoreOutput::Node(Output::App(ev)) => report::log_app_event(&ev),
                CoreOutput::Replies { op, replies } => {
                    if let Some(tx) = self.waiting.remove(&op) {
                        send_replies(tx, replies);
                    }
                }
                CoreOutput::RoomsChanged(rooms) => self.follow_dirty.extend(rooms),
                CoreOutput::CardIssued(card) => {
                    match DataDir::new(&self.dir).write_atomic(CARD_FILE, card.to_text().as_bytes())
                    {
                        Ok(()) => tracing::info!("contact card re-issued with the new prekey"),
                        Err(e) => {
                            tracing::error!(error = %e, "could not write the re-issued contact card")
                        }
                    }
                }
                CoreOutput::Refused { event_id, reason } => {
                    tracing::warn!(event = %event_id, reason = %reason, "refused by the room's rules");
                }
                CoreOutput::ProcessingFailed(e) => {
                    tracing::error!(error = %e, "could not process received events");
                }
            }
        }
    }

    /// Serves one typed control request (`protocol-spec/daemon.md`,
    /// "Control API"). Room operations and imports run in the core, whose
    /// replies come out after the cycle's commit; the rest concern the
    /// daemon and are answered at once.
    fn on_control(&mut self, msg: ControlMsg) -> Result<(), DaemonError> {
        let ControlMsg { req, reply } = msg;
        let now = self.clock.now();
        let replies = match req.op {
            Op::Shutdown => {
                tracing::info!("shutdown requested over the control socket");
                self.shutting_down = true;
                vec![Reply::ok(OkData::Done {})]
            }
            Op::Peers => vec![Reply::ok(OkData::Peers {
                peers: report::peers(self.core.node(), &self.addresses),
            })],
            Op::Status => {
                match report::status(
                    self.core.node(),
                    &self.dir,
                    &self.listening,
                    self.started_ms,
                    &self.homeserver,
                    &self.ble_status(),
                ) {
                    Ok(mut status) => {
                        self.update_disk(true);
                        status["disk"] = self.disk.status();
                        status["syncing"] = match self.core.node_mut().syncing() {
                            Ok(s) => report::syncing_json(&s),
                            Err(e) => return Err(e.into()),
                        };
                        vec![Reply::ok(OkData::Status { status })]
                    }
                    Err(e) => vec![Reply::error(ErrorCode::Runtime, e)],
                }
            }
            Op::Follow { room, last } => {
                return self.add_follower(&room, last, reply);
            }
            op => return self.run_op(&op, now, reply),
        };
        send_replies(reply, replies);
        Ok(())
    }

    fn add_follower(
        &mut self,
        room: &str,
        last: Option<usize>,
        reply: mpsc::Sender<Reply>,
    ) -> Result<(), DaemonError> {
        let room = match self.core.resolve_room(room) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.try_send(Reply::from(ApiError::from(&e)));
                return Ok(());
            }
        };
        self.followers.retain(|f| !f.reply.is_closed());
        if self.followers.len() >= MAX_FOLLOWERS {
            let _ = reply.try_send(Reply::error(
                ErrorCode::Busy,
                format!("more than {MAX_FOLLOWERS} followers"),
            ));
            return Ok(());
        }
        let mut f = Follower {
            room,
            last,
            reply,
            shown: BTreeSet::new(),
        };
        if let Err(e) = self.refresh_follower(&mut f) {
            let _ = f.reply.try_send(*e);
            return Ok(());
        }
        self.followers.push(f);
        Ok(())
    }

    /// Sends each follower the lines of its room it has not seen.
    fn refresh_followers(&mut self) {
        if self.follow_dirty.is_empty() {
            return;
        }
        self.next_follow_refresh = tokio::time::Instant::now() + FOLLOW_REFRESH;
        let dirty = std::mem::take(&mut self.follow_dirty);
        let mut followers = std::mem::take(&mut self.followers);
        followers.retain_mut(|f| {
            if f.reply.is_closed() {
                return false;
            }
            if !dirty.contains(&f.room) {
                return true;
            }
            match self.refresh_follower(f) {
                Ok(()) => true,
                Err(e) => {
                    let _ = f.reply.try_send(*e);
                    false
                }
            }
        });
        self.followers = followers;
    }

    /// Sends a follower the lines it was not sent yet, and again those
    /// whose receipts changed (same `event_id`: an update).
    fn refresh_follower(&mut self, f: &mut Follower) -> Result<(), Box<Reply>> {
        let lines = self
            .core
            .show_messages(&f.room, f.last, self.clock.now())
            .map_err(|e| Box::new(Reply::from(ApiError::from(&e))))?;
        for line in lines {
            let key = line_digest(&serde_json::to_vec(&line).unwrap_or_default());
            if !f.shown.insert(key) {
                continue;
            }
            if f.reply.try_send(Reply::line(line)).is_err() {
                return Err(Box::new(Reply::error(ErrorCode::Busy, "follower too slow")));
            }
        }
        Ok(())
    }

    /// Runs one typed operation in the core; its replies go to `reply`
    /// after the cycle's commit. While the disk is full, writing operations
    /// are refused here.
    fn run_op(&mut self, op: &Op, now: u64, reply: mpsc::Sender<Reply>) -> Result<(), DaemonError> {
        if writes(op) {
            // The level just read decides what the node stores, also when
            // space came back since a failed write left it at `full`.
            let level = self.disk.check(true);
            self.core.node_mut().set_admission(level.admission());
            if level == DiskLevel::Full {
                let _ = reply.try_send(disk_full_reply());
                return Ok(());
            }
        }
        let id = self.next_op;
        self.next_op = self.next_op.wrapping_add(1);
        self.waiting.insert(id, reply);
        match self.core.handle_op(now, id, op) {
            Ok(()) => Ok(()),
            // A large import fills the disk before its commit (redb writes
            // the pages of a large transaction early): not fatal, handled
            // as a failed commit, and this operation is refused.
            Err(CoreError::Store(e) | CoreError::App(crate::app::AppError::Store(e)))
                if e.is_storage_full() =>
            {
                tracing::error!(error = %e, "an operation failed for lack of space; nothing of it was stored");
                self.space_ran_out()?;
                if let Some(tx) = self.waiting.remove(&id) {
                    let _ = tx.try_send(disk_full_reply());
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Hands an operation's replies to its connection. What fits the
/// connection's queue goes at once; a longer answer (`messages` of a room
/// with more than [`REPLY_QUEUE`] lines) is fed by a task at the client's
/// pace, so no line and never the final reply is dropped, and the driver
/// never waits for a client.
fn send_replies(tx: mpsc::Sender<Reply>, replies: Vec<Reply>) {
    if replies.len() <= tx.capacity() {
        for r in replies {
            let _ = tx.try_send(r);
        }
        return;
    }
    tokio::spawn(async move {
        for r in replies {
            if tx.send(r).await.is_err() {
                return;
            }
        }
    });
}
