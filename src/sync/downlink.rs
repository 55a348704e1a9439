//! Downlink store steps (`protocol-spec/homeserver.md`, "Downlink: sync
//! cursor and backfill"): decode the transport room's bundles like any
//! untrusted input, tell new events from ones this node already has
//! (recorded as present on the server, so never uploaded), and keep the
//! sync cursor.
//!
//! The cursor is the `/sync` `since` token (the store's sync token) plus a
//! gap still to backfill, and the account and room they belong to (so a
//! new account or transport room starts over). It is staged together with
//! the events of the same response and committed with them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventId};
use crate::store::{DeliveryState, Destination, EventStore, Store};
use crate::transport::homeserver::{BUNDLE_EVENT_TYPE, Gap, RoomEvent, decode_content};

use super::SyncError;

/// Metadata key of the backfill gap still to fetch (JSON, empty = none).
pub const GAP_META_KEY: &str = "homeserver/gap";
/// Metadata key of the account and room the cursor belongs to.
pub const OWNER_META_KEY: &str = "homeserver/cursor-owner";

/// Where the downlink stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The `/sync` `since` token (none before the first sync).
    pub since: Option<String>,
    /// History that `/sync` skipped and that is still to be backfilled.
    pub gap: Option<Gap>,
}

#[derive(Serialize, Deserialize)]
struct GapJson {
    room_id: String,
    from: String,
    to: Option<String>,
}

/// The persisted cursor of `owner` (the account and transport room). A
/// cursor of another owner is reset (staged; the caller commits).
pub fn load_cursor<S: Store>(store: &mut S, owner: &str) -> Result<Cursor, SyncError> {
    let stored = store.get_meta(OWNER_META_KEY)?;
    if stored.as_deref() != Some(owner.as_bytes()) {
        store.set_since_token(None)?;
        store.put_meta(GAP_META_KEY, b"")?;
        store.put_meta(OWNER_META_KEY, owner.as_bytes())?;
        return Ok(Cursor::default());
    }
    let gap = match store.get_meta(GAP_META_KEY)? {
        Some(b) if !b.is_empty() => {
            let g: GapJson = serde_json::from_slice(&b)
                .map_err(|e| SyncError::Corrupt(format!("backfill gap: {e}")))?;
            Some(Gap {
                room_id: g.room_id,
                from: g.from,
                to: g.to,
            })
        }
        _ => None,
    };
    Ok(Cursor {
        since: store.since_token()?,
        gap,
    })
}

/// Stages `cursor` (committed with the events of the same response).
pub fn stage_cursor<S: Store>(store: &mut S, cursor: &Cursor) -> Result<(), SyncError> {
    store.set_since_token(cursor.since.as_deref())?;
    let gap = match &cursor.gap {
        Some(g) => serde_json::to_vec(&GapJson {
            room_id: g.room_id.clone(),
            from: g.from.clone(),
            to: g.to.clone(),
        })
        .map_err(|e| SyncError::Corrupt(e.to_string()))?,
        None => Vec::new(),
    };
    store.put_meta(GAP_META_KEY, &gap)?;
    Ok(())
}

/// Verified envelopes out of transport-room events, with counts of what
/// was skipped.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Envelopes whose encoding and signature verify, without repeats, in
    /// the order the homeserver delivered them.
    pub events: Vec<Event>,
    /// Envelopes rejected inside otherwise valid bundles.
    pub rejected: u64,
    /// Bundle events rejected whole.
    pub malformed_bundles: u64,
}

/// Decodes the bundles among `events`: other event types are ignored; a
/// malformed bundle or envelope is logged and skipped.
pub fn decode(events: &[RoomEvent]) -> Decoded {
    let mut out = Decoded::default();
    let mut seen = BTreeSet::new();
    for e in events {
        if e.event_type != BUNDLE_EVENT_TYPE {
            continue;
        }
        match decode_content(&e.content) {
            Ok(d) => {
                for r in &d.rejected {
                    tracing::warn!(matrix_event = %e.event_id, sender = %e.sender, index = r.index,
                        error = %r.error, "skipping a bad envelope from the homeserver");
                }
                out.rejected += d.rejected.len() as u64;
                for ev in d.events {
                    if seen.insert(ev.id()) {
                        out.events.push(ev);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(matrix_event = %e.event_id, sender = %e.sender, %err,
                    "skipping a malformed bundle from the homeserver");
                out.malformed_bundles += 1;
            }
        }
    }
    out
}

/// Splits downloaded events into those this node never accepted (to be
/// stored) and the IDs of those it already has.
pub fn split_known<S: Store>(
    store: &S,
    events: Vec<Event>,
) -> Result<(Vec<Event>, Vec<EventId>), SyncError> {
    let mut new = Vec::new();
    let mut known = Vec::new();
    for e in events {
        if store.seen_event(&e)? {
            known.push(e.id());
        } else {
            new.push(e);
        }
    }
    Ok((new, known))
}

/// Records events seen on the downlink as present on the server: they
/// leave the homeserver queue and are never uploaded. Staged. Returns how
/// many were still queued.
pub fn mark_present<S: Store>(store: &mut S, ids: &[EventId]) -> Result<u64, SyncError> {
    let mut n = 0;
    for id in ids {
        if !store.has_event(id)? {
            continue;
        }
        if store.delivery_state(&Destination::Homeserver, id)? != Some(DeliveryState::Acked) {
            store.mark_acked(&Destination::Homeserver, id)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn cursor_round_trip_and_reset_on_new_owner() {
        let mut s = MemoryStore::new_memory();
        assert_eq!(
            load_cursor(&mut s, "@a room1").expect("c"),
            Cursor::default()
        );
        let c = Cursor {
            since: Some("s72".into()),
            gap: Some(Gap {
                room_id: "!r".into(),
                from: "t1".into(),
                to: None,
            }),
        };
        stage_cursor(&mut s, &c).expect("stage");
        s.commit().expect("commit");
        assert_eq!(load_cursor(&mut s, "@a room1").expect("c"), c);
        assert_eq!(
            load_cursor(&mut s, "@a room2").expect("c"),
            Cursor::default()
        );
        assert_eq!(
            load_cursor(&mut s, "@a room2").expect("c"),
            Cursor::default()
        );
    }

    #[test]
    fn non_bundles_ignored_malformed_counted() {
        let evs = vec![
            RoomEvent {
                event_id: "$1".into(),
                event_type: "m.room.message".into(),
                sender: "@x:y".into(),
                content: serde_json::json!({"body": "hi"}),
            },
            RoomEvent {
                event_id: "$2".into(),
                event_type: BUNDLE_EVENT_TYPE.into(),
                sender: "@x:y".into(),
                content: serde_json::json!({"v": 1, "envelopes": "@@"}),
            },
        ];
        let d = decode(&evs);
        assert!(d.events.is_empty());
        assert_eq!(d.malformed_bundles, 1);
        assert_eq!(d.rejected, 0);
    }
}
