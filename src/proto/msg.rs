//! Node-to-node messages (`protocol-spec/wire.md`, "Messages").
//!
//! One message is one frame: a canonical CBOR array `[version, type, ...]`.
//! Frames are then fragmented to the link MTU by [`crate::proto::fragment`].

use thiserror::Error;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::event::{EventId, RoomId};
use crate::limits::MAX_EVENT_BYTES;

/// Wire protocol version carried in every frame.
pub const WIRE_VERSION: u64 = 1;

/// Largest encoded frame, in bytes: one event batch of this size is the unit
/// of transfer and of reassembly.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Most event IDs in one announcement, want or graft message.
pub const MAX_IDS_PER_FRAME: usize = 1024;

/// Most rooms listed in one hello.
pub const MAX_HELLO_ROOMS: usize = 1024;

/// Largest opaque reconciliation payload in one frame.
pub const MAX_RECON_PAYLOAD: usize = 32 * 1024;

/// Most events in one batch frame.
pub const MAX_EVENTS_PER_FRAME: usize = 256;

const T_HELLO: u64 = 0;
const T_RECON: u64 = 1;
const T_EVENTS: u64 = 2;
const T_IHAVE: u64 = 3;
const T_WANT: u64 = 4;
const T_PRUNE: u64 = 5;
const T_GRAFT: u64 = 6;
const T_CLOSE: u64 = 7;

/// Why a frame was rejected. Any of these closes the link.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MsgError {
    /// Larger than [`MAX_FRAME_BYTES`].
    #[error("frame larger than {MAX_FRAME_BYTES} bytes")]
    TooLarge,
    /// Malformed or non-canonical CBOR.
    #[error("frame encoding: {0}")]
    Cbor(#[from] CborError),
    /// Unknown wire version.
    #[error("unknown wire version {0}")]
    UnknownVersion(u64),
    /// Unknown frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u64),
    /// A list exceeded its limit.
    #[error("{0} exceeds its limit")]
    TooMany(&'static str),
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// First frame on a link: version, a tie-break nonce and the rooms held.
    Hello {
        /// Random nonce; the side with the lower nonce initiates
        /// reconciliation (equal nonces: both close and retry).
        nonce: u64,
        /// Rooms the sender holds events of, ascending.
        rooms: Vec<RoomId>,
    },
    /// One reconciliation message for one room.
    Recon {
        /// The room.
        room: RoomId,
        /// The reconciliation payload (`protocol-spec/reconcile.md`).
        payload: Vec<u8>,
    },
    /// Full events, each its canonical signed bytes.
    Events(Vec<Vec<u8>>),
    /// Lazy-push announcement: "I have these".
    IHave(Vec<EventId>),
    /// Request for events by ID.
    Want(Vec<EventId>),
    /// Plumtree prune: stop pushing full events to me eagerly.
    Prune,
    /// Plumtree graft: push eagerly again, and send these.
    Graft(Vec<EventId>),
    /// Closing, with a reason code.
    Close(u64),
}

fn write_ids(w: &mut Writer, ids: &[EventId]) {
    w.array(ids.len());
    for id in ids {
        w.bytes(id.as_bytes());
    }
}

fn read_ids(r: &mut Reader<'_>) -> Result<Vec<EventId>, MsgError> {
    let n = r.array()?;
    if n > MAX_IDS_PER_FRAME {
        return Err(MsgError::TooMany("event ID list"));
    }
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(EventId(r.byte_array("32-byte event ID")?));
    }
    Ok(ids)
}

