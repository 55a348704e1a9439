//! Frames: the typed messages two linked nodes exchange (`protocol-spec/wire.md`).
//!
//! Every frame is one canonical CBOR array `[version, type, fields…]`. The
//! decoder first validates the whole item (canonical heads, depth at most
//! [`FRAME_MAX_DEPTH`], nothing trailing), then the version, then the type
//! tag, then each field, checking every count against its limit before it
//! allocates. Encoding then decoding is the identity, and so is decoding then
//! encoding: frames have exactly one byte form.

use thiserror::Error;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::event::{EventId, RoomId};
use crate::reconcile::{MAX_SYMBOLS_PER_MESSAGE, Message, Part, SYMBOL_BYTES, ShortId, Symbol};
use crate::wire::token::{ROOM_TOKEN_BYTES, RoomToken};

/// Frame format version this implementation speaks.
pub const WIRE_VERSION: u64 = 5;

/// Largest encoded frame in bytes (before link encryption and fragmentation).
/// Holds a full event batch, or the largest reconciliation message.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Most rooms in one list of a `Rooms`, `Offer` or `Members` frame.
pub const MAX_HELLO_ROOMS: usize = 1024;

/// Hello feature bit: the sender runs a copy budget and asks for the
/// member and spraying lists (`protocol-spec/wire.md`, "Copy budget").
pub const FEATURE_ROLES: u64 = 1;

/// Most event IDs in one announcement, want or graft frame (32 B each).
pub const MAX_IDS_PER_FRAME: usize = 1024;

/// Most events in one event batch frame.
pub const MAX_EVENTS_PER_FRAME: usize = 64;

/// Largest copy count a `Spray` frame may hand over with one event, and so
/// the largest per-event copy budget (`protocol-spec/wire.md`, "Copy
/// budget").
pub const MAX_COPY_BUDGET: u8 = 128;

/// Longest free-text detail in a close frame, in UTF-8 bytes.
pub const MAX_CLOSE_DETAIL_BYTES: usize = 128;

/// Deepest CBOR nesting of a frame (the frame array holding an event list).
pub const FRAME_MAX_DEPTH: usize = 2;

/// Most short IDs in each list of a reconciliation result.
pub const MAX_SHORT_IDS_PER_FRAME: usize = crate::reconcile::MAX_DIFFERENCES;

/// Why bytes were rejected as a frame.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes are not one canonical CBOR item of the frame schema.
    #[error("frame is not canonical CBOR: {0}")]
    Cbor(#[from] CborError),
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the maximum")]
    TooLarge(usize),
    /// The frame declares a protocol version this node does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u64),
    /// The type tag is not a known frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u64),
    /// The frame array has the wrong number of fields for its type.
    #[error("frame type {frame_type} has {got} fields")]
    FieldCount {
        /// The frame's type tag.
        frame_type: u64,
        /// How many array items it carried (version and type included).
        got: usize,
    },
    /// A list is longer than its limit.
    #[error("{what}: {got} items exceed the limit of {max}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// How many the frame carried.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A packed list's byte length is not a multiple of its element size,
    /// or a field is malformed in some other way.
    #[error("malformed field: {0}")]
    Malformed(&'static str),
}

/// Why a link is being closed, sent in a [`Frame::Close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CloseReason {
    /// Orderly shutdown.
    Normal,
    /// The peer sent an undecodable or invalid frame.
    ProtocolViolation,
    /// The peer exceeded its intake budget.
    OverBudget,
    /// No common protocol version.
    VersionMismatch,
    /// Any other code, kept for forward compatibility.
    Other(u64),
}

impl CloseReason {
    /// The numeric code on the wire.
    pub fn code(self) -> u64 {
        match self {
            CloseReason::Normal => 0,
            CloseReason::ProtocolViolation => 1,
            CloseReason::OverBudget => 2,
            CloseReason::VersionMismatch => 3,
            CloseReason::Other(c) => c,
        }
    }

    /// The reason for a numeric code.
    pub fn from_code(code: u64) -> Self {
        match code {
            0 => CloseReason::Normal,
            1 => CloseReason::ProtocolViolation,
            2 => CloseReason::OverBudget,
            3 => CloseReason::VersionMismatch,
            c => CloseReason::Other(c),
        }
    }
}

