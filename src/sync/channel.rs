//! A [`SyncHost`] that forwards every call over a channel to the loop that
//! owns the store (the daemon's driver, `protocol-spec/homeserver.md`,
//! "Sync host").
//!
//! The engine runs in its own task with a [`ChannelHost`]; the owner's loop
//! receives [`HostRequest`]s between its own batches and answers each one:
//! [`HostRequest::serve_store`] answers everything that touches only the
//! store and hands back a [`DownlinkRequest`], which the owner completes
//! with its own intake (for the daemon: each new event through the node as
//! from the homeserver, then the rooms layer), [`DownlinkRequest::known`]
//! and [`DownlinkRequest::finish`].

use tokio::sync::{mpsc, oneshot};

use crate::event::Event;
use crate::store::Store;
use crate::transport::homeserver::Bundle;

use super::downlink::{self, Cursor};
use super::host::{DownlinkOutcome, SyncHost};
use super::{SyncError, uplink};

/// Requests queued from the engine to the owner at most (the engine waits
/// for each answer, so one is in flight; the bound is a safety margin).
pub const HOST_CHANNEL_CAPACITY: usize = 4;

type Reply<T> = oneshot::Sender<Result<T, SyncError>>;

/// One call of the engine, to be answered by the store's owner.
#[derive(Debug)]
pub enum HostRequest {
    /// [`SyncHost::cursor`].
    Cursor {
        /// Account and room.
        owner: String,
        /// Answer.
        reply: Reply<Cursor>,
    },
    /// [`SyncHost::downlinked`].
    Downlinked(DownlinkRequest),
    /// [`SyncHost::next_uplink`].
    NextUplink {
        /// Most bundles.
        max_bundles: usize,
        /// Largest bundle.
        max_bytes: usize,
        /// Answer.
        reply: Reply<Vec<Bundle>>,
    },
    /// [`SyncHost::uplinked`].
    Uplinked {
        /// The accepted bundle.
        bundle: Bundle,
        /// Answer.
        reply: Reply<()>,
    },
    /// [`SyncHost::discard`].
    Discard {
        /// The bundle to forget.
        bundle: Bundle,
        /// Answer.
        reply: Reply<()>,
    },
    /// [`SyncHost::queued`].
    Queued {
        /// Answer.
        reply: Reply<u64>,
    },
}

/// A downloaded batch for the owner to store.
#[derive(Debug)]
pub struct DownlinkRequest {
    /// Verified envelopes, in delivery order.
    pub events: Vec<Event>,
    /// The cursor to stage and commit with them.
    pub cursor: Cursor,
    reply: Reply<DownlinkOutcome>,
}

impl DownlinkRequest {
    /// Splits the batch: events the store never accepted (for the owner to
    /// take in as from [`Source::Homeserver`](crate::store::Source)) are
    /// returned; known ones are recorded as present on the server (staged).
    pub fn known<S: Store>(&mut self, store: &mut S) -> Result<Vec<Event>, SyncError> {
        let events = std::mem::take(&mut self.events);
        let (new, known) = downlink::split_known(store, events)?;
        downlink::mark_present(store, &known)?;
        Ok(new)
    }

    /// Stages the cursor, commits (with whatever the owner staged for the
    /// batch) and answers the engine with `outcome`. On a failure the
    /// store is rolled back and the engine gets the error.
    pub fn finish<S: Store>(self, store: &mut S, outcome: DownlinkOutcome) {
        let r = downlink::stage_cursor(store, &self.cursor)
            .and_then(|()| store.commit().map_err(SyncError::from));
        if r.is_err() {
            let _ = store.rollback();
        }
        let _ = self.reply.send(r.map(|()| outcome));
    }

    /// Answers the engine with an error (nothing committed).
    pub fn fail(self, error: SyncError) {
        let _ = self.reply.send(Err(error));
    }
}

impl HostRequest {
    /// Answers a store-only request on `store` (each step commits);
    /// returns a downlink batch for the owner to complete.
    pub fn serve_store<S: Store>(self, store: &mut S, now_ms: u64) -> Option<DownlinkRequest> {
        match self {
            HostRequest::Cursor { owner, reply } => {
                let r = downlink::load_cursor(store, &owner).and_then(|c| {
                    if store.has_pending() {
                        store.commit()?;
                    }
                    Ok(c)
                });
                let _ = reply.send(r);
            }
            HostRequest::Downlinked(d) => return Some(d),
            HostRequest::NextUplink {
                max_bundles,
                max_bytes,
                reply,
            } => {
                let _ = reply.send(uplink::prepare(store, max_bundles, max_bytes, now_ms));
            }
            HostRequest::Uplinked { bundle, reply } => {
                let _ = reply.send(uplink::sent(store, &bundle));
            }
            HostRequest::Discard { bundle, reply } => {
                let _ = reply.send(uplink::discard(store, &bundle));
            }
            HostRequest::Queued { reply } => {
                let _ = reply.send(uplink::queued(store));
            }
        }
        None
    }
}

/// The engine's end: a [`SyncHost`] whose calls become [`HostRequest`]s.
#[derive(Debug, Clone)]
pub struct ChannelHost {
    tx: mpsc::Sender<HostRequest>,
}

