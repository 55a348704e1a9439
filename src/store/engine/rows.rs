//! The encoded bookkeeping rows of the engine: one event's metadata and the
//! sequence marks of one `(room, sender)` (`protocol-spec/store.md`, §2 "Tables"
//! and §3 "Deduplication, replays and forks").

use super::*;
use crate::cbor::{Reader, Writer};

/// Sequence marks of one (room, sender).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Mark {
    /// Highest sequence number accepted.
    pub(super) high: u64,
    /// Sequence numbers at or below this are not reported as gaps (their
    /// tombstones were pruned at expiry).
    pub(super) floor: u64,
    /// Keep the mark even when every row is pruned (own and room senders:
    /// the node's own send path resumes from it).
    pub(super) keep: bool,
}

/// Bookkeeping row of one held event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MetaRow {
    pub(super) priority: Priority,
    pub(super) source: Source,
    pub(super) received_ms: u64,
    pub(super) expires_ms: u64,
    pub(super) origin_ts_ms: u64,
    pub(super) charged: u64,
    pub(super) serial: u64,
    pub(super) room: RoomId,
    pub(super) sender: [u8; 32],
    pub(super) seq: u64,
}

impl MetaRow {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        let src_key;
        let src: &[u8] = match &self.source {
            Source::Link(k) => {
                src_key = k.key();
                &src_key
            }
            _ => &[],
        };
        w.array(11)
            .u64(self.priority.tag().into())
            .u64(self.source.tag())
            .bytes(src)
            .u64(self.received_ms)
            .u64(self.expires_ms)
            .u64(self.origin_ts_ms)
            .u64(self.charged)
            .u64(self.serial)
            .bytes(self.room.as_bytes())
            .bytes(&self.sender)
            .u64(self.seq);
        w.into_bytes()
    }

    pub(super) fn decode(b: &[u8]) -> Result<Self, StoreError> {
        const W: &str = "event metadata";
        let e = enc(W);
        let mut r = Reader::new(b);
        r.array_of(11, W).map_err(&e)?;
        let priority = Priority::from_tag(r.u64().map_err(&e)?).ok_or_else(|| bad(W))?;
        let tag = r.u64().map_err(&e)?;
        let src = r.bytes().map_err(&e)?;
        let source = match tag {
            0 => Source::Local,
            1 => Source::Homeserver,
            2 => Source::Import,
            3 => Source::Link(SourceKey(src.try_into().map_err(|_| bad(W))?)),
            _ => return Err(bad(W)),
        };
        let row = MetaRow {
            priority,
            source,
            received_ms: r.u64().map_err(&e)?,
            expires_ms: r.u64().map_err(&e)?,
            origin_ts_ms: r.u64().map_err(&e)?,
            charged: r.u64().map_err(&e)?,
            serial: r.u64().map_err(&e)?,
            room: RoomId(r.byte_array::<16>(W).map_err(&e)?),
            sender: r.byte_array::<32>(W).map_err(&e)?,
            seq: r.u64().map_err(&e)?,
        };
        r.finish().map_err(&e)?;
        Ok(row)
    }
}

impl<K: Kv> Engine<K> {
    // ---- sequence marks -----------------------------------------------

    pub(super) fn mark(&self, key: &[u8]) -> Result<Mark, StoreError> {
        let Some(b) = self.kv.get(Table::HighWater, key)? else {
            return Ok(Mark::default());
        };
        let e = enc("high-water mark");
        let mut r = Reader::new(&b);
        r.array_of(3, "high-water mark").map_err(&e)?;
        let m = Mark {
            high: r.u64().map_err(&e)?,
            floor: r.u64().map_err(&e)?,
            keep: r.bool().map_err(&e)?,
        };
        r.finish().map_err(&e)?;
        Ok(m)
    }

    pub(super) fn put_mark(&mut self, key: &[u8], m: &Mark) -> Result<(), StoreError> {
        let mut w = Writer::new();
        w.array(3).u64(m.high).u64(m.floor).bool(m.keep);
        self.kv.put(Table::HighWater, key, &w.into_bytes())
    }
}
