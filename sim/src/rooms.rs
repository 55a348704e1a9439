//! Real rooms on [`SimNet`]: rooms created, joined and written to through
//! the device core's typed control operations (`protocol-spec/daemon.md`,
//! "Control API"), exactly as the CLI drives a daemon.
//!
//! * [`SimNet::room_create`] runs `Op::RoomCreate` on a node: it becomes the
//!   room's first admin and its core carries the room.
//! * [`SimNet::room_invite`] runs `Op::RoomInvite` with the invitee's
//!   contact card text. The invite is an event like any other: the invitee
//!   learns it is a member only when the invite reaches it through the mesh
//!   (its rooms layer finds its key share, and its core then carries the
//!   room with its real members, `rooms.md` "Admission").
//! * [`SimNet::send_text`] runs `Op::Send`: the text is encrypted with the
//!   sender's chain and published through its node.
//! * [`SimNet::shown`] reads what a node shows (`DeviceCore::messages`):
//!   delivery in this mode is a message line with the text, decrypted by
//!   the member, not an event in a store.
//!
//! Each operation runs between cycles, as the daemon runs it: the node's
//! staged writes are committed first, then the operation, then a cycle
//! releases its reply.

use meshrelay::app::MessageLine;
use meshrelay::control::{ApiError, OkData, Op, ReplyBody};
use std::ops::Bound;

use meshrelay::crypto::DeviceId;
use meshrelay::event::{Event, EventId, EventKind, RoomId};
use meshrelay::store::{EventStore, MAX_LIST_LIMIT};
use thiserror::Error;

use crate::net::SimNet;

/// Why a room operation failed.
#[derive(Debug, Error)]
pub enum RoomOpError {
    /// The core answered with an error (not a member, unknown room, ...).
    #[error("operation refused: {0}")]
    Api(#[from] ApiError),
    /// The core's answer was not the shape this operation returns.
    #[error("unexpected reply: {0}")]
    Reply(String),
    /// The rooms layer could not read the room.
    #[error("reading the room: {0}")]
    App(String),
}

impl SimNet {
    /// Runs one typed operation on node `i` now and returns its final
    /// reply's data.
    pub fn op(&mut self, i: usize, op: &Op) -> Result<OkData, RoomOpError> {
        // Operations run with nothing staged (the daemon runs a cycle
        // between inputs).
        self.settle(i);
        self.next_op += 1;
        let id = self.next_op;
        let now_ms = self.now_ms();
        self.nodes[i]
            .core
            .handle_op(now_ms, id, op)
            .expect("the memory store does not fail");
        // The operation ran with nothing staged: what is staged now is
        // what it published.
        let staged = self.nodes[i].core.node().uncommitted_events();
        self.nodes[i].published.extend(staged);
        self.settle(i);
        let replies = self.nodes[i].replies.remove(&id).unwrap_or_default();
        match replies.into_iter().rev().find(|r| r.is_final()) {
            Some(r) => match r.body {
                ReplyBody::Ok(data) => Ok(data),
                ReplyBody::Error(e) => Err(RoomOpError::Api(e)),
                ReplyBody::Line(_) => Err(RoomOpError::Reply("a line".into())),
            },
            None => Err(RoomOpError::Reply("no final reply".into())),
        }
    }

    /// Node `i` creates a room named `name`; returns its ID.
    pub fn room_create(&mut self, i: usize, name: &str) -> Result<RoomId, RoomOpError> {
        match self.op(i, &Op::RoomCreate { name: name.into() })? {
            OkData::Room { room_id } => room_id
                .parse()
                .map_err(|_| RoomOpError::Reply(format!("room ID {room_id:?}"))),
            other => Err(RoomOpError::Reply(format!("{other:?}"))),
        }
    }

    /// Node `i` invites node `j` (by `j`'s contact card) into `room`;
    /// returns the invite's event ID.
    pub fn room_invite(
        &mut self,
        i: usize,
        room: RoomId,
        j: usize,
    ) -> Result<EventId, RoomOpError> {
        let contact = self.nodes[j].card.to_text();
        let op = Op::RoomInvite {
            room: room.to_string(),
            contact,
        };
        event_id(self.op(i, &op)?)
    }

    /// Node `i` sends `text` into `room` (encrypted); returns the event ID.
    pub fn send_text(
        &mut self,
        i: usize,
        room: RoomId,
        text: &str,
    ) -> Result<EventId, RoomOpError> {
        let op = Op::Send {
            room: room.to_string(),
            text: text.into(),
            via: None,
            location: None,
            urgent: false,
            file: None,
        };
        event_id(self.op(i, &op)?)
    }

    /// Whether node `i`'s core carries `room` as its own (it holds the
    /// room's keys: its invite reached it, or it created the room).
    pub fn is_member(&self, i: usize, room: &RoomId) -> bool {
        self.nodes[i].core.node().own_rooms().contains(room)
    }

    /// A person on node `i` reads `room` (`messages`, which makes a read
    /// receipt due); returns the lines shown.
    pub fn read(&mut self, i: usize, room: &RoomId) -> Result<Vec<MessageLine>, RoomOpError> {
        self.settle(i);
        let now_ms = self.now_ms();
        self.nodes[i]
            .core
            .show_messages(room, None, now_ms)
            .map_err(|e| RoomOpError::App(e.to_string()))
    }

    /// The senders of the `kind` events node `i` holds of `room`, one per
    /// event, in (origin time, ID) order.
    pub fn senders_of(&self, i: usize, room: &RoomId, kind: EventKind) -> Vec<DeviceId> {
        self.events_of(i, room)
            .into_iter()
            .filter(|(e, _)| e.kind() == kind)
            .map(|(e, _)| e.sender())
            .collect()
    }

    /// The events node `i` holds of `room` with their encoded sizes, in
    /// (origin time, ID) order.
    pub fn events_of(&self, i: usize, room: &RoomId) -> Vec<(Event, usize)> {
        let store = self.nodes[i].core.node().store();
        let all = (Bound::Unbounded, Bound::Unbounded);
        let items = store
            .room_items(room, all, MAX_LIST_LIMIT)
            .unwrap_or_default();
        items
            .iter()
            .filter_map(|k| store.get_event(&k.id).ok().flatten())
            .filter_map(|b| Some((Event::decode_unverified(b.as_slice()).ok()?, b.len())))
            .collect()
    }

    /// What node `i` shows for `room`, in display order.
    pub fn shown(&mut self, i: usize, room: &RoomId) -> Result<Vec<MessageLine>, RoomOpError> {
        self.nodes[i]
            .core
            .messages(room, None)
            .map_err(|e| RoomOpError::App(e.to_string()))
    }
}

fn event_id(data: OkData) -> Result<EventId, RoomOpError> {
    match data {
        OkData::Event { event_id } => event_id
            .parse()
            .map_err(|_| RoomOpError::Reply(format!("event ID {event_id:?}"))),
        other => Err(RoomOpError::Reply(format!("{other:?}"))),
    }
}
