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

use super::{OkData, Op, Reply};
use crate::app::{AppError, Device, MessageLine};
use crate::crypto::DeviceId;
use crate::event::RoomId;
use crate::store::Store;

/// What an operation produced: streamed lines (`messages`) and the final
/// data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Lines sent before the final reply, in order.
    pub lines: Vec<MessageLine>,
    /// The final reply's data.
    pub ok: OkData,
}

impl Answer {
    /// An answer without lines.
    pub fn data(ok: OkData) -> Self {
        Answer {
            lines: Vec::new(),
            ok,
        }
    }

    /// The reply lines: each streamed line, then the final `ok`.
    pub fn into_replies(self) -> Vec<Reply> {
        let mut v: Vec<Reply> = self.lines.into_iter().map(Reply::line).collect();
        v.push(Reply::ok(self.ok));
        v
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
            event(dev.room_invite(&parse_room(room)?, contact, now, rng)?)
        }
        Op::RoomRemove { room, device } => {
            event(dev.room_remove(&parse_room(room)?, &parse_device(device)?, now, rng)?)
        }
        Op::RoomPromote { room, device } => {
            event(dev.room_promote(&parse_room(room)?, &parse_device(device)?, now, rng)?)
        }
        Op::RoomDemote { room, device } => {
            event(dev.room_demote(&parse_room(room)?, &parse_device(device)?, now, rng)?)
        }
        Op::RoomLeave { room } => event(dev.room_leave(&parse_room(room)?, now, rng)?),
        Op::RoomRepair { room } => Answer::data(OkData::Repair {
            repair: dev.room_repair(&parse_room(room)?)?,
        }),
        Op::Rooms => Answer::data(OkData::Rooms {
            rooms: dev.rooms()?,
        }),
        Op::Send { room, text } => event(dev.send(&parse_room(room)?, text, now, rng)?),
        Op::Messages { room } => {
            let lines = dev.messages(&parse_room(room)?)?;
            Answer {
                ok: OkData::Lines { lines: lines.len() },
                lines,
            }
        }
        Op::Export { room } => {
            let room = room.as_deref().map(parse_room).transpose()?;
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