/// One frame. Type tags are listed in `protocol-spec/wire.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame on a link: capabilities (tag 0). It names no room: the
    /// rooms follow in `Rooms`, as tokens bound to both sides' nonces
    /// (`protocol-spec/wire.md`, "Room announcements").
    Hello {
        /// Largest frame this node accepts.
        max_frame_bytes: u64,
        /// Feature bits: [`FEATURE_ROLES`]; unknown bits are ignored.
        features: u64,
        /// Random, drawn afresh for each link: the side with the lower
        /// nonce initiates reconciliation sessions on this link, and both
        /// nonces key the link's room tokens.
        nonce: u64,
    },
    /// The rooms the sender announces on this link (tag 3), each as its
    /// [`RoomToken`] for the link, ascending, at most [`MAX_HELLO_ROOMS`]
    /// per list. Sent once per link: by the initiator after the peer's
    /// Hello, by the responder after the initiator's `Rooms`.
    Rooms {
        /// Rooms the sender holds events of or is a member of.
        held: Vec<RoomToken>,
        /// Of those, the rooms the sender is a member of; only to a peer
        /// whose Hello sets [`FEATURE_ROLES`] ("Copy budget"), else empty.
        members: Vec<RoomToken>,
        /// Of those, the rooms in which the sender would hand an event to a
        /// carrier; only to a peer that sets [`FEATURE_ROLES`].
        spraying: Vec<RoomToken>,
        /// The sender's device token for the link (`crate::wire::device_token`),
        /// so a holder of an invite for it recognises an invitee ("Invitees");
        /// only to a peer that sets [`FEATURE_ROLES`], else absent. Encoded
        /// as a byte string of [`ROOM_TOKEN_BYTES`] bytes, or of none.
        device: Option<RoomToken>,
    },
    /// Rooms the responder would hand the initiator that the initiator's
    /// `Rooms` did not list (tag 4), by room ID, ascending, 1 to
    /// [`MAX_HELLO_ROOMS`]: what a peer lacks cannot be named by a token it
    /// could recognise. Sent just before the responder's `Rooms`.
    Offer {
        /// The rooms.
        rooms: Vec<RoomId>,
    },
    /// The rooms the sender is a *member* of (tag 2), as tokens for this
    /// link, ascending, at most [`MAX_HELLO_ROOMS`]: a carrier hands
    /// carried events to a member whatever its copy budget. Sent, to a peer
    /// that sets [`FEATURE_ROLES`], when the set changes after `Rooms`;
    /// each one replaces the previous.
    Members {
        /// Own rooms.
        tokens: Vec<RoomToken>,
    },
    /// Last frame on a link (tag 1).
    Close {
        /// Machine-readable reason.
        reason: CloseReason,
        /// Human-readable detail, at most [`MAX_CLOSE_DETAIL_BYTES`].
        detail: String,
    },
    /// A reconciliation message of one session (tags 16..=22).
    Reconcile {
        /// Session number chosen by the initiator, unique per link.
        session: u64,
        /// The message.
        msg: Message,
    },
    /// A batch of encoded signed events of one room (tag 32).
    Events {
        /// The room.
        room: RoomId,
        /// Each element is `Event::bytes()`, checked by the event decoder.
        events: Vec<Vec<u8>>,
    },
    /// A batch of events of one room that hands over copies (tag 37): the
    /// receiver may pass event `i` on to `copies[i] - 1` further carriers
    /// (binary spray, `protocol-spec/wire.md`, "Copy budget").
    Spray {
        /// The room.
        room: RoomId,
        /// Copies handed over, one per event, each `1..=MAX_COPY_BUDGET`.
        copies: Vec<u8>,
        /// Each element is `Event::bytes()`, checked by the event decoder.
        events: Vec<Vec<u8>>,
    },
    /// Lazy push: "I have these events" (tag 33).
    IHave {
        /// The room.
        room: RoomId,
        /// Event IDs.
        ids: Vec<EventId>,
    },
    /// Request for events by ID (tag 34).
    Want {
        /// The room.
        room: RoomId,
        /// Event IDs.
        ids: Vec<EventId>,
    },
    /// Plumtree prune: stop eager push of this room to me (tag 35).
    Prune {
        /// The room.
        room: RoomId,
    },
    /// Plumtree graft: resume eager push and send these events (tag 36).
    Graft {
        /// The room.
        room: RoomId,
        /// Event IDs to send now.
        ids: Vec<EventId>,
    },
}

