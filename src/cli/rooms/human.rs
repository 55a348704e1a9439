//! The rooms commands' output for people: gathers what the renderers of
//! [`crate::cli::human`] need besides the command's answer (the rooms and
//! their rosters, this device's card, the contact book, the time zone and
//! the clock) and prints what they render. Both paths — through a daemon
//! and on the store directly — gather the same facts, so they print the
//! same bytes.
//!
//! Gathering is best effort: the command already succeeded, so a roster
//! that cannot be read makes the output name fewer people, never fail.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::Path;

use jiff::tz::TimeZone;

use super::{
    CliError, CommandError, EXIT_RUNTIME, InviteArgs, RoomAction, RoomsCommand, TargetArgs,
    format_prekey, format_rooms, io_err, now_ms, write_output,
};
use crate::app::{self, Device, MessageLine, RoomInfo};
use crate::cli::human::{MessageView, Names, Style, room_label, sentences};
use crate::contacts::ContactBook;
use crate::control::exec::{Answer, parse_device, parse_room, resolve_among};
use crate::control::{self, OkData, Op, Request};
use crate::crypto::{ContactCard, DeviceId};
use crate::datadir::DataDir;

/// Where the facts come from: the data directory, and whether a daemon
/// holds its store (then it is asked over the control socket).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The data directory.
    pub dir: &'a Path,
    /// Whether to ask the running daemon.
    pub daemon: bool,
}

impl Facts<'_> {
    /// The rooms this device is or was in, with their rosters.
    pub fn rooms(&self) -> Option<Vec<RoomInfo>> {
        if self.daemon {
            let stream = control::connect(self.dir)?;
            match control::call(self.dir, stream, &Request::new(Op::Rooms), |_| Ok(())) {
                Ok(OkData::Rooms { rooms }) => Some(rooms),
                _ => None,
            }
        } else {
            Device::open(self.dir, now_ms()).ok()?.rooms().ok()
        }
    }

    /// The names known for `room`: its roster in `rooms`, this device's
    /// card, the contact book.
    pub fn names(&self, rooms: Option<&[RoomInfo]>, room: &str) -> Names {
        let roster = rooms
            .and_then(|rs| rs.iter().find(|r| r.room_id == room))
            .map(|r| r.members.as_slice())
            .unwrap_or_default();
        let own = app::load_identity(self.dir)
            .ok()
            .map(|(id, card)| (id.device_id().to_string(), card.name));
        let book = ContactBook::load(&DataDir::new(self.dir)).unwrap_or_default();
        let contacts: Vec<(String, String)> = book
            .iter()
            .map(|c| (c.device_id.to_string(), c.name.clone()))
            .collect();
        Names::new(
            roster,
            own.as_ref().map(|(d, n)| (d.as_str(), n.as_str())),
            contacts.iter().map(|(d, n)| (d.as_str(), n.as_str())),
        )
    }
}

/// Whether the output for people of `cmd` names rooms or members (the
/// rooms list is read for it).
pub fn needs_rooms(cmd: &RoomsCommand) -> bool {
    match cmd {
        RoomsCommand::Room { action } => !matches!(action, RoomAction::Create { .. }),
        RoomsCommand::Send { .. } | RoomsCommand::Messages { .. } => true,
        RoomsCommand::Export { room, .. } => room.is_some(),
        RoomsCommand::Rooms { .. }
        | RoomsCommand::Import { .. }
        | RoomsCommand::Prekey { .. }
        | RoomsCommand::Save { .. } => false,
    }
}

/// Whether the command's sentence names a member who may be gone after it
/// ran: its roster is read before.
pub fn roster_before(cmd: &RoomsCommand) -> bool {
    matches!(
        cmd,
        RoomsCommand::Room {
            action: RoomAction::Remove(_)
                | RoomAction::Promote(_)
                | RoomAction::Demote(_)
                | RoomAction::Leave { .. }
        }
    )
}

/// The time zone of `messages`: UTC with `--utc`, else the local one
/// (`TZ`, else the system's).
pub fn time_zone(utc: bool) -> TimeZone {
    if utc {
        TimeZone::UTC
    } else {
        TimeZone::system()
    }
}

/// The canonical form of a room argument (as `rooms` spells it): a room
/// ID, or the room a name or ID prefix names among `rooms`.
fn room_key(arg: &str, rooms: Option<&[RoomInfo]>) -> String {
    parse_room(arg)
        .or_else(|e| rooms.map_or(Err(e), |rs| resolve_among(arg, rs)))
        .map_or_else(|_| arg.to_owned(), |r| r.to_string())
}

