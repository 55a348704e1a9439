//! Sneakernet bundles: signed events carried on a USB stick or SD card
//! (`protocol-spec/rooms.md`, "Bundles").
//!
//! ```text
//! bundle = [ "meshrelay-bundle", version: 1, created_ms: uint, events: [* bstr] ]
//! ```
//!
//! Each event is embedded as a byte string holding its canonical signed
//! bytes, so one damaged event is rejected on its own without losing the
//! rest. [`import`] verifies every event (canonical encoding, limits,
//! signature, timeliness) and reports what it accepted, what it already had
//! and what it rejected with the reason; rejected events are never returned
//! for storage. Importing the same bundle twice accepts nothing the second
//! time (deduplication by event ID through the caller's `have` predicate and
//! within the bundle). Nothing in a bundle is ever decompressed.

mod stream;

use std::collections::BTreeSet;

use thiserror::Error;

pub use stream::{BundleStream, RawEvent};

use crate::cbor::{self, CborError, Reader, Writer};
use crate::event::{Event, EventId, RoomId, Timeliness, timeliness};

/// Magic first item of a bundle.
pub const BUNDLE_MAGIC: &str = "meshrelay-bundle";
/// Bundle format version.
pub const BUNDLE_VERSION: u64 = 1;
/// Largest bundle accepted, in bytes.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024 * 1024;
/// Most events in one bundle.
pub const MAX_BUNDLE_EVENTS: usize = 65_536;

/// Why a whole bundle was rejected (single bad events are only reported).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// Larger than [`MAX_BUNDLE_BYTES`].
    #[error("bundle is {0} bytes, over the {MAX_BUNDLE_BYTES}-byte limit")]
    TooLarge(usize),
    /// Malformed or non-canonical bundle framing.
    #[error("bundle encoding: {0}")]
    Cbor(#[from] CborError),
    /// Not a meshrelay bundle.
    #[error("not a meshrelay bundle (missing magic)")]
    NotABundle,
    /// Unknown bundle version.
    #[error("unknown bundle version {0}")]
    UnknownVersion(u64),
    /// More than [`MAX_BUNDLE_EVENTS`] events.
    #[error("bundle holds more than {MAX_BUNDLE_EVENTS} events")]
    TooManyEvents,
    /// Reading a streamed bundle failed ([`BundleStream`]).
    #[error("reading the bundle: {0}")]
    Read(String),
}

/// One event a bundle import rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Position in the bundle.
    pub index: usize,
    /// The event ID if the event decoded far enough to have one.
    pub event_id: Option<EventId>,
    /// Why (one line).
    pub reason: String,
}

/// The result of [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// Verified new events, in bundle order: store these.
    pub imported: Vec<Event>,
    /// Events already held (or repeated in the bundle).
    pub duplicates: usize,
    /// Events rejected, with reasons. Never store these.
    pub rejected: Vec<Rejected>,
}

/// Encodes `events` as a bundle.
pub fn export<'a>(events: impl IntoIterator<Item = &'a Event>, created_ms: u64) -> Vec<u8> {
    let events: Vec<&[u8]> = events.into_iter().map(Event::bytes).collect();
    frame(&events, created_ms)
}

/// Frames raw event byte strings as a bundle (what [`export`] does for
/// events; a streamed import through the daemon re-frames what it read in
/// slices, `protocol-spec/daemon.md`, "The CLI as a client").
pub fn frame(events: &[&[u8]], created_ms: u64) -> Vec<u8> {
    let size: usize = events.iter().map(|e| e.len() + 3).sum();
    let mut w = Writer::with_capacity(size + 32);
    w.array(4)
        .text(BUNDLE_MAGIC)
        .u64(BUNDLE_VERSION)
        .u64(created_ms)
        .array(events.len());
    for e in events {
        w.bytes(e);
    }
    w.into_bytes()
}

/// The framing of a bundle: its creation time and raw event byte strings.
pub fn parse(bytes: &[u8]) -> Result<(u64, Vec<&[u8]>), BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(bytes.len()));
    }
    cbor::validate(bytes, 2)?;
    let mut r = Reader::new(bytes);
    let n = r.array()?;
    if n != 4 || r.text().ok() != Some(BUNDLE_MAGIC) {
        return Err(BundleError::NotABundle);
    }
    let v = r.u64()?;
    if v != BUNDLE_VERSION {
        return Err(BundleError::UnknownVersion(v));
    }
    let created_ms = r.u64()?;
    let count = r.array()?;
    if count > MAX_BUNDLE_EVENTS {
        return Err(BundleError::TooManyEvents);
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(r.bytes()?);
    }
    r.finish()?;
    Ok((created_ms, out))
}

