//! The daemon's run loop: the tokio driver of the sans-IO [`Node`]
//! (`protocol-spec/daemon.md`, "Run loop").
//!
//! One task owns the node, and with it the store. It waits for the next
//! input (a LAN event, a control request, the node's timer, a signal),
//! feeds it, then runs one *cycle*:
//!
//! 1. if the node staged writes, the events it stored are passed through
//!    the application layer ([`Device::absorb`]: key shares, decryption)
//!    and everything is committed in **one** transaction;
//! 2. [`Input::CommitDone`] releases what acknowledges or relays them;
//! 3. the node's outputs go to the LAN adapter; replies to control
//!    requests are sent only now, after the commit.
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
use crate::app::{AppError, Device, ImportSummary, ROOM_KEYS_PREFIX};
use crate::control::exec;
use crate::control::{ApiError, ErrorCode, OkData, Op, Reply, Request};
use crate::event::{EventId, RoomId};
use crate::proto::{Command, Input, LinkKind, Node, Output};
use crate::store::{
    EventStore, MetaStore, RedbStore, SecretStore, Source, StoreConfig, StoreError,
};
use crate::transport::ble::{self, BleEvent, BleHandle};
use crate::transport::lan::{self, LAN_MTU, LanEvent, LanHandle};

/// Most LAN events fed before one commit cycle.
pub const MAX_BATCH_INPUTS: usize = 512;

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
    reply: mpsc::Sender<Reply>,
    shown: BTreeSet<String>,
}