fn label_of(rooms: Option<&[RoomInfo]>, room: &str) -> String {
    let name = rooms
        .and_then(|rs| rs.iter().find(|r| r.room_id == room))
        .map_or("", |r| r.name.as_str());
    room_label(name, room)
}

fn line(out: &mut dyn Write, s: &str) -> Result<(), CliError> {
    writeln!(out, "{s}").map_err(|e| io_err("-", e))
}

/// Prints `answer` to `cmd` for people. `known` is the rooms list if the
/// caller read it already (before the command ran when [`roster_before`]),
/// else it is read here when needed.
pub fn print(
    cmd: &RoomsCommand,
    answer: &Answer,
    facts: Facts<'_>,
    known: Option<Vec<RoomInfo>>,
    style: Style,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut known = Some(known);
    let mut rooms = || match known.take() {
        Some(Some(r)) => Some(r),
        _ => facts.rooms(),
    };
    let person = |rooms: Option<&[RoomInfo]>, room: &str, device: &DeviceId| {
        let names = facts.names(rooms, room);
        sentences::person(names.name(&device.to_string()), device)
    };
    match (cmd, &answer.ok) {
        (
            RoomsCommand::Room {
                action: RoomAction::Create { name, .. },
            },
            OkData::Room { room_id },
        ) => line(out, &sentences::created(name, room_id)),
        (RoomsCommand::Send { room_id, .. }, OkData::Event { .. } | OkData::Sent { .. }) => {
            let rs = rooms();
            let room = room_key(room_id, rs.as_deref());
            line(out, &sentences::sent(&label_of(rs.as_deref(), &room)))
        }
        (
            RoomsCommand::Room {
                action:
                    RoomAction::Invite(InviteArgs {
                        room_id, contact, ..
                    }),
            },
            OkData::Event { .. },
        ) => {
            let rs = rooms();
            let room = room_key(room_id, rs.as_deref());
            let who = match ContactCard::from_text(contact.trim()) {
                Ok(card) => sentences::person(Some(&card.name), &card.device_id),
                Err(_) => match parse_device(contact) {
                    Ok(d) => person(rs.as_deref(), &room, &d),
                    Err(_) => "the contact".to_owned(),
                },
            };
            let label = label_of(rs.as_deref(), &room);
            line(out, &sentences::invited(&who, &label))
        }
        (
            RoomsCommand::Room {
                action:
                    action @ (RoomAction::Remove(TargetArgs {
                        room_id, device_id, ..
                    })
                    | RoomAction::Promote(TargetArgs {
                        room_id, device_id, ..
                    })
                    | RoomAction::Demote(TargetArgs {
                        room_id, device_id, ..
                    })),
            },
            OkData::Event { .. },
        ) => {
            let rs = rooms();
            let room = room_key(room_id, rs.as_deref());
            let who = match parse_device(device_id) {
                Ok(d) => person(rs.as_deref(), &room, &d),
                Err(_) => "the member".to_owned(),
            };
            let label = label_of(rs.as_deref(), &room);
            let s = match action {
                RoomAction::Remove(_) => sentences::removed(&who, &label),
                RoomAction::Promote(_) => sentences::promoted(&who, &label),
                _ => sentences::demoted(&who, &label),
            };
            line(out, &s)
        }
        (
            RoomsCommand::Room {
                action: RoomAction::Leave { room_id, .. },
            },
            OkData::Event { .. },
        ) => {
            let rs = rooms();
            let room = room_key(room_id, rs.as_deref());
            line(out, &sentences::left(&label_of(rs.as_deref(), &room)))
        }
        (
            RoomsCommand::Room {
                action: RoomAction::Rename { name, .. },
            },
            OkData::Event { .. },
        ) => line(
            out,
            &sentences::renamed(&crate::safe_text::for_terminal(name)),
        ),
        (RoomsCommand::Rooms { .. }, OkData::Rooms { rooms }) => format_rooms(out, rooms, false),
        (
            RoomsCommand::Room {
                action: RoomAction::Repair { .. },
            },
            OkData::Repair { repair },
        ) => crate::cli::repair::format_repair(out, repair, false),
        (RoomsCommand::Messages { room_id, utc, .. }, OkData::Lines { .. }) => {
            let rs = rooms();
            let room = room_key(room_id, rs.as_deref());
            let mut names = facts.names(rs.as_deref(), &room);
            let mut view = MessageView::new(time_zone(*utc), *utc, now_ms(), style);
            let text = if answer.lines.is_empty() {
                view.empty()
            } else {
                view.render(&mut names, &answer.lines)
            };
            out.write_all(text.as_bytes()).map_err(|e| io_err("-", e))
        }
        (RoomsCommand::Export { room, file }, OkData::Bundle { .. }) => {
            let bytes = super::bundle_bytes(&answer.ok)?;
            write_output(file, &bytes, out)?;
            if file == "-" {
                return Ok(());
            }
            let events = crate::bundle::parse(&bytes).map_or(0, |(_, evs)| evs.len());
            let label = room.as_deref().map(|r| {
                let rs = rooms();
                let r = room_key(r, rs.as_deref());
                label_of(rs.as_deref(), &r)
            });
            line(out, &sentences::exported(events, label.as_deref(), file))
        }
        (RoomsCommand::Import { .. }, OkData::Import { import }) => {
            line(out, &sentences::imported(import))
        }
        (RoomsCommand::Save { file, .. }, OkData::File { file: f }) => {
            let bytes = data_encoding::BASE64
                .decode(f.data.as_bytes())
                .map_err(|e| CliError {
                    code: EXIT_RUNTIME,
                    err: CommandError::Unexpected(format!("file data: {e}")),
                })?;
            write_output(file, &bytes, out)?;
            if file == "-" {
                return Ok(());
            }
            line(out, &sentences::saved(&f.name, bytes.len() as u64, file))
        }
        (RoomsCommand::Prekey { .. }, OkData::Prekey { prekey }) => {
            format_prekey(out, prekey, false)
        }
        (_, other) => Err(CliError {
            code: EXIT_RUNTIME,
            err: CommandError::Unexpected(format!("{other:?}").chars().take(200).collect()),
        }),
    }
}

