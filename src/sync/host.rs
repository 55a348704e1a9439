//! The seam between the async engine and whoever owns the store
//! (`protocol-spec/homeserver.md`, "Uplink" and "Downlink").

use std::future::Future;

use crate::app::Device;
use crate::event::Event;
use crate::store::{Source, Store};
use crate::transport::homeserver::Bundle;

use super::downlink::{self, Cursor};
use super::{SyncError, uplink};

/// What storing one downlink batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownlinkOutcome {
    /// New events stored.
    pub stored: u64,
    /// Events this node already had (recorded as present on the server).
    pub present: u64,
    /// Events refused by the store or the rooms layer.
    pub rejected: u64,
    /// Stored events the rooms layer found unauthorized.
    pub unauthorized: u64,
}

/// The store side of the homeserver sync. Each method runs synchronous
/// store steps ([`uplink`], [`downlink`]) and commits before it resolves;
/// the engine awaits the network only between calls, so no store is held
/// across an HTTP request. [`DirectHost`] runs the steps in place; the
/// daemon forwards each call to its loop, which owns the store.
pub trait SyncHost {
    /// The persisted downlink cursor of `owner` (account and transport
    /// room); another owner's cursor is reset.
    fn cursor(&mut self, owner: &str) -> impl Future<Output = Result<Cursor, SyncError>> + Send;

    /// Stores verified downloaded `events` (new ones through the rooms
    /// layer, as from [`Source::Homeserver`]; known ones recorded as present
    /// on the server) and `cursor`, in one commit.
    fn downlinked(
        &mut self,
        events: Vec<Event>,
        cursor: Cursor,
    ) -> impl Future<Output = Result<DownlinkOutcome, SyncError>> + Send;

    /// The next bundles to upload ([`uplink::prepare`]); their compositions
    /// are persisted and committed before this resolves. Empty when the
    /// queue is drained.
    fn next_uplink(
        &mut self,
        max_bundles: usize,
        max_bytes: usize,
    ) -> impl Future<Output = Result<Vec<Bundle>, SyncError>> + Send;

    /// The homeserver accepted `bundle` ([`uplink::sent`]).
    fn uplinked(&mut self, bundle: &Bundle) -> impl Future<Output = Result<(), SyncError>> + Send;

    /// Forget `bundle`'s composition unsent ([`uplink::discard`]).
    fn discard(&mut self, bundle: &Bundle) -> impl Future<Output = Result<(), SyncError>> + Send;

    /// Events queued for the homeserver (for progress).
    fn queued(&mut self) -> impl Future<Output = Result<u64, SyncError>> + Send;
}

/// A [`SyncHost`] over a [`Device`] this process owns (`meshrelay sync
/// --once` with no daemon running).
#[derive(Debug)]
pub struct DirectHost<S: Store> {
    device: Device<S>,
    clock: fn() -> u64,
}

impl<S: Store> DirectHost<S> {
    /// Syncs `device`'s store; `clock` gives "now" in ms since the epoch.
    pub fn new(device: Device<S>, clock: fn() -> u64) -> Self {
        DirectHost { device, clock }
    }

    /// The device.
    pub fn device(&self) -> &Device<S> {
        &self.device
    }

    /// Gives the device back.
    pub fn into_device(self) -> Device<S> {
        self.device
    }

    fn store_downlink(
        &mut self,
        events: Vec<Event>,
        cursor: &Cursor,
    ) -> Result<DownlinkOutcome, SyncError> {
        let now = (self.clock)();
        let (new, known) = downlink::split_known(self.device.store(), events)?;
        let store = self.device.store_mut();
        let staged = (|| {
            downlink::mark_present(store, &known)?;
            downlink::stage_cursor(store, cursor)
        })();
        if let Err(e) = staged {
            let _ = store.rollback();
            return Err(e);
        }
        // One commit for the events, the present marks and the cursor.
        let sum = self.device.receive_events(&new, Source::Homeserver, now)?;
        Ok(DownlinkOutcome {
            stored: sum.imported as u64,
            present: known.len() as u64 + sum.duplicates as u64,
            rejected: sum.rejected as u64,
            unauthorized: sum.unauthorized.len() as u64,
        })
    }
}

impl<S: Store + Send> SyncHost for DirectHost<S> {
    async fn cursor(&mut self, owner: &str) -> Result<Cursor, SyncError> {
        let store = self.device.store_mut();
        let c = downlink::load_cursor(store, owner)?;
        if store.has_pending() {
            store.commit()?;
        }
        Ok(c)
    }

    async fn downlinked(
        &mut self,
        events: Vec<Event>,
        cursor: Cursor,
    ) -> Result<DownlinkOutcome, SyncError> {
        self.store_downlink(events, &cursor)
    }

    async fn next_uplink(
        &mut self,
        max_bundles: usize,
        max_bytes: usize,
    ) -> Result<Vec<Bundle>, SyncError> {
        let now = (self.clock)();
        uplink::prepare(self.device.store_mut(), max_bundles, max_bytes, now)
    }

    async fn uplinked(&mut self, bundle: &Bundle) -> Result<(), SyncError> {
        uplink::sent(self.device.store_mut(), bundle)
    }

    async fn discard(&mut self, bundle: &Bundle) -> Result<(), SyncError> {
        uplink::discard(self.device.store_mut(), bundle)
    }

    async fn queued(&mut self) -> Result<u64, SyncError> {
        uplink::queued(self.device.store())
    }
}
