//! Homeserver adapter: store-and-forward through one Matrix "transport
//! room" (`protocol-spec/homeserver.md`).
//!
//! Every gateway uploads every envelope it carries into the deployment's
//! transport room, packed into [`bundle`]s of many signed envelopes per
//! Matrix event, and downloads the room with a long-polling `/sync`
//! (backfilling through `/messages` when the timeline is `limited`). The
//! homeserver sees one stream of opaque, signed, encrypted envelopes and
//! learns nothing of the mesh's room structure.
//!
//! - [`bundle`]: the pure bundle codec, packer and transaction IDs.
//! - [`Client`]: the typed Client-Server API client with retries.

pub mod bundle;
#[cfg(feature = "runtime")]
mod client;
mod error;
mod retry;

pub use bundle::{
    BUNDLE_EVENT_TYPE, Bundle, BundleError, DecodedBundle, MAX_BUNDLE_BYTES, RejectedEnvelope,
    decode_content, pack,
};
#[cfg(feature = "runtime")]
pub use client::{
    AccessToken, BackfillPage, Client, Gap, MESSAGES_PAGE_LIMIT, REQUEST_TIMEOUT, RoomEvent,
    SYNC_TIMELINE_LIMIT, Session, SyncBatch, TRANSPORT_ROOM_VERSION,
};
pub use error::HomeserverError;
pub use retry::{RetryPolicy, retry_after};
