//! Runs one control operation on an open device (`protocol-spec/daemon.md`,
//! "Control API").
//!
//! The daemon calls [`execute`] on a [`Device`] over its node's store (in
//! deferred mode, so the node stores and relays the new events and the
//! reply waits for the commit); the CLI calls it on its own [`Device`]
//! when no daemon runs. Both then hold the same typed [`Answer`], so a
//! client formats one thing whichever path served it.

use data_encoding::BASE64;
use rand_core::CryptoRng;

use super::{FileData, OkData, Op, Reply, SentFile};
use crate::app::{AppError, Device, Draft, FileDraft, MessageLine, ReadMarks, RoomInfo};
use crate::crypto::DeviceId;
use crate::event::RoomId;
use crate::room::attachment::CHUNK_BYTES;
use crate::safe_text;
use crate::store::Store;

/// What an operation produced: streamed lines (`messages`) and the final
/// data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Lines sent before the final reply, in order.
    pub lines: Vec<MessageLine>,
    /// The final reply's data.
    pub ok: OkData,
    /// What a person was shown of a room (`messages`): the read marks a
    /// read receipt carries (`protocol-spec/rooms.md` §9).
    pub read: Option<(RoomId, ReadMarks)>,
}

impl Answer {
    /// An answer without lines.
    pub fn data(ok: OkData) -> Self {
        Answer {
            lines: Vec::new(),
            ok,
            read: None,
        }
    }

    /// The reply lines: each streamed line, then the final `ok`.
    pub fn into_replies(self) -> Vec<Reply> {
        let mut v: Vec<Reply> = self.lines.into_iter().map(Reply::line).collect();
        v.push(Reply::ok(self.ok));
        v
    }
}

/// Shortest ID prefix a room argument matches by (`protocol-spec/daemon.md`,
/// "Room arguments"): fewer hex digits match too many rooms to be useful.
pub const MIN_ROOM_PREFIX: usize = 4;

/// Most candidates an ambiguous room argument's error lists.
pub const MAX_ROOM_CANDIDATES: usize = 10;

/// The room a room argument names among `rooms` (`protocol-spec/daemon.md`,
/// "Room arguments"): a full room ID; else the rooms named exactly `arg`
/// together with those whose ID starts with `arg` (at least
/// [`MIN_ROOM_PREFIX`] hex digits, any case). One room: that room; none or
/// several: a `bad_input` error (several are listed, escaped).
pub fn resolve_among(arg: &str, rooms: &[RoomInfo]) -> Result<RoomId, AppError> {
    if let Ok(id) = parse_room(arg) {
        return Ok(id);
    }
    let prefix = arg.trim().to_ascii_lowercase();
    let by_prefix =
        prefix.len() >= MIN_ROOM_PREFIX && prefix.bytes().all(|b| b.is_ascii_hexdigit());
    let found: Vec<&RoomInfo> = rooms
        .iter()
        .filter(|r| r.name == arg || (by_prefix && r.room_id.starts_with(&prefix)))
        .collect();
    let shown = safe_text::for_terminal(arg);
    match found.as_slice() {
        [one] => parse_room(&one.room_id),
        [] => Err(AppError::BadInput(format!(
            "no room of this device is named {shown:.80} or has an ID starting with it"
        ))),
        many => {
            let list: Vec<String> = many
                .iter()
                .take(MAX_ROOM_CANDIDATES)
                .map(|r| format!("{} ({})", r.room_id, safe_text::for_terminal(&r.name)))
                .collect();
            let more = many.len().saturating_sub(MAX_ROOM_CANDIDATES);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            Err(AppError::BadInput(format!(
                "{shown:.80} names {} rooms; give one of their IDs: {}{more}",
                many.len(),
                list.join(", ")
            )))
        }
    }
}

/// The room a room argument names among `dev`'s rooms ([`resolve_among`]);
/// the rooms are read only when `arg` is not a full room ID.
pub fn resolve_room<S: Store>(dev: &mut Device<S>, arg: &str) -> Result<RoomId, AppError> {
    match parse_room(arg) {
        Ok(id) => Ok(id),
        Err(_) => resolve_among(arg, &dev.rooms()?),
    }
}

/// Parses a room ID field.
pub fn parse_room(s: &str) -> Result<RoomId, AppError> {
    s.trim()
        .parse()
        .map_err(|e| AppError::BadInput(format!("ROOM_ID {s:.40}: {e}")))
}

/// Parses a device ID field.
pub fn parse_device(s: &str) -> Result<DeviceId, AppError> {
    s.trim()
        .parse()
        .map_err(|e| AppError::BadInput(format!("DEVICE_ID {s:.60}: {e}")))
}