/// `messages --follow` for people: renders each batch of new lines (all of
/// the history first, then each poll's or each streamed line), names
/// re-read when a sender not known before speaks.
pub struct Follow<'a> {
    facts: Facts<'a>,
    room: String,
    names: Names,
    view: MessageView,
    started: bool,
    /// Messages printed: a line again with new receipts is not printed
    /// twice.
    printed: BTreeSet<String>,
}

impl<'a> Follow<'a> {
    /// A follower of `room_id`.
    pub fn new(facts: Facts<'a>, room_id: &str, utc: bool, style: Style) -> Self {
        let rs = facts.rooms();
        let room = room_key(room_id, rs.as_deref());
        Follow {
            names: facts.names(rs.as_deref(), &room),
            view: MessageView::new(time_zone(utc), utc, now_ms(), style),
            facts,
            room,
            started: false,
            printed: BTreeSet::new(),
        }
    }

    /// Prints one batch (the first may be empty: "No messages yet.").
    pub fn batch(&mut self, lines: &[MessageLine], out: &mut dyn Write) -> io::Result<()> {
        let first = !std::mem::replace(&mut self.started, true);
        let lines: Vec<MessageLine> = lines
            .iter()
            .filter(|l| match l {
                MessageLine::Text { event_id, .. } => self.printed.insert(event_id.clone()),
                _ => true,
            })
            .cloned()
            .collect();
        if lines.is_empty() && !first {
            return Ok(());
        }
        if lines.is_empty() {
            if first {
                out.write_all(self.view.empty().as_bytes())?;
                out.flush()?;
            }
            return Ok(());
        }
        let senders: BTreeSet<&str> = lines.iter().filter_map(sender_of).collect();
        if senders.iter().any(|s| !self.names.knows(s)) {
            self.names = self.facts.names(self.facts.rooms().as_deref(), &self.room);
        }
        out.write_all(self.view.render(&mut self.names, &lines).as_bytes())?;
        out.flush()
    }
}

fn sender_of(l: &MessageLine) -> Option<&str> {
    match l {
        MessageLine::Text { sender, .. }
        | MessageLine::Undecryptable { sender, .. }
        | MessageLine::Unauthorized { sender, .. } => Some(sender),
        MessageLine::Gap { gap } => Some(&gap.sender),
        MessageLine::Fork { fork } => Some(&fork.sender),
    }
}