impl Msg {
    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Msg::Hello { nonce, rooms } => {
                w.array(4).u64(WIRE_VERSION).u64(T_HELLO).u64(*nonce);
                w.array(rooms.len());
                for r in rooms {
                    w.bytes(r.as_bytes());
                }
            }
            Msg::Recon { room, payload } => {
                w.array(4)
                    .u64(WIRE_VERSION)
                    .u64(T_RECON)
                    .bytes(room.as_bytes())
                    .bytes(payload);
            }
            Msg::Events(evs) => {
                w.array(3).u64(WIRE_VERSION).u64(T_EVENTS).array(evs.len());
                for e in evs {
                    w.bytes(e);
                }
            }
            Msg::IHave(ids) => {
                w.array(3).u64(WIRE_VERSION).u64(T_IHAVE);
                write_ids(&mut w, ids);
            }
            Msg::Want(ids) => {
                w.array(3).u64(WIRE_VERSION).u64(T_WANT);
                write_ids(&mut w, ids);
            }
            Msg::Prune => {
                w.array(2).u64(WIRE_VERSION).u64(T_PRUNE);
            }
            Msg::Graft(ids) => {
                w.array(3).u64(WIRE_VERSION).u64(T_GRAFT);
                write_ids(&mut w, ids);
            }
            Msg::Close(code) => {
                w.array(3).u64(WIRE_VERSION).u64(T_CLOSE).u64(*code);
            }
        }
        w.into_bytes()
    }

    /// Decodes a frame, strictly.
    pub fn decode(bytes: &[u8]) -> Result<Msg, MsgError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(MsgError::TooLarge);
        }
        cbor::validate(bytes, 2)?;
        let mut r = Reader::new(bytes);
        let n = r.array()?;
        if n < 2 {
            return Err(CborError::WrongType {
                expected: "frame [version, type, ...]",
            }
            .into());
        }
        let version = r.u64()?;
        if version != WIRE_VERSION {
            return Err(MsgError::UnknownVersion(version));
        }
        let ty = r.u64()?;
        let shape = |want: usize| -> Result<(), MsgError> {
            if n == want {
                Ok(())
            } else {
                Err(CborError::WrongType {
                    expected: "frame field count",
                }
                .into())
            }
        };
        let msg = match ty {
            T_HELLO => {
                shape(4)?;
                let nonce = r.u64()?;
                let k = r.array()?;
                if k > MAX_HELLO_ROOMS {
                    return Err(MsgError::TooMany("hello room list"));
                }
                let mut rooms = Vec::with_capacity(k);
                for _ in 0..k {
                    rooms.push(RoomId(r.byte_array("16-byte room ID")?));
                }
                Msg::Hello { nonce, rooms }
            }
            T_RECON => {
                shape(4)?;
                let room = RoomId(r.byte_array("16-byte room ID")?);
                let payload = r.bytes()?;
                if payload.len() > MAX_RECON_PAYLOAD {
                    return Err(MsgError::TooMany("reconciliation payload"));
                }
                Msg::Recon {
                    room,
                    payload: payload.to_vec(),
                }
            }
            T_EVENTS => {
                shape(3)?;
                let k = r.array()?;
                if k > MAX_EVENTS_PER_FRAME {
                    return Err(MsgError::TooMany("event batch"));
                }
                let mut evs = Vec::with_capacity(k);
                for _ in 0..k {
                    let b = r.bytes()?;
                    if b.len() > MAX_EVENT_BYTES {
                        return Err(MsgError::TooMany("event size"));
                    }
                    evs.push(b.to_vec());
                }
                Msg::Events(evs)
            }
            T_IHAVE => {
                shape(3)?;
                Msg::IHave(read_ids(&mut r)?)
            }
            T_WANT => {
                shape(3)?;
                Msg::Want(read_ids(&mut r)?)
            }
            T_PRUNE => {
                shape(2)?;
                Msg::Prune
            }
            T_GRAFT => {
                shape(3)?;
                Msg::Graft(read_ids(&mut r)?)
            }
            T_CLOSE => {
                shape(3)?;
                Msg::Close(r.u64()?)
            }
            other => return Err(MsgError::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        let ids = vec![EventId([1; 32]), EventId([2; 32])];
        for m in [
            Msg::Hello {
                nonce: 7,
                rooms: vec![RoomId([4; 16])],
            },
            Msg::Recon {
                room: RoomId([4; 16]),
                payload: vec![1, 2, 3],
            },
            Msg::Events(vec![vec![0x80]]),
            Msg::IHave(ids.clone()),
            Msg::Want(ids.clone()),
            Msg::Prune,
            Msg::Graft(ids),
            Msg::Close(3),
        ] {
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn unknown_type_and_version_are_rejected() {
        let mut w = Writer::new();
        w.array(2).u64(WIRE_VERSION).u64(99);
        assert_eq!(Msg::decode(&w.into_bytes()), Err(MsgError::UnknownType(99)));
        let mut w = Writer::new();
        w.array(2).u64(9).u64(T_PRUNE);
        assert_eq!(
            Msg::decode(&w.into_bytes()),
            Err(MsgError::UnknownVersion(9))
        );
    }
}
