//! Every size, count and time limit of the protocol, in one place.
//!
//! Each constant here is normative and is written, with its reasoning, in
//! `protocol-spec/limits.md`. Changing one is a protocol change.

/// Envelope format version this implementation speaks (`protocol-spec/event.md`).
pub const EVENT_FORMAT_VERSION: u64 = 1;

/// Contact-card format version (`protocol-spec/identity.md`).
pub const CARD_FORMAT_VERSION: u64 = 1;

/// Largest encoded signed event, in bytes.
///
/// About three maximum-size events fit one 48 KB homeserver upload, and a
/// typical 300–600 byte chat event fits ~100 times; at BLE MTU 185 the largest
/// event is ~90 fragments.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;

/// Largest payload (ciphertext for encrypted kinds) inside an event.
///
/// `MAX_EVENT_BYTES` minus room for a header with `MAX_PREV_EVENTS`
/// predecessors, so any event whose payload fits also fits the event cap.
pub const MAX_PAYLOAD_BYTES: usize = 15 * 1024;

/// Most causal predecessors (DAG heads) one event may cite.
pub const MAX_PREV_EVENTS: usize = 16;

/// Deepest CBOR nesting any decoder accepts. Events need 2, bundles 3.
pub const MAX_CBOR_DEPTH: usize = 8;

/// Longest display name in a contact card, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Largest encoded contact card, in bytes (before the text encoding).
pub const MAX_CARD_BYTES: usize = 512;

/// How far in the future (by the receiver's clock) an event's origin
/// timestamp may lie before the event is held back as "from the future".
pub const MAX_FUTURE_SKEW_MS: u64 = 15 * 60 * 1000;

/// Largest backward jump of the wall clock a daemon absorbs: within it the
/// daemon's time keeps running on the monotonic clock from the last time
/// used ([`crate::event::ClockFloor::tick`]); a larger one is taken as the
/// correction of a wrong clock and followed.
pub const MAX_CLOCK_ROLLBACK_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Grace added to a signed expiry before a receiver treats the event as
/// expired, to absorb clock skew between sender and receiver.
pub const EXPIRY_GRACE_MS: u64 = 15 * 60 * 1000;

/// Longest lifetime (`expires_ms - origin_ts_ms`) an event may claim.
pub const MAX_EVENT_LIFETIME_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// Lifetime given to events when the user does not choose one.
pub const DEFAULT_EVENT_LIFETIME_MS: u64 = 14 * 24 * 60 * 60 * 1000;