const T_HELLO: u64 = 0;
const T_CLOSE: u64 = 1;
const T_MEMBERS: u64 = 2;
const T_ROOMS: u64 = 3;
const T_OFFER: u64 = 4;
const T_R_INIT: u64 = 16;
const T_R_SKETCH: u64 = 17;
const T_R_SYMBOLS: u64 = 18;
const T_R_MORE: u64 = 19;
const T_R_EQUAL: u64 = 20;
const T_R_DECODED: u64 = 21;
const T_R_FAILED: u64 = 22;
/// `Init` over a slice of the room's set (`reconcile::Part`).
const T_R_INIT_PART: u64 = 23;
const T_EVENTS: u64 = 32;
const T_IHAVE: u64 = 33;
const T_WANT: u64 = 34;
const T_PRUNE: u64 = 35;
const T_GRAFT: u64 = 36;
const T_SPRAY: u64 = 37;

fn packed<const N: usize, T>(items: &[T], f: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * N);
    for it in items {
        out.extend_from_slice(&f(it));
    }
    out
}

fn unpack<const N: usize, T>(
    b: &[u8],
    max: usize,
    what: &'static str,
    f: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, FrameError> {
    if !b.len().is_multiple_of(N) {
        return Err(FrameError::Malformed(what));
    }
    let n = b.len() / N;
    if n > max {
        return Err(FrameError::TooMany { what, got: n, max });
    }
    Ok(b.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect())
}

/// An event list (`[bstr, …]`, at most [`MAX_EVENTS_PER_FRAME`]).
fn event_list(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, FrameError> {
    let k = r.array()?;
    if k > MAX_EVENTS_PER_FRAME {
        return Err(FrameError::TooMany {
            what: "events",
            got: k,
            max: MAX_EVENTS_PER_FRAME,
        });
    }
    let mut events = Vec::with_capacity(k);
    for _ in 0..k {
        events.push(r.bytes()?.to_vec());
    }
    Ok(events)
}

fn pack_ids(ids: &[EventId]) -> Vec<u8> {
    packed(ids, |i| i.0)
}

fn unpack_ids(b: &[u8]) -> Result<Vec<EventId>, FrameError> {
    unpack::<32, _>(b, MAX_IDS_PER_FRAME, "event IDs", EventId)
}

fn pack_short(ids: &[ShortId]) -> Vec<u8> {
    packed(ids, |i| i.to_be_bytes())
}

fn unpack_short(b: &[u8]) -> Result<Vec<ShortId>, FrameError> {
    unpack::<8, _>(b, MAX_SHORT_IDS_PER_FRAME, "short IDs", u64::from_be_bytes)
}

/// A token list: 4-byte tokens, strictly ascending (one encoding), at most
/// [`MAX_HELLO_ROOMS`].
fn tokens(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<RoomToken>, FrameError> {
    let t = unpack::<ROOM_TOKEN_BYTES, _>(r.bytes()?, MAX_HELLO_ROOMS, what, RoomToken)?;
    if !t.windows(2).all(|w| w[0] < w[1]) {
        return Err(FrameError::Malformed(what));
    }
    Ok(t)
}

/// A role list of `Rooms` as a bitmap over `held` (`protocol-spec/wire.md`,
/// frame table): bit `i` (byte `i / 8`, most significant bit first) is set
/// when `held[i]` is in `role`; trailing zero bytes are left out, so no role
/// is the empty string. Tokens of `role` not in `held` cannot be encoded
/// and are left out.
fn role_bitmap(held: &[RoomToken], role: &[RoomToken]) -> Vec<u8> {
    let mut bits = vec![0u8; held.len().div_ceil(8)];
    for (i, t) in held.iter().enumerate() {
        if role.binary_search(t).is_ok()
            && let Some(b) = bits.get_mut(i / 8)
        {
            *b |= 0x80 >> (i % 8);
        }
    }
    while bits.last() == Some(&0) {
        bits.pop();
    }
    bits
}

/// The tokens of `held` a role bitmap sets; one encoding only: no trailing
/// zero byte, no bit past `held`.
fn role_tokens(
    bits: &[u8],
    held: &[RoomToken],
    what: &'static str,
) -> Result<Vec<RoomToken>, FrameError> {
    if bits.len() > held.len().div_ceil(8) || bits.last() == Some(&0) {
        return Err(FrameError::Malformed(what));
    }
    let mut out = Vec::new();
    for (byte_index, byte) in bits.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) == 0 {
                continue;
            }
            match held.get(byte_index * 8 + bit) {
                Some(t) => out.push(*t),
                None => return Err(FrameError::Malformed(what)),
            }
        }
    }
    Ok(out)
}