/// A connected pair: the host for the engine and the receiver for the
/// store's owner.
pub fn channel_host() -> (ChannelHost, mpsc::Receiver<HostRequest>) {
    let (tx, rx) = mpsc::channel(HOST_CHANNEL_CAPACITY);
    (ChannelHost { tx }, rx)
}

impl ChannelHost {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> HostRequest) -> Result<T, SyncError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SyncError::Host("the store's owner stopped".into()))?;
        rx.await
            .map_err(|_| SyncError::Host("the store's owner dropped the request".into()))?
    }
}

impl SyncHost for ChannelHost {
    async fn cursor(&mut self, owner: &str) -> Result<Cursor, SyncError> {
        let owner = owner.to_owned();
        self.call(|reply| HostRequest::Cursor { owner, reply })
            .await
    }

    async fn downlinked(
        &mut self,
        events: Vec<Event>,
        cursor: Cursor,
    ) -> Result<DownlinkOutcome, SyncError> {
        self.call(|reply| {
            HostRequest::Downlinked(DownlinkRequest {
                events,
                cursor,
                reply,
            })
        })
        .await
    }

    async fn next_uplink(
        &mut self,
        max_bundles: usize,
        max_bytes: usize,
    ) -> Result<Vec<Bundle>, SyncError> {
        self.call(|reply| HostRequest::NextUplink {
            max_bundles,
            max_bytes,
            reply,
        })
        .await
    }

    async fn uplinked(&mut self, bundle: &Bundle) -> Result<(), SyncError> {
        let bundle = bundle.clone();
        self.call(|reply| HostRequest::Uplinked { bundle, reply })
            .await
    }

    async fn discard(&mut self, bundle: &Bundle) -> Result<(), SyncError> {
        let bundle = bundle.clone();
        self.call(|reply| HostRequest::Discard { bundle, reply })
            .await
    }

    async fn queued(&mut self) -> Result<u64, SyncError> {
        self.call(|reply| HostRequest::Queued { reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::event::{EventKind, RoomId, UnsignedEvent};
    use crate::store::{
        DeliveryStore, Destination, EventStore, InsertMeta, InsertOutcome, MemoryStore, Priority,
        Source,
    };
    use crate::transport::homeserver::MAX_BUNDLE_BYTES;

    const NOW: u64 = 1_700_000_000_000;

    fn ev(seq: u64) -> Event {
        let id = Identity::from_seed(&[4; 32]);
        UnsignedEvent {
            room: RoomId([1; 16]),
            sender: id.device_id(),
            seq,
            prev: vec![],
            origin_ts_ms: NOW,
            expires_ms: NOW + 86_400_000,
            kind: EventKind::Message,
            payload: vec![1; 100],
        }
        .sign(&id)
        .expect("sign")
    }

    /// The engine's calls reach a loop that owns a store, and a downlink
    /// batch is completed by the owner's own intake.
    #[tokio::test]
    async fn calls_are_served_by_the_owner_loop() {
        let (mut host, mut rx) = channel_host();
        let owner = tokio::spawn(async move {
            let mut store = MemoryStore::new_memory();
            let meta = |source| InsertMeta {
                priority: Priority::OwnRoom,
                source,
                received_ms: NOW,
                carried: false,
            };
            for s in 1..=3 {
                store
                    .insert_event(&ev(s), &meta(Source::Local))
                    .expect("insert");
            }
            store.commit().expect("commit");
            while let Some(req) = rx.recv().await {
                if let Some(mut d) = req.serve_store(&mut store, NOW) {
                    let new = d.known(&mut store).expect("known");
                    let mut out = DownlinkOutcome::default();
                    for e in &new {
                        if store
                            .insert_event(e, &meta(Source::Homeserver))
                            .expect("insert")
                            == InsertOutcome::Inserted
                        {
                            out.stored += 1;
                        }
                    }
                    d.finish(&mut store, out);
                }
            }
            store
        });
        assert_eq!(
            host.cursor("@u !r").await.expect("cursor"),
            Cursor::default()
        );
        assert_eq!(host.queued().await.expect("queued"), 3);
        // Event 3 is seen on the server (another gateway), 4 is new.
        let c = Cursor {
            since: Some("s1".into()),
            gap: None,
        };
        let out = host
            .downlinked(vec![ev(3), ev(4)], c.clone())
            .await
            .expect("down");
        assert_eq!(out.stored, 1);
        assert_eq!(host.cursor("@u !r").await.expect("cursor"), c);
        let bundles = host.next_uplink(4, MAX_BUNDLE_BYTES).await.expect("up");
        assert_eq!(bundles.len(), 1);
        assert_eq!(
            bundles[0].events().len(),
            2,
            "3 is present, 4 came from the server"
        );
        host.uplinked(&bundles[0]).await.expect("sent");
        assert_eq!(host.queued().await.expect("queued"), 0);
        drop(host);
        let store = owner.await.expect("owner");
        assert!(
            store
                .undelivered(&Destination::Homeserver, None, 10)
                .expect("q")
                .is_empty()
        );
    }
}
