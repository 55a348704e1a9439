//! Rooms: membership, authorization, resolution, ordering, gaps and the
//! per-room key handling (`protocol-spec/rooms.md`,
//! `protocol-spec/encryption.md`).
//!
//! Everything here is pure and deterministic: the caller feeds signed
//! events in any order and reads back verdicts, membership, display order
//! and gaps; secret state ([`RoomKeys`]) is explicit and serialized by the
//! caller.

pub mod attachment;
pub mod content;
pub mod dag;
pub mod keys;
pub mod membership;
pub mod receipt;
pub mod resolve;
pub mod roster;
pub mod session;

pub use content::{Content, ContentError};
pub use dag::{
    DagError, Gap, Inserted, MAX_PENDING_EVENTS, MAX_PENDING_FROM_STRANGERS,
    MAX_PENDING_PER_STRANGER, RoomDag,
};
pub use keys::{AcceptedShare, KeyError, RoomKeys, accept_key_share, decrypt_message};
pub use membership::{Membership, MembershipError, derive_room_id};
pub use receipt::{OwnReceipts, ReceiptBody, ReceiptBook};
pub use resolve::{AuthError, Member, MembershipState, ROOM_CAP, Resolution};
pub use session::{
    Dropped, MAX_REBUILD_DROPPED_LISTED, MAX_REBUILD_PASSES, MAX_REBUILD_RETRIES, Outgoing,
    Rebuild, Received, Rederived, RoomSession, SessionError, UNAUTHORIZED_REASON,
};