/// Whether one decoded event of a bundle may be stored at `now_ms`: its
/// signature verifies, it belongs to `room` (when given) and it is current.
/// The one check of [`import`] and of the streamed import
/// (`crate::app::Device::import_from`); the error is the reason, one line.
pub fn admit(ev: &mut Event, now_ms: u64, room: Option<RoomId>) -> Result<(), String> {
    ev.verify_once().map_err(|e| e.to_string())?;
    if let Some(r) = room
        && ev.room() != r
    {
        return Err(format!("event of another room {}", ev.room()));
    }
    match timeliness(ev, now_ms) {
        Timeliness::Current => Ok(()),
        Timeliness::Expired => Err("event has expired".into()),
        Timeliness::FromFuture => Err("event timestamp is too far in the future".into()),
    }
}

/// Reads a whole streamed bundle and checks its framing only (events are
/// not decoded): what a caller does before [`BundleStream`]-importing a
/// file, so a bundle whose framing is broken stores nothing.
pub fn check_framing<R: std::io::Read>(r: R) -> Result<usize, BundleError> {
    let mut s = BundleStream::new(r)?;
    let mut n = 0;
    while s.next_event()?.is_some() {
        n += 1;
    }
    Ok(n)
}

/// Verifies a bundle's events at time `now_ms`. `have` says whether the
/// caller already stores an event; `room` optionally restricts the import
/// to one room (events of other rooms are rejected).
pub fn import(
    bytes: &[u8],
    now_ms: u64,
    room: Option<RoomId>,
    mut have: impl FnMut(&EventId) -> bool,
) -> Result<ImportReport, BundleError> {
    let (_, raw) = parse(bytes)?;
    let mut report = ImportReport::default();
    let mut seen = BTreeSet::new();
    for (index, b) in raw.into_iter().enumerate() {
        let mut ev = match Event::decode_unverified(b) {
            Ok(ev) => ev,
            Err(e) => {
                report.rejected.push(Rejected {
                    index,
                    event_id: None,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        if seen.contains(&ev.id()) || have(&ev.id()) {
            report.duplicates += 1;
            continue;
        }
        if let Err(reason) = admit(&mut ev, now_ms, room) {
            report.rejected.push(Rejected {
                index,
                event_id: Some(ev.id()),
                reason,
            });
            continue;
        }
        seen.insert(ev.id());
        report.imported.push(ev);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::event::{EventKind, UnsignedEvent};
    use proptest::prelude::*;

    fn ev(id: &Identity, seq: u64, len: usize) -> Event {
        UnsignedEvent {
            room: RoomId([1; 16]),
            sender: id.device_id(),
            seq,
            prev: vec![],
            origin_ts_ms: 1000,
            expires_ms: 1000 + 86_400_000,
            kind: EventKind::Message,
            payload: vec![7; len],
        }
        .sign(id)
        .unwrap()
    }

    proptest! {
        #[test]
        fn bundle_round_trips(lens in proptest::collection::vec(0usize..200, 0..8), ts in any::<u64>()) {
            let id = Identity::from_seed(&[1; 32]);
            let evs: Vec<Event> = lens.iter().enumerate().map(|(i, l)| ev(&id, i as u64 + 1, *l)).collect();
            let b = export(&evs, ts);
            let (t, raw) = parse(&b).unwrap();
            prop_assert_eq!(t, ts);
            prop_assert_eq!(raw.len(), evs.len());
            let rep = import(&b, 2000, None, |_| false).unwrap();
            prop_assert_eq!(rep.imported, evs);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = import(&bytes, 0, None, |_| false);
        }
    }

    #[test]
    fn bad_events_are_reported_not_fatal() {
        let id = Identity::from_seed(&[1; 32]);
        let good = ev(&id, 1, 10);
        let mut bad_sig = ev(&id, 2, 10).bytes().to_vec();
        let last = bad_sig.len() - 1;
        bad_sig[last] ^= 1;
        let mut w = Writer::new();
        w.array(4)
            .text(BUNDLE_MAGIC)
            .u64(1)
            .u64(0)
            .array(4)
            .bytes(good.bytes())
            .bytes(&bad_sig)
            .bytes(b"junk")
            .bytes(good.bytes());
        let rep = import(&w.into_bytes(), 2000, None, |_| false).unwrap();
        assert_eq!(rep.imported, vec![good]);
        assert_eq!(rep.duplicates, 1);
        assert_eq!(rep.rejected.len(), 2);
        assert!(rep.rejected[0].reason.contains("signature"));
        assert!(rep.rejected[1].event_id.is_none());
        assert_eq!(
            import(b"\x80", 0, None, |_| false).unwrap_err(),
            BundleError::NotABundle
        );
    }
}