pub(super) struct Driver {
    dir: PathBuf,
    node: Node<RedbStore, StdRng>,
    lan: LanHandle,
    /// The BLE adapter, if it could start (it may still report
    /// "unavailable" in its status).
    ble: Option<BleHandle>,
    /// Remote address of each LAN link, for `peers`.
    addresses: BTreeMap<crate::proto::LinkId, String>,
    listening: Vec<String>,
    started_ms: u64,
    /// Own events published in the current cycle (not passed to absorb:
    /// the application staged their keys and plaintexts already).
    published: BTreeSet<EventId>,
    /// Replies held until the cycle's commit.
    held_replies: Vec<(mpsc::Sender<Reply>, Vec<Reply>)>,
    followers: Vec<Follower>,
    /// A command may have rotated the prekey: re-issue the card after the
    /// commit (never before: the new prekey must be durable first).
    card_check: bool,
    next_maintenance: tokio::time::Instant,
    /// The homeserver sync's state for `status`.
    homeserver: String,
    /// Room sessions kept between batches (cleared by every other kind of
    /// room operation).
    sessions: crate::app::SessionCache,
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
    let (identity, _) = crate::app::load_identity(&dir)?;
    let store_path = dir.join(crate::store::redb_backend::STORE_FILE_NAME);
    let store = open_store(&dir, &store_path).await?;
    let clock = DaemonClock::new(store.get_meta(CLOCK_FLOOR_META_KEY)?.as_deref());
    let mut seed = [0u8; 32];
    rand_core::UnwrapErr(rand::rngs::SysRng).fill_bytes(&mut seed);
    let now = clock.now();
    let mut node = Node::new(
        identity.device_id(),
        store,
        StdRng::from_seed(seed),
        opts.node.clone(),
        now,
    );
    let device = identity.device_id();
    drop(identity);
    // The prekey ring is created on first open; do it before serving.
    {
        let dev = Device::open_with(&dir, node.store_mut(), now)?;
        drop(dev);
        node.store_mut().commit()?;
    }
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
        node,
        lan,
        ble,
        addresses: BTreeMap::new(),
        listening: Vec::new(),
        started_ms: now,
        published: BTreeSet::new(),
        held_replies: Vec::new(),
        followers: Vec::new(),
        card_check: true,
        next_maintenance: tokio::time::Instant::now(),
        follow_dirty: BTreeSet::new(),
        next_follow_refresh: tokio::time::Instant::now(),
        shutting_down: false,
        sessions: crate::app::SessionCache::default(),
        disk: DiskWatch::new(&dir_for_disk),
        clock,
        homeserver: if opts.homeserver_sync {
            "running".to_owned()
        } else {
            "off".to_owned()
        },
    };
    d.join_own_rooms()?;
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
                    let mut batch = vec![ev];
                    while batch.len() < MAX_BATCH_INPUTS {
                        let Ok(ev) = lan_rx.try_recv() else { break };
                        batch.push(ev);
                    }
                    if let Err(e) = batch.into_iter().try_for_each(|ev| d.on_lan(ev)) {
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
                let _ = scrape.send(super::metrics::render(&d.node, &facts, d.clock.now()));
            },
            _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending().await } } => {
                super::notify::notify("WATCHDOG=1");
            },
            _ = tokio::time::sleep_until(deadline) => {
                if let Err(e) = d.node.handle(d.clock.now(), Input::Timeout) { break Err(e.into()); }
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
            .node
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

    /// Tells the node the new members of rooms whose membership changed.
    fn update_standing(
        &mut self,
        members: BTreeMap<RoomId, BTreeSet<crate::crypto::DeviceId>>,
        now: u64,
    ) -> Result<(), DaemonError> {
        for (room, members) in members {
            self.node
                .handle(now, Input::Command(Command::RoomMembers { room, members }))?;
        }
        Ok(())
    }

    /// Starts carrying every room this device holds keys for.
    fn join_own_rooms(&mut self) -> Result<(), DaemonError> {
        let keys = self.node.store().secret_keys(ROOM_KEYS_PREFIX)?;
        let now = self.clock.now();
        for k in keys {
            let Some(b) = k.get(ROOM_KEYS_PREFIX.len()..) else {
                continue;
            };
            let Ok(arr) = <[u8; 16]>::try_from(b) else {
                continue;
            };
            let room = RoomId(arr);
            if !self.node.own_rooms().contains(&room) {
                tracing::debug!(%room, "carrying own room");
                let dir = self.dir.clone();
                let members = match Device::open_with(&dir, self.node.store_mut(), now)
                    .and_then(|dev| dev.room_members(&room))
                {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(%room, error = %e, "room members unknown");
                        Default::default()
                    }
                };
                self.node
                    .handle(now, Input::Command(Command::JoinRoom { room, members }))?;
            }
        }
        Ok(())
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
                self.node.handle(
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
                self.node.handle(now, Input::LinkDown(link))?;
            }
            BleEvent::Received { link, bytes } => {
                self.node.handle(now, Input::Received { link, bytes })?;
            }
            BleEvent::Drained(link) => self.node.handle(now, Input::Drained(link))?,
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
                self.node.handle(
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
                self.node.handle(now, Input::LinkDown(link))?;
            }
            LanEvent::Received { link, bytes } => {
                self.node.handle(now, Input::Received { link, bytes })?;
            }
            LanEvent::Drained(link) => self.node.handle(now, Input::Drained(link))?,
        }
        Ok(())
    }

    /// Passes events the node staged through the rooms layer, with the
    /// session cache (dropped on any error: it may be ahead of the store).
    fn absorb(
        &mut self,
        staged: &[EventId],
        now: u64,
    ) -> Result<crate::app::ImportSummary, crate::app::AppError> {
        let dir = self.dir.clone();
        let cache = std::mem::take(&mut self.sessions);
        let mut dev = Device::open_with(&dir, self.node.store_mut(), now)?;
        dev.set_session_cache(cache);
        let r = dev.absorb(staged, now);
        let mut cache = dev.take_session_cache();
        if r.is_err() {
            cache.clear();
        }
        self.sessions = cache;
        r
    }

    /// One commit cycle (see the module docs).
    pub(super) fn cycle(&mut self) -> Result<(), DaemonError> {
        let now = self.clock.now();
        if self.node.needs_commit() {
            let pending = self.node.uncommitted_events();
            let staged: Vec<EventId> = pending
                .iter()
                .copied()
                .filter(|id| !self.published.contains(id))
                .collect();
            let mut rooms = BTreeSet::new();
            for id in &pending {
                if let Some(info) = self.node.store().event_info(id)? {
                    rooms.insert(info.room);
                }
            }
            if !staged.is_empty() {
                match self.absorb(&staged, now) {
                    Ok(sum) => {
                        for u in &sum.unauthorized {
                            tracing::warn!(event = %u.event_id, reason = %u.reason, "refused by the room's rules");
                        }
                        self.update_standing(sum.members, now)?;
                    }
                    // The node's events are stored regardless (a relay
                    // carries what it cannot read); the application state
                    // of this batch is retried by nobody, so say so.
                    Err(e) => tracing::error!(error = %e, "could not process received events"),
                }
            }
            self.published.clear();
            self.node
                .store_mut()
                .put_meta(CLOCK_FLOOR_META_KEY, &self.clock.persisted())?;
            if self.commit()? {
                self.node.handle(now, Input::CommitDone)?;
                self.follow_dirty.extend(rooms);
                self.join_own_rooms()?;
            }
        }
        if std::mem::take(&mut self.card_check) {
            let dir = self.dir.clone();
            match Device::open_with(&dir, self.node.store_mut(), now)
                .and_then(|mut dev| dev.reissue_card(now))
            {
                Ok(true) => tracing::info!("contact card re-issued with the new prekey"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "could not re-issue the contact card"),
            }
        }
        for (tx, replies) in self.held_replies.drain(..) {
            for r in replies {
                let _ = tx.try_send(r);
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
        self.node.set_admission(level.admission());
    }

    /// Commits the staged writes. A commit that fails for lack of space is
    /// not fatal (`protocol-spec/daemon.md`, "Disk full"): the writes are
    /// dropped (the node forgets what they would have released, so nothing
    /// is acknowledged and peers offer it again), the store is reopened at
    /// its last commit, the disk counts as full, and the replies held for
    /// this cycle become `disk_full` errors. Returns whether it committed.
    fn commit(&mut self) -> Result<bool, DaemonError> {
        let err = match self.node.store_mut().commit() {
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
        self.node.store_mut().reopen()?;
        self.node.handle(self.clock.now(), Input::CommitFailed)?;
        self.sessions.clear();
        self.disk.commit_failed();
        self.node.set_admission(self.disk.level().admission());
        for (_, replies) in &mut self.held_replies {
            *replies = vec![disk_full_reply()];
        }
        Ok(())
    }

    /// Serves one store step of the homeserver sync engine. Downloaded
    /// events enter through the node (verified, stored, relayed to the
    /// mesh) and the rooms layer, committed together with the cursor.
    fn on_host(&mut self, req: crate::sync::channel::HostRequest) -> Result<(), DaemonError> {
        // Nothing of the node may be staged: the steps commit themselves.
        self.cycle()?;
        let now = self.clock.now();
        let Some(mut dl) = req.serve_store(self.node.store_mut(), now) else {
            return Ok(());
        };
        let total = dl.events.len() as u64;
        let new = match dl.known(self.node.store_mut()) {
            Ok(n) => n,
            Err(e) => {
                self.node.store_mut().rollback()?;
                dl.fail(e);
                return Ok(());
            }
        };
        let offered = new.len() as u64;
        let refused_before = self.node.stats().invalid_events + self.node.stats().refused_events;
        for ev in new {
            self.node.handle(
                now,
                Input::Command(Command::Deliver {
                    event: Box::new(ev),
                    source: Source::Homeserver,
                }),
            )?;
        }
        let staged = self.node.uncommitted_events();
        let unauthorized = match self.absorb(&staged, now) {
            Ok(sum) => {
                let n = sum.unauthorized.len() as u64;
                self.update_standing(sum.members, now)?;
                n
            }
            Err(e) => {
                tracing::error!(error = %e, "could not process downloaded events");
                0
            }
        };
        self.published.extend(staged.iter().copied());
        let refused =
            self.node.stats().invalid_events + self.node.stats().refused_events - refused_before;
        let outcome = crate::sync::DownlinkOutcome {
            stored: staged.len() as u64,
            present: total - offered + offered.saturating_sub(staged.len() as u64 + refused),
            rejected: refused,
            unauthorized,
        };
        // Stages the cursor and commits the node's writes with it.
        dl.finish(self.node.store_mut(), outcome);
        // Release what the node held for that commit (relay to the mesh).
        self.cycle()
    }

    /// Hourly upkeep: drop expired events (and their plaintexts), rotate
    /// the prekey when due (publishing the update through the node), and
    /// delete prekeys past their grace period.
    fn maintenance(&mut self) -> Result<(), DaemonError> {
        self.next_maintenance = tokio::time::Instant::now() + MAINTENANCE_INTERVAL;
        let now = self.clock.now();
        self.sessions.clear();
        let expired = self.node.store_mut().expire(now)?;
        if expired > 0 {
            tracing::info!(expired, "expired events dropped");
        }
        let dir = self.dir.clone();
        // Decrypted contents of events no longer held (expired, evicted)
        // go with them, committed with the expiry (the node has nothing
        // staged here: every loop turn ends with a commit cycle).
        match Device::open_with(&dir, self.node.store_mut(), now)
            .and_then(|mut dev| dev.prune_orphaned_plaintexts())
        {
            Ok(n) => {
                self.commit()?;
                if n > 0 {
                    tracing::info!(plaintexts = n, "plaintexts of dropped events deleted");
                }
            }
            Err(e) => {
                self.node.store_mut().rollback()?;
                tracing::error!(error = %e, "pruning plaintexts failed; retrying in an hour");
            }
        }
        let full = self.disk.level() == DiskLevel::Full;
        let rotated = Device::open_with(&dir, self.node.store_mut(), now).and_then(|mut dev| {
            // A rotation publishes an event: not while the disk is full.
            if full || !dev.prekey_due(now) {
                return Ok(None);
            }
            dev.defer();
            let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
            let r = dev.rotate_prekey(now, &mut rng)?;
            Ok(Some((r, dev.take_deferred())))
        });
        match rotated {
            Ok(Some((r, events))) => {
                tracing::info!(prekey_id = r.prekey_id, rooms = r.rooms, "prekey rotated");
                for ev in events {
                    self.published.insert(ev.id());
                    self.node
                        .handle(now, Input::Command(Command::Publish(Box::new(ev))))?;
                }
                self.card_check = true;
            }
            Ok(None) => {}
            Err(e) => {
                self.node.store_mut().rollback()?;
                tracing::error!(error = %e, "prekey rotation failed; retrying in an hour");
            }
        }
        Ok(())
    }

    fn flush_outputs(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Transmit { link, bytes } => match &self.ble {
                    Some(b) if ble::is_ble_link(link) => b.send(link, bytes),
                    _ => self.lan.send(link, bytes),
                },
                Output::Close { link, reason } => {
                    tracing::info!(link = link.0, %reason, "closing link");
                    self.close_link(link);
                }
                Output::App(ev) => report::log_app_event(&ev),
            }
        }
    }

    /// Serves one typed control request (`protocol-spec/daemon.md`,
    /// "Control API"). Replies are held until the cycle's commit.
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
                peers: report::peers(&self.node, &self.addresses),
            })],
            Op::Status => {
                match report::status(
                    &self.node,
                    &self.dir,
                    &self.listening,
                    self.started_ms,
                    &self.homeserver,
                    &self.ble_status(),
                ) {
                    Ok(mut status) => {
                        self.update_disk(true);
                        status["disk"] = self.disk.status();
                        vec![Reply::ok(OkData::Status { status })]
                    }
                    Err(e) => vec![Reply::error(ErrorCode::Runtime, e)],
                }
            }
            Op::Follow { room } => {
                return self.add_follower(&room, reply);
            }
            Op::Import { .. } if self.disk.check(true) == DiskLevel::Full => {
                vec![disk_full_reply()]
            }
            Op::Import { bundle } => match exec::decode_bundle(&bundle) {
                Ok(bytes) => {
                    drop(bundle);
                    self.import(&bytes, now)?
                }
                Err(e) => vec![Reply::from(ApiError::from(&e))],
            },
            op => self.run_op(&op, now)?,
        };
        self.held_replies.push((reply, replies));
        Ok(())
    }

    fn add_follower(&mut self, room: &str, reply: mpsc::Sender<Reply>) -> Result<(), DaemonError> {
        let room = match exec::parse_room(room) {
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
            reply,
            shown: BTreeSet::new(),
        };
        if let Err(e) = self.refresh_follower(&mut f) {
            let _ = f.reply.try_send(e);
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
                    let _ = f.reply.try_send(e);
                    false
                }
            }
        });
        self.followers = followers;
    }

    fn refresh_follower(&mut self, f: &mut Follower) -> Result<(), Reply> {
        let dir = self.dir.clone();
        let lines = Device::open_with(&dir, self.node.store_mut(), self.clock.now())
            .and_then(|dev| dev.messages(&f.room))
            .map_err(|e| Reply::from(ApiError::from(&e)))?;
        for line in lines {
            let key = serde_json::to_string(&line).unwrap_or_default();
            if !f.shown.insert(key) {
                continue;
            }
            if f.reply.try_send(Reply::line(line)).is_err() {
                return Err(Reply::error(ErrorCode::Busy, "follower too slow"));
            }
        }
        Ok(())
    }

    /// Runs one typed operation on the node's store ([`exec::execute`]):
    /// in deferred mode, so the node stores and relays the new events, and
    /// the reply waits for the cycle's commit.
    fn run_op(&mut self, op: &Op, now: u64) -> Result<Vec<Reply>, DaemonError> {
        if self.disk.check(true) == DiskLevel::Full && writes(op) {
            self.node.set_admission(self.disk.level().admission());
            return Ok(vec![disk_full_reply()]);
        }
        let dir = self.dir.clone();
        let result = match Device::open_with(&dir, self.node.store_mut(), now) {
            Ok(mut dev) => {
                dev.defer();
                let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
                exec::execute(op, &mut dev, now, &mut rng).map(|a| (a, dev.take_deferred()))
            }
            Err(e) => Err(e),
        };
        self.card_check = true;
        // The operation changed rooms without the cache: drop it.
        self.sessions.clear();
        let (answer, events) = match result {
            Ok(r) => r,
            Err(e) => {
                self.node.store_mut().rollback()?;
                return Ok(vec![Reply::from(ApiError::from(&e))]);
            }
        };
        for ev in events {
            let id = ev.id();
            self.node
                .handle(now, Input::Command(Command::Publish(Box::new(ev))))?;
            if !self.node.store().has_event(&id)? {
                self.node.store_mut().rollback()?;
                return Ok(vec![Reply::error(
                    ErrorCode::Runtime,
                    format!("the store refused this device's own event {id}"),
                )]);
            }
            self.published.insert(id);
        }
        Ok(answer.into_replies())
    }

    /// `import` through the daemon: every event goes through the node (so
    /// it is relayed), then through the rooms' sessions, in one commit.
    fn import(&mut self, bytes: &[u8], now: u64) -> Result<Vec<Reply>, DaemonError> {
        let store = self.node.store();
        let report = match crate::bundle::import(bytes, now, None, |id| {
            store.has_event(id).unwrap_or(false)
        }) {
            Ok(r) => r,
            Err(e) => return Ok(vec![Reply::from(ApiError::from(&AppError::from(e)))]),
        };
        let mut sum = ImportSummary::from_report(&report);
        let before: BTreeSet<EventId> = self.node.uncommitted_events().into_iter().collect();
        for ev in report.imported {
            let staged = self.node.handle(
                now,
                Input::Command(Command::Deliver {
                    event: Box::new(ev),
                    source: Source::Import,
                }),
            );
            match staged {
                Ok(()) => {}
                // A large import fills the disk before its commit.
                Err(e) if e.is_storage_full() => {
                    tracing::error!(error = %e, "import failed for lack of space; nothing of it was stored");
                    self.space_ran_out()?;
                    return Ok(vec![disk_full_reply()]);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let staged: Vec<EventId> = self
            .node
            .uncommitted_events()
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        match self.absorb(&staged, now) {
            Ok(a) => {
                sum.imported = staged.len();
                sum.unauthorized = a.unauthorized;
                sum.rejections.extend(a.rejections);
                self.update_standing(a.members, now)?;
            }
            Err(e) => {
                self.node.store_mut().rollback()?;
                return Ok(vec![Reply::from(ApiError::from(&e))]);
            }
        }
        // Absorbed here: the cycle must not pass them through again.
        self.published.extend(staged);
        sum.rejected = sum.rejections.len();
        Ok(vec![Reply::ok(OkData::Import {
            import: Box::new(sum),
        })])
    }
}
