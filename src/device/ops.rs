//! Typed operations, imported bundles, homeserver envelopes and upkeep
//! entering the device core (`protocol-spec/daemon.md`, "Control API" and
//! "Device core").
//!
//! Each runs with nothing staged (the driver runs a commit cycle between
//! inputs). An operation's new events are published through the node, so
//! they are stored and relayed like any other; its reply is held until the
//! commit that makes it durable.

use rand_core::{CryptoRng, Rng};

use super::{CoreError, CoreOutput, DeviceCore};
use crate::app::{AppError, ImportSummary, PrekeyRotation};
use crate::control::exec::{self, Answer};
use crate::control::{ApiError, ErrorCode, OkData, Op, Reply};
use crate::event::Event;
use crate::store::{Source, Store};

/// The driver's number for an operation; its replies carry it back.
pub type OpId = u64;

/// What a delivery of events from outside the mesh did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliverOutcome {
    /// New events stored.
    pub stored: u64,
    /// Events the node refused (invalid, expired, over a budget).
    pub refused: u64,
    /// Stored events the rooms layer found unauthorized.
    pub unauthorized: u64,
}

/// What an upkeep pass did.
#[derive(Debug, Default)]
pub struct Upkeep {
    /// Expired events dropped.
    pub expired: u64,
    /// Plaintexts of dropped events deleted.
    pub plaintexts: usize,
    /// The prekey rotation, if one was due.
    pub rotated: Option<PrekeyRotation>,
    /// What failed (retried at the next pass).
    pub errors: Vec<String>,
}

impl<S: Store, R: Rng + CryptoRng> DeviceCore<S, R> {
    /// Runs one typed operation. `status`, `peers`, `follow` and
    /// `shutdown` concern the driver and are refused here. The replies come
    /// out of [`DeviceCore::poll_output`] as [`CoreOutput::Replies`] once
    /// what the operation changed is committed.
    pub fn handle_op(&mut self, now_ms: u64, op: OpId, request: &Op) -> Result<(), CoreError> {
        if self.needs_commit() {
            self.reply(
                op,
                vec![Reply::error(
                    ErrorCode::Busy,
                    "the device core has uncommitted writes; try again",
                )],
            );
            return Ok(());
        }
        let replies = match request {
            Op::Import { bundle } => match exec::decode_bundle(bundle) {
                Ok(bytes) => self.import(now_ms, &bytes)?,
                Err(e) => vec![Reply::from(ApiError::from(&e))],
            },
            _ => self.run(now_ms, request)?,
        };
        self.reply(op, replies);
        Ok(())
    }

    /// Holds `replies` for the commit, or releases them at once when
    /// nothing waits for one.
    fn reply(&mut self, op: OpId, replies: Vec<Reply>) {
        if self.needs_commit() {
            self.held.push((op, replies));
        } else {
            self.out.push_back(CoreOutput::Replies { op, replies });
        }
    }

    /// A room operation on a lent [`crate::app::Device`] in deferred mode.
    fn run(&mut self, now_ms: u64, request: &Op) -> Result<Vec<Reply>, CoreError> {
        // The operation works with the session cache, so a member acting
        // in a flooded room does not pay a full rebuild per operation or
        // per received batch.
        let result = self.on_device(|dev, rng| exec::execute(request, dev, now_ms, rng));
        if !matches!(request, Op::Rooms | Op::Messages { .. } | Op::Export { .. }) {
            self.card_check = true;
        }
        let (mut answer, events): (Answer, Vec<Event>) = match result {
            Ok(r) => r,
            Err(e) => {
                self.node.store_mut().rollback()?;
                return Ok(vec![Reply::from(ApiError::from(&e))]);
            }
        };
        if let Some((room, marks)) = answer.read.take() {
            self.receipt_due(room, Some(marks), now_ms);
        }
        self.dirty = true;
        if let Some(id) = self.publish(now_ms, events)? {
            self.abandon(now_ms)?;
            return Ok(vec![Reply::error(
                ErrorCode::Runtime,
                format!("the store refused this device's own event {id}"),
            )]);
        }
        Ok(answer.into_replies())
    }