impl Frame {
    /// The type tag this frame is encoded with.
    pub fn type_tag(&self) -> u64 {
        match self {
            Frame::Hello { .. } => T_HELLO,
            Frame::Close { .. } => T_CLOSE,
            Frame::Members { .. } => T_MEMBERS,
            Frame::Rooms { .. } => T_ROOMS,
            Frame::Offer { .. } => T_OFFER,
            Frame::Reconcile { msg, .. } => match msg {
                Message::Init { part, .. } if *part != Part::WHOLE => T_R_INIT_PART,
                Message::Init { .. } => T_R_INIT,
                Message::Sketch { .. } => T_R_SKETCH,
                Message::Symbols { .. } => T_R_SYMBOLS,
                Message::More { .. } => T_R_MORE,
                Message::Equal => T_R_EQUAL,
                Message::Decoded { .. } => T_R_DECODED,
                Message::Failed { .. } => T_R_FAILED,
            },
            Frame::Events { .. } => T_EVENTS,
            Frame::Spray { .. } => T_SPRAY,
            Frame::IHave { .. } => T_IHAVE,
            Frame::Want { .. } => T_WANT,
            Frame::Prune { .. } => T_PRUNE,
            Frame::Graft { .. } => T_GRAFT,
        }
    }

    /// The canonical encoding. A frame built by this crate within the
    /// limits encodes to at most [`MAX_FRAME_BYTES`]; callers building
    /// batches split them by those limits.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let head = |w: &mut Writer, n: usize, t: u64| {
            w.array(n + 2).u64(WIRE_VERSION).u64(t);
        };
        let t = self.type_tag();
        match self {
            Frame::Hello {
                max_frame_bytes,
                features,
                nonce,
            } => {
                head(&mut w, 3, t);
                w.u64(*max_frame_bytes).u64(*features).u64(*nonce);
            }
            Frame::Rooms {
                held,
                members,
                spraying,
                device,
            } => {
                head(&mut w, 4, t);
                w.bytes(&packed(held, |r| r.0))
                    .bytes(&role_bitmap(held, members))
                    .bytes(&role_bitmap(held, spraying))
                    .bytes(device.as_ref().map_or(&[][..], |d| &d.0[..]));
            }
            Frame::Offer { rooms } => {
                head(&mut w, 1, t);
                w.bytes(&packed(rooms, |r| r.0));
            }
            Frame::Members { tokens } => {
                head(&mut w, 1, t);
                w.bytes(&packed(tokens, |r| r.0));
            }
            Frame::Close { reason, detail } => {
                head(&mut w, 2, t);
                w.u64(reason.code()).text(detail);
            }
            Frame::Reconcile { session, msg } => match msg {
                Message::Init {
                    room,
                    part,
                    salt,
                    count,
                    fingerprint,
                } => {
                    if *part == Part::WHOLE {
                        head(&mut w, 5, t);
                        w.u64(*session).bytes(&room.0);
                    } else {
                        head(&mut w, 6, t);
                        w.u64(*session).bytes(&room.0).u64(part.to_u64());
                    }
                    w.bytes(salt).u64(*count).bytes(fingerprint);
                }
                Message::Sketch { count, counters } => {
                    head(&mut w, 3, t);
                    w.u64(*session)
                        .u64(*count)
                        .bytes(&packed(counters, |c| c.to_be_bytes()));
                }
                Message::Symbols { start, symbols } => {
                    head(&mut w, 3, t);
                    w.u64(*session)
                        .u64(*start)
                        .bytes(&packed(symbols, Symbol::to_bytes));
                }
                Message::More { count } => {
                    head(&mut w, 2, t);
                    w.u64(*session).u64(*count);
                }
                Message::Equal => {
                    head(&mut w, 1, t);
                    w.u64(*session);
                }
                Message::Decoded { you_lack, i_lack } => {
                    head(&mut w, 3, t);
                    w.u64(*session)
                        .bytes(&pack_short(you_lack))
                        .bytes(&pack_short(i_lack));
                }
                Message::Failed { reason } => {
                    head(&mut w, 2, t);
                    w.u64(*session).u64(*reason);
                }
            },
            Frame::Events { room, events } => {
                head(&mut w, 2, t);
                w.bytes(&room.0).array(events.len());
                for e in events {
                    w.bytes(e);
                }
            }
            Frame::Spray {
                room,
                copies,
                events,
            } => {
                head(&mut w, 3, t);
                w.bytes(&room.0).bytes(copies).array(events.len());
                for e in events {
                    w.bytes(e);
                }
            }
            Frame::IHave { room, ids } | Frame::Want { room, ids } | Frame::Graft { room, ids } => {
                head(&mut w, 2, t);
                w.bytes(&room.0).bytes(&pack_ids(ids));
            }
            Frame::Prune { room } => {
                head(&mut w, 1, t);
                w.bytes(&room.0);
            }
        }
        w.into_bytes()
    }

    /// Decodes one frame, rejecting anything [`Frame::encode`] would not
    /// produce. Never panics and never allocates more than the input size.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        cbor::validate(bytes, FRAME_MAX_DEPTH)?;
        let mut r = Reader::new(bytes);
        let n = r.array()?;
        if n < 2 {
            return Err(FrameError::Malformed("frame array shorter than its header"));
        }
        let version = r.u64()?;
        if version != WIRE_VERSION {
            return Err(FrameError::UnsupportedVersion(version));
        }
        let t = r.u64()?;
        let fields = match t {
            T_HELLO => 3,
            T_ROOMS => 4,
            T_CLOSE => 2,
            T_MEMBERS | T_OFFER => 1,
            T_R_INIT => 5,
            T_R_INIT_PART => 6,
            T_R_SKETCH | T_R_SYMBOLS | T_R_DECODED => 3,
            T_R_MORE | T_R_FAILED => 2,
            T_R_EQUAL => 1,
            T_EVENTS | T_IHAVE | T_WANT | T_GRAFT => 2,
            T_PRUNE => 1,
            T_SPRAY => 3,
            other => return Err(FrameError::UnknownType(other)),
        };
        if n != fields + 2 {
            return Err(FrameError::FieldCount {
                frame_type: t,
                got: n,
            });
        }
        let room = |r: &mut Reader<'_>| -> Result<RoomId, FrameError> {
            Ok(RoomId(r.byte_array::<16>("16-byte room ID")?))
        };
        let frame = match t {
            T_HELLO => Frame::Hello {
                max_frame_bytes: r.u64()?,
                features: r.u64()?,
                nonce: r.u64()?,
            },
            T_ROOMS => {
                let held = tokens(&mut r, "held room tokens")?;
                let members = role_tokens(r.bytes()?, &held, "member role bitmap")?;
                let spraying = role_tokens(r.bytes()?, &held, "spraying role bitmap")?;
                let device = match r.bytes()? {
                    [] => None,
                    b => Some(RoomToken(b.try_into().map_err(|_| {
                        FrameError::Malformed("device token of neither 0 nor 4 bytes")
                    })?)),
                };
                Frame::Rooms {
                    held,
                    members,
                    spraying,
                    device,
                }
            }
            T_OFFER => {
                let rooms = unpack::<16, _>(r.bytes()?, MAX_HELLO_ROOMS, "offered rooms", RoomId)?;
                if rooms.is_empty() || !rooms.windows(2).all(|w| w[0] < w[1]) {
                    return Err(FrameError::Malformed("offered rooms not ascending"));
                }
                Frame::Offer { rooms }
            }
            T_MEMBERS => Frame::Members {
                tokens: tokens(&mut r, "member room tokens")?,
            },
            T_CLOSE => {
                let reason = CloseReason::from_code(r.u64()?);
                let detail = r.text()?;
                if detail.len() > MAX_CLOSE_DETAIL_BYTES {
                    return Err(FrameError::TooMany {
                        what: "close detail bytes",
                        got: detail.len(),
                        max: MAX_CLOSE_DETAIL_BYTES,
                    });
                }
                Frame::Close {
                    reason,
                    detail: detail.to_owned(),
                }
            }
            T_R_INIT..=T_R_INIT_PART => {
                let session = r.u64()?;
                let msg = match t {
                    T_R_INIT | T_R_INIT_PART => Message::Init {
                        room: room(&mut r)?,
                        part: if t == T_R_INIT {
                            Part::WHOLE
                        } else {
                            Part::from_u64(r.u64()?)
                                .ok_or(FrameError::Malformed("reconciliation part out of range"))?
                        },
                        salt: r.byte_array::<8>("8-byte salt")?,
                        count: r.u64()?,
                        fingerprint: r.byte_array::<16>("16-byte fingerprint")?,
                    },
                    T_R_SKETCH => Message::Sketch {
                        count: r.u64()?,
                        counters: unpack::<2, _>(
                            r.bytes()?,
                            crate::reconcile::SKETCH_COUNTERS,
                            "sketch counters",
                            u16::from_be_bytes,
                        )?,
                    },
                    T_R_SYMBOLS => Message::Symbols {
                        start: r.u64()?,
                        symbols: unpack::<SYMBOL_BYTES, _>(
                            r.bytes()?,
                            MAX_SYMBOLS_PER_MESSAGE,
                            "coded symbols",
                            Symbol::from_bytes,
                        )?,
                    },
                    T_R_MORE => Message::More { count: r.u64()? },
                    T_R_EQUAL => Message::Equal,
                    T_R_DECODED => Message::Decoded {
                        you_lack: unpack_short(r.bytes()?)?,
                        i_lack: unpack_short(r.bytes()?)?,
                    },
                    _ => Message::Failed { reason: r.u64()? },
                };
                Frame::Reconcile { session, msg }
            }
            T_EVENTS => {
                let room = room(&mut r)?;
                let events = event_list(&mut r)?;
                Frame::Events { room, events }
            }
            T_SPRAY => {
                let room = room(&mut r)?;
                let copies = r.bytes()?;
                if copies.len() > MAX_EVENTS_PER_FRAME {
                    return Err(FrameError::TooMany {
                        what: "copy counts",
                        got: copies.len(),
                        max: MAX_EVENTS_PER_FRAME,
                    });
                }
                if copies.iter().any(|c| *c == 0 || *c > MAX_COPY_BUDGET) {
                    return Err(FrameError::Malformed("copy count out of range"));
                }
                let copies = copies.to_vec();
                let events = event_list(&mut r)?;
                if events.len() != copies.len() {
                    return Err(FrameError::Malformed("one copy count per event"));
                }
                Frame::Spray {
                    room,
                    copies,
                    events,
                }
            }
            T_IHAVE | T_WANT | T_GRAFT => {
                let room = room(&mut r)?;
                let ids = unpack_ids(r.bytes()?)?;
                match t {
                    T_IHAVE => Frame::IHave { room, ids },
                    T_WANT => Frame::Want { room, ids },
                    _ => Frame::Graft { room, ids },
                }
            }
            _ => Frame::Prune {
                room: room(&mut r)?,
            },
        };
        r.finish()?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::Symbol;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn room() -> impl Strategy<Value = RoomId> {
        any::<[u8; 16]>().prop_map(RoomId)
    }

    fn tokens(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<RoomToken>> {
        vec(any::<[u8; ROOM_TOKEN_BYTES]>().prop_map(RoomToken), n).prop_map(|mut t| {
            t.sort();
            t.dedup();
            t
        })
    }

    fn ids() -> impl Strategy<Value = Vec<EventId>> {
        vec(any::<[u8; 32]>().prop_map(EventId), 0..20)
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (room(), any::<[u8; 8]>(), any::<u64>(), any::<[u8; 16]>()).prop_map(
                |(room, salt, count, fingerprint)| Message::Init {
                    room,
                    // Any slice, or the whole set, derived from `count`.
                    part: Part::from_u64(((count % 9) << 32) | ((count >> 8) % (1 << (count % 9))))
                        .unwrap_or(Part::WHOLE),
                    salt,
                    count,
                    fingerprint
                }
            ),
            (any::<u64>(), vec(any::<u16>(), 0..48))
                .prop_map(|(count, counters)| Message::Sketch { count, counters }),
            (
                any::<u64>(),
                vec((any::<u64>(), any::<u32>()), 0..50).prop_map(|v| v
                    .into_iter()
                    .map(|(key, check)| Symbol { key, check })
                    .collect())
            )
                .prop_map(|(start, symbols)| Message::Symbols { start, symbols }),
            any::<u64>().prop_map(|count| Message::More { count }),
            Just(Message::Equal),
            (vec(any::<u64>(), 0..30), vec(any::<u64>(), 0..30))
                .prop_map(|(you_lack, i_lack)| Message::Decoded { you_lack, i_lack }),
            any::<u64>().prop_map(|reason| Message::Failed { reason }),
        ]
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(max_frame_bytes, features, nonce)| Frame::Hello {
                    max_frame_bytes,
                    features,
                    nonce,
                }
            ),
            (
                tokens(0..14),
                any::<u16>(),
                any::<u16>(),
                proptest::option::of(any::<[u8; ROOM_TOKEN_BYTES]>())
            )
                .prop_map(|(held, m, sp, device)| {
                    // Roles are subsets of the held tokens (bitmaps of
                    // one or two bytes).
                    let pick = |mask: u16| {
                        held.iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0)
                            .map(|(_, t)| *t)
                            .collect()
                    };
                    Frame::Rooms {
                        members: pick(m),
                        spraying: pick(sp),
                        held,
                        device: device.map(RoomToken),
                    }
                }),
            vec(room(), 1..5).prop_map(|mut rooms| {
                rooms.sort();
                rooms.dedup();
                Frame::Offer { rooms }
            }),
            tokens(0..5).prop_map(|tokens| Frame::Members { tokens }),
            (
                room(),
                vec((1..=MAX_COPY_BUDGET, vec(any::<u8>(), 0..300)), 0..8)
            )
                .prop_map(|(room, v)| {
                    let (copies, events) = v.into_iter().unzip();
                    Frame::Spray {
                        room,
                        copies,
                        events,
                    }
                }),
            (any::<u64>(), "[a-z ]{0,40}").prop_map(|(c, detail)| Frame::Close {
                reason: CloseReason::from_code(c),
                detail
            }),
            (any::<u64>(), message()).prop_map(|(session, msg)| Frame::Reconcile { session, msg }),
            (room(), vec(vec(any::<u8>(), 0..300), 0..8))
                .prop_map(|(room, events)| Frame::Events { room, events }),
            (room(), ids()).prop_map(|(room, ids)| Frame::IHave { room, ids }),
            (room(), ids()).prop_map(|(room, ids)| Frame::Want { room, ids }),
            room().prop_map(|room| Frame::Prune { room }),
            (room(), ids()).prop_map(|(room, ids)| Frame::Graft { room, ids }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(f in frame()) {
            let bytes = f.encode();
            prop_assert!(bytes.len() <= MAX_FRAME_BYTES);
            prop_assert_eq!(Frame::decode(&bytes), Ok(f));
            prop_assert!(crate::wire::fuzz_frame(&bytes).is_some());
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in vec(any::<u8>(), 0..200)) {
            if let Ok(f) = Frame::decode(&b) {
                prop_assert_eq!(f.encode(), b);
            }
        }

        #[test]
        fn truncations_are_rejected(f in frame(), cut in any::<prop::sample::Index>()) {
            let bytes = f.encode();
            let at = cut.index(bytes.len());
            prop_assert!(Frame::decode(&bytes[..at]).is_err());
        }
    }

    fn raw(items: impl FnOnce(&mut Writer)) -> Vec<u8> {
        let mut w = Writer::new();
        items(&mut w);
        w.into_bytes()
    }

    #[test]
    fn rejects_other_versions_types_and_shapes() {
        // Version 1 (room IDs in clear in the Hello) and a later one.
        for v in [1, WIRE_VERSION + 1] {
            let other = raw(|w| {
                w.array(3).u64(v).u64(T_PRUNE).bytes(&[0; 16]);
            });
            assert_eq!(
                Frame::decode(&other),
                Err(FrameError::UnsupportedVersion(v))
            );
        }
        let unknown = raw(|w| {
            w.array(2).u64(WIRE_VERSION).u64(99);
        });
        assert_eq!(Frame::decode(&unknown), Err(FrameError::UnknownType(99)));
        let short = raw(|w| {
            w.array(2).u64(WIRE_VERSION).u64(T_PRUNE);
        });
        assert!(matches!(
            Frame::decode(&short),
            Err(FrameError::FieldCount { .. })
        ));
        let ragged = raw(|w| {
            w.array(4)
                .u64(WIRE_VERSION)
                .u64(T_WANT)
                .bytes(&[0; 16])
                .bytes(&[0; 33]);
        });
        assert!(matches!(
            Frame::decode(&ragged),
            Err(FrameError::Malformed(_))
        ));
        let too_many = raw(|w| {
            w.array(4)
                .u64(WIRE_VERSION)
                .u64(T_IHAVE)
                .bytes(&[0; 16])
                .bytes(&vec![0; 32 * (MAX_IDS_PER_FRAME + 1)]);
        });
        assert!(matches!(
            Frame::decode(&too_many),
            Err(FrameError::TooMany { .. })
        ));
        let huge = vec![0u8; MAX_FRAME_BYTES + 1];
        assert_eq!(
            Frame::decode(&huge),
            Err(FrameError::TooLarge(MAX_FRAME_BYTES + 1))
        );
        let deep = raw(|w| {
            w.array(4)
                .u64(WIRE_VERSION)
                .u64(T_EVENTS)
                .bytes(&[0; 16])
                .array(1)
                .array(0);
        });
        assert!(matches!(Frame::decode(&deep), Err(FrameError::Cbor(_))));
    }

    #[test]
    fn announcements_have_one_encoding() {
        let t = |b: u8| RoomToken([b; 4]);
        let rooms = |held: Vec<RoomToken>, members: Vec<RoomToken>| {
            Frame::Rooms {
                held,
                members,
                spraying: vec![],
                device: None,
            }
            .encode()
        };
        assert!(Frame::decode(&rooms(vec![t(1), t(2)], vec![t(2)])).is_ok());
        // The device token is 4 bytes or none.
        let mut with_device = Frame::Rooms {
            held: vec![],
            members: vec![],
            spraying: vec![],
            device: Some(t(9)),
        }
        .encode();
        assert!(Frame::decode(&with_device).is_ok());
        let n = with_device.len();
        with_device[n - 5] = 0x43; // a 3-byte string, then a stray byte
        assert!(Frame::decode(&with_device).is_err());
        // Roles are a bitmap over the held tokens: nine held, the first
        // and the ninth members.
        let nine: Vec<RoomToken> = (1..=9).map(t).collect();
        let enc = rooms(nine.clone(), vec![t(1), t(9)]);
        let bitmap = |bits: &[u8]| {
            raw(|w| {
                w.array(6)
                    .u64(WIRE_VERSION)
                    .u64(T_ROOMS)
                    .bytes(&packed(&nine, |r| r.0))
                    .bytes(bits)
                    .bytes(&[])
                    .bytes(&[]);
            })
        };
        assert_eq!(enc, bitmap(&[0x80, 0x80]));
        assert!(matches!(
            Frame::decode(&enc),
            Ok(Frame::Rooms { members, .. }) if members == [t(1), t(9)]
        ));
        // A role naming a token not held is not encoded.
        assert_eq!(rooms(vec![t(1)], vec![t(2)]), rooms(vec![t(1)], vec![]));
        for bad in [
            rooms(vec![t(2), t(1)], vec![]),
            rooms(vec![t(1), t(1)], vec![]),
            // a trailing zero byte (no role is the empty string)
            bitmap(&[0x80, 0x00]),
            bitmap(&[0x00]),
            // a bit past the ninth held token, and a byte past them all
            bitmap(&[0x80, 0x40]),
            bitmap(&[0x80, 0x80, 0x80]),
        ] {
            assert!(
                matches!(Frame::decode(&bad), Err(FrameError::Malformed(_))),
                "{bad:02x?}"
            );
        }
        let offer = |rooms: Vec<RoomId>| Frame::Offer { rooms }.encode();
        let r = |b: u8| RoomId([b; 16]);
        assert!(Frame::decode(&offer(vec![r(1), r(2)])).is_ok());
        for bad in [
            offer(vec![]),
            offer(vec![r(2), r(1)]),
            offer(vec![r(1), r(1)]),
        ] {
            assert!(matches!(Frame::decode(&bad), Err(FrameError::Malformed(_))));
        }
        // A token list whose length is not a multiple of 8.
        let odd = raw(|w| {
            w.array(3).u64(WIRE_VERSION).u64(T_MEMBERS).bytes(&[0; 9]);
        });
        assert!(matches!(Frame::decode(&odd), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn spray_copy_counts_are_strict() {
        let spray = |copies: &[u8], events: usize| {
            raw(|w| {
                w.array(5)
                    .u64(WIRE_VERSION)
                    .u64(T_SPRAY)
                    .bytes(&[0; 16])
                    .bytes(copies)
                    .array(events);
                for _ in 0..events {
                    w.bytes(b"e");
                }
            })
        };
        assert!(Frame::decode(&spray(&[1, MAX_COPY_BUDGET], 2)).is_ok());
        for (copies, events) in [
            (&[0u8][..], 1),
            (&[MAX_COPY_BUDGET + 1][..], 1),
            (&[2, 2][..], 1),
            (&[2][..], 2),
        ] {
            assert!(
                matches!(
                    Frame::decode(&spray(copies, events)),
                    Err(FrameError::Malformed(_))
                ),
                "{copies:?} with {events} events"
            );
        }
        let many = vec![2u8; MAX_EVENTS_PER_FRAME + 1];
        assert!(matches!(
            Frame::decode(&spray(&many, 0)),
            Err(FrameError::TooMany { .. })
        ));
        let members = raw(|w| {
            w.array(3).u64(WIRE_VERSION).u64(T_MEMBERS).bytes(&vec![
                0;
                ROOM_TOKEN_BYTES
                    * (MAX_HELLO_ROOMS + 1)
            ]);
        });
        assert!(matches!(
            Frame::decode(&members),
            Err(FrameError::TooMany { .. })
        ));
    }

    #[test]
    fn identical_set_check_fits_64_bytes() {
        let init = Frame::Reconcile {
            session: 1,
            msg: Message::Init {
                room: RoomId([9; 16]),
                part: Part::WHOLE,
                salt: [1; 8],
                count: 100_000,
                fingerprint: [2; 16],
            },
        };
        let eq = Frame::Reconcile {
            session: 1,
            msg: Message::Equal,
        };
        // One byte of whole-packet header each.
        assert!(init.encode().len() + eq.encode().len() + 2 <= 64);
    }
}