/// Decodes the base64 bundle of an `import`.
pub fn decode_bundle(b64: &str) -> Result<Vec<u8>, AppError> {
    BASE64
        .decode(b64.as_bytes())
        .map_err(|e| AppError::BadInput(format!("input: {e}")))
}

/// Runs `op` on `dev`. `follow`, `status`, `peers` and `shutdown` concern
/// the daemon itself and are refused here (`BadInput`).
pub fn execute<S: Store, R: CryptoRng + ?Sized>(
    op: &Op,
    dev: &mut Device<S>,
    now: u64,
    rng: &mut R,
) -> Result<Answer, AppError> {
    let event = |id: crate::event::EventId| {
        Answer::data(OkData::Event {
            event_id: id.to_string(),
        })
    };
    Ok(match op {
        Op::RoomCreate { name } => Answer::data(OkData::Room {
            room_id: dev.room_create(name, now, rng)?.to_string(),
        }),
        Op::RoomInvite { room, contact } => {
            let room = resolve_room(dev, room)?;
            event(dev.room_invite(&room, contact, now, rng)?)
        }
        Op::RoomRemove { room, device } => {
            let room = resolve_room(dev, room)?;
            event(dev.room_remove(&room, &parse_device(device)?, now, rng)?)
        }
        Op::RoomPromote { room, device } => {
            let room = resolve_room(dev, room)?;
            event(dev.room_promote(&room, &parse_device(device)?, now, rng)?)
        }
        Op::RoomDemote { room, device } => {
            let room = resolve_room(dev, room)?;
            event(dev.room_demote(&room, &parse_device(device)?, now, rng)?)
        }
        Op::RoomLeave { room } => {
            let room = resolve_room(dev, room)?;
            event(dev.room_leave(&room, now, rng)?)
        }
        Op::RoomRename { room, name } => {
            let room = resolve_room(dev, room)?;
            event(dev.room_rename(&room, name, now, rng)?)
        }
        Op::RoomRepair { room } => {
            let room = resolve_room(dev, room)?;
            Answer::data(OkData::Repair {
                repair: dev.room_repair(&room)?,
            })
        }
        Op::Rooms => Answer::data(OkData::Rooms {
            rooms: dev.rooms()?,
        }),
        Op::Send {
            room,
            text,
            via,
            location,
            urgent,
            file,
        } => {
            let bytes = file
                .as_ref()
                .map(|f| {
                    BASE64
                        .decode(f.data.as_bytes())
                        .map_err(|e| AppError::BadInput(format!("file data: {e}")))
                })
                .transpose()?;
            let draft = Draft {
                text,
                via: via.as_ref(),
                location: location.as_ref(),
                urgent: *urgent,
                file: file.as_ref().zip(bytes.as_deref()).map(|(f, b)| FileDraft {
                    name: &f.name,
                    media_type: &f.media_type,
                    bytes: b,
                }),
            };
            let room = resolve_room(dev, room)?;
            let id = dev.send_draft(&room, &draft, now, rng)?;
            match draft.file {
                Some(f) => Answer::data(OkData::Sent {
                    event_id: id.to_string(),
                    attachment: SentFile {
                        size: f.bytes.len() as u64,
                        chunks: (f.bytes.len() as u64).div_ceil(CHUNK_BYTES as u64),
                    },
                }),
                None => event(id),
            }
        }
        Op::Save { event, path } => {
            let id: crate::event::EventId = event
                .trim()
                .parse()
                .map_err(|e| AppError::BadInput(format!("EVENT_ID {event:.70}: {e}")))?;
            let (a, bytes) = dev.save_attachment(&id, path.as_deref())?;
            Answer::data(OkData::File {
                file: FileData {
                    name: a.name.clone(),
                    media_type: a.media_type.clone(),
                    data: BASE64.encode(&bytes),
                },
            })
        }
        Op::Messages {
            room,
            last,
            mark_read,
        } => {
            let room = resolve_room(dev, room)?;
            let (lines, marks) = dev.messages_view(&room, *last)?;
            Answer {
                ok: OkData::Lines { lines: lines.len() },
                lines,
                read: mark_read.then_some((room, marks)),
            }
        }
        Op::Export { room } => {
            let room = room.as_deref().map(|r| resolve_room(dev, r)).transpose()?;
            Answer::data(OkData::Bundle {
                bundle: BASE64.encode(&dev.export(room.as_ref(), now)?),
            })
        }
        Op::Import { bundle } => Answer::data(OkData::Import {
            import: Box::new(dev.import(&decode_bundle(bundle)?, now)?),
        }),
        Op::PrekeyRotate => Answer::data(OkData::Prekey {
            prekey: dev.rotate_prekey(now, rng)?,
        }),
        Op::Follow { .. } | Op::Status | Op::Peers | Op::Shutdown => {
            return Err(AppError::BadInput(
                "this operation is served by the daemon only".into(),
            ));
        }
    })
}