    /// An imported bundle: every event goes through the node (so it is
    /// relayed), then through the rooms' sessions, in one commit.
    fn import(&mut self, now_ms: u64, bytes: &[u8]) -> Result<Vec<Reply>, CoreError> {
        let store = self.node.store();
        let report = match crate::bundle::import(bytes, now_ms, None, |id| {
            store.has_event(id).unwrap_or(false)
        }) {
            Ok(r) => r,
            Err(e) => return Ok(vec![Reply::from(ApiError::from(&AppError::from(e)))]),
        };
        let mut sum = ImportSummary::from_report(&report);
        let (staged, absorbed) = self.deliver_events(now_ms, report.imported, Source::Import)?;
        match absorbed {
            Ok(a) => {
                sum.imported = staged.len();
                sum.unauthorized = a.unauthorized.clone();
                sum.rejections.extend(a.rejections.iter().cloned());
                self.after_absorb(a, now_ms)?;
            }
            Err(e) => {
                self.abandon(now_ms)?;
                return Ok(vec![Reply::from(ApiError::from(&e))]);
            }
        }
        sum.rejected = sum.rejections.len();
        Ok(vec![Reply::ok(OkData::Import {
            import: Box::new(sum),
        })])
    }

    /// Events downloaded from the homeserver: verified, stored and relayed
    /// by the node, processed by the rooms layer, staged for the next
    /// commit (the caller stages its cursor with them).
    pub fn deliver(
        &mut self,
        now_ms: u64,
        events: Vec<Event>,
        source: Source,
    ) -> Result<DeliverOutcome, CoreError> {
        let stats = self.node.stats();
        let refused_before = stats.invalid_events + stats.refused_events;
        let (staged, absorbed) = self.deliver_events(now_ms, events, source)?;
        let unauthorized = match absorbed {
            Ok(sum) => {
                let n = sum.unauthorized.len() as u64;
                self.after_absorb(sum, now_ms)?;
                n
            }
            Err(e) => {
                self.out
                    .push_back(CoreOutput::ProcessingFailed(e.to_string()));
                0
            }
        };
        let stats = self.node.stats();
        Ok(DeliverOutcome {
            stored: staged.len() as u64,
            refused: (stats.invalid_events + stats.refused_events).saturating_sub(refused_before),
            unauthorized,
        })
    }

    /// Periodic upkeep: drops expired events and the plaintexts of events
    /// no longer held, and rotates the prekey when due (publishing the
    /// update through the node) unless `may_publish` is false (the disk is
    /// full). Stages everything for the next commit.
    pub fn maintain(&mut self, now_ms: u64, may_publish: bool) -> Result<Upkeep, CoreError> {
        let mut up = Upkeep::default();
        if self.needs_commit() {
            up.errors.push("uncommitted writes; upkeep skipped".into());
            return Ok(up);
        }
        self.sessions.clear();
        up.expired = self.node.store_mut().expire(now_ms)?;
        match self.with_device(|dev, _| dev.prune_orphaned_plaintexts()) {
            Ok(n) => up.plaintexts = n,
            Err(e) => {
                self.node.store_mut().rollback()?;
                up.expired = 0;
                up.errors.push(format!("pruning plaintexts: {e}"));
            }
        }
        self.dirty = true;
        let rotated = self.with_device(|dev, rng| {
            if !may_publish || !dev.prekey_due(now_ms) {
                return Ok(None);
            }
            dev.defer();
            let r = dev.rotate_prekey(now_ms, rng)?;
            Ok(Some((r, dev.take_deferred())))
        });
        match rotated {
            Ok(Some((r, events))) => {
                if let Some(id) = self.publish(now_ms, events)? {
                    up.errors
                        .push(format!("the store refused the prekey update {id}"));
                }
                up.rotated = Some(r);
                self.card_check = true;
            }
            Ok(None) => {}
            Err(e) => {
                self.node.store_mut().rollback()?;
                up.errors.push(format!("prekey rotation: {e}"));
            }
        }
        Ok(up)
    }
}
