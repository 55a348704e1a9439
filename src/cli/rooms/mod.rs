//! The rooms commands of `meshrelay` (issue 4's CLI contract):
//!
//! ```text
//! meshrelay room create NAME [--json]          → {"room_id"}
//! meshrelay room invite ROOM_ID CONTACT        → {"event_id"}
//! meshrelay room remove ROOM_ID DEVICE_ID      → {"event_id"}
//! meshrelay room leave ROOM_ID                 → {"event_id"}
//! meshrelay room promote ROOM_ID DEVICE_ID     → {"event_id"}
//! meshrelay room demote ROOM_ID DEVICE_ID      → {"event_id"}
//! meshrelay room repair ROOM_ID [--json]       → {"room_id","events","kept","dropped_count","dropped":[…],"key_state":{…}}
//! meshrelay rooms [--json]                     → [{"room_id","name","members":[{"device_id","name","admin"}]}]
//! meshrelay send ROOM_ID TEXT [--json]         → {"event_id"} (after the commit)
//! meshrelay messages ROOM_ID [--json] [--follow] [--utc]  → JSON lines
//! meshrelay export [--room ROOM_ID] FILE|-
//! meshrelay import FILE|- [--json]             → {"imported","duplicates","rejected",...}
//! ```
//!
//! With `--json`, `rooms` prints one JSON array; `messages` prints one JSON
//! object per line; the others print the object shown. Without it, output
//! is for people ([`crate::cli::human`], gathered by [`human`]): one
//! sentence per change, messages with names and local times. Everything is
//! printed only after the store committed.
//! Exit codes follow the binary's: 0 ok, 1 runtime failure, 2 bad input.
//!
//! Each command becomes one typed control operation ([`to_op`],
//! `protocol-spec/daemon.md`, "Control API"). A running daemon executes it
//! ([`run_via_daemon`]); without one, the CLI executes the same operation
//! on the store itself ([`run`], [`crate::control::exec`]). Either way the
//! typed answer is printed by one formatting function per command
//! ([`print_answer`]), so both paths print the same bytes.

mod demo;
pub mod human;
mod progress;

pub use demo::demo;

use std::cell::RefCell;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::json;

use data_encoding::BASE64;

use crate::app::{self, AppError, Device, MessageLine, PrekeyRotation, RoomInfo};
use crate::cli::human::Style;
use crate::control::exec::{self, Answer, parse_room};
use crate::control::{self, ControlError, ErrorCode, OkData, Op, Request};
use crate::room::content::{Location, MAX_ACCURACY_M};
use crate::safe_text::for_terminal;
use crate::store::StoreError;

/// Interval between polls of `messages --follow`.
pub const FOLLOW_POLL_MS: u64 = 1000;

/// Exit code for a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad input or usage.
pub const EXIT_BAD_INPUT: u8 = 2;

/// The rooms subcommands; flatten into the binary's command enum with
/// `#[command(flatten)] Rooms(meshrelay::cli::rooms::RoomsCommand)`.
#[derive(Debug, Subcommand)]
pub enum RoomsCommand {
    /// Create, change and leave rooms.
    Room {
        /// What to do.
        #[command(subcommand)]
        action: RoomAction,
    },
    /// List the rooms this device is or was in.
    Rooms {
        /// Print JSON: [{"room_id","name","members":[{"device_id","name","admin"}]}].
        #[arg(long)]
        json: bool,
    },
    /// Encrypt, sign and store a message (printed only once durable).
    Send {
        /// Room ID (hex).
        room_id: String,
        /// Message text (optional with --location or --file: then a caption).
        #[arg(required_unless_present_any = ["location", "file"])]
        text: Option<String>,
        /// Send a file (a photo, a map; at most 1 MiB): announced at once,
        /// its chunks follow below text in every queue.
        #[arg(long, value_name = "PATH", conflicts_with = "location")]
        file: Option<PathBuf>,
        /// Send a location pin: LAT,LON in decimal degrees (WGS 84), e.g.
        /// 52.5200,13.4050.
        #[arg(long, value_name = "LAT,LON", value_parser = location_arg, allow_hyphen_values = true)]
        location: Option<Location>,
        /// With --location: its accuracy radius in metres.
        #[arg(long, value_name = "M", requires = "location",
              value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_ACCURACY_M)))]
        accuracy: Option<u32>,
        /// Mark the message urgent: every device that can read it sends it
        /// before everything else, and shows it prominently (at most 3 per
        /// 10 minutes in a room).
        #[arg(long)]
        urgent: bool,
        /// Print JSON: {"event_id"} (with --file also "attachment":{"size","chunks"}).
        #[arg(long)]
        json: bool,
    },
    /// Write a file someone sent (complete, its hash checked) to FILE.
    Save {
        /// The event ID of the message that announced the file.
        event_id: String,
        /// Where to write it, or "-" for standard output.
        #[arg(value_name = "FILE|-")]
        file: String,
    },
    /// Show a room's messages in display order, with unreadable messages and gaps.
    Messages {
        /// Room ID (hex).
        room_id: String,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
        /// Keep polling for new messages (does not hold the store between polls).
        #[arg(long)]
        follow: bool,
        /// Show times in UTC instead of the local time zone (`TZ`).
        #[arg(long)]
        utc: bool,
        /// Only the last N messages (with `--follow`: then every new one).
        /// Only their texts are read, however large the room.
        #[arg(long, value_name = "N")]
        last: Option<usize>,
    },
    /// Write a bundle of signed events for sneakernet transport.
    Export {
        /// Only this room.
        #[arg(long, value_name = "ROOM_ID")]
        room: Option<String>,
        /// Output file, or "-" for standard output.
        #[arg(value_name = "FILE|-")]
        file: String,
    },
    /// Verify and store the events of a bundle.
    Import {
        /// Input file, or "-" for standard input.
        #[arg(value_name = "FILE|-")]
        file: String,
        /// Print JSON: {"imported","duplicates","rejected","rejections","unauthorized"}.
        #[arg(long)]
        json: bool,
    },
    /// Manage this device's prekey (key shares are sealed to it).
    Prekey {
        /// What to do.
        #[command(subcommand)]
        action: PrekeyAction,
    },
}

/// `meshrelay prekey ...`.
#[derive(Debug, Subcommand)]
pub enum PrekeyAction {
    /// Make a new prekey now (the daemon does this weekly), tell every room
    /// this device is in, and re-issue the contact card.
    Rotate {
        /// Print JSON: {"prekey_id","rooms","pruned"}.
        #[arg(long)]
        json: bool,
    },
}

/// `meshrelay room ...`.
#[derive(Debug, Subcommand)]
pub enum RoomAction {
    /// Create a room with this device as its first admin.
    Create {
        /// Room name (encrypted; members only).
        name: String,
        /// Print JSON: {"room_id"}.
        #[arg(long)]
        json: bool,
    },
    /// Invite a contact: a contact card, or the device ID of a stored contact.
    Invite(InviteArgs),
    /// Remove a member (admins only); later messages are not shared with it.
    Remove(TargetArgs),
    /// Leave the room.
    Leave {
        /// Room ID (hex).
        room_id: String,
        /// Print JSON: {"event_id"}.
        #[arg(long)]
        json: bool,
    },
    /// Rename the room (members see the new name; a bridged Matrix room
    /// follows).
    Rename {
        /// Room ID (hex).
        room_id: String,
        /// The new name.
        name: String,
        /// Print JSON: {"event_id"}.
        #[arg(long)]
        json: bool,
    },
    /// Make a member an admin.
    Promote(TargetArgs),
    /// Take admin rights away.
    Demote(TargetArgs),
    /// Rebuild the room's state (its keys) from the stored events and
    /// report what the rebuild left out.
    Repair {
        /// Room ID (hex).
        room_id: String,
        /// Print JSON: {"room_id","events","kept","dropped_count","dropped":[{"event_id","reason"}],"key_state":{"before_bytes","after_bytes"}}.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `room invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// Room ID (hex).
    pub room_id: String,
    /// Contact card (MRC1:...) or a stored contact's device ID.
    pub contact: String,
    /// Print JSON: {"event_id"}.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of commands that target a member.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Room ID (hex).
    pub room_id: String,
    /// The member's device ID.
    pub device_id: String,
    /// Print JSON: {"event_id"}.
    #[arg(long)]
    pub json: bool,
}

/// A failure of a rooms command, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{err}")]
pub struct CliError {
    /// Exit code ([`EXIT_RUNTIME`] or [`EXIT_BAD_INPUT`]).
    pub code: u8,
    /// What went wrong.
    pub err: CommandError,
}

/// What failed: the command itself, or the daemon that ran it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The application layer failed (no daemon, or before the request).
    #[error(transparent)]
    App(#[from] AppError),
    /// The daemon refused or failed the request, or could not be reached.
    #[error(transparent)]
    Daemon(#[from] ControlError),
    /// The daemon's reply does not answer the command.
    #[error("unexpected reply from the daemon: {0}")]
    Unexpected(String),
}

/// The exit code of a control API error code: 2 when the request was at
/// fault, else 1.
pub fn exit_code(code: ErrorCode) -> u8 {
    if code.is_client_error() {
        EXIT_BAD_INPUT
    } else {
        EXIT_RUNTIME
    }
}

impl From<AppError> for CliError {
    fn from(err: AppError) -> Self {
        CliError {
            code: exit_code(control::error_code(&err)),
            err: CommandError::App(err),
        }
    }
}

impl From<ControlError> for CliError {
    fn from(err: ControlError) -> Self {
        let code = match &err {
            ControlError::Api(e) => exit_code(e.code),
            _ => EXIT_RUNTIME,
        };
        CliError {
            code,
            err: CommandError::Daemon(err),
        }
    }
}

fn bad(msg: String) -> CliError {
    AppError::BadInput(msg).into()
}

fn io_err(what: &str, source: io::Error) -> CliError {
    AppError::Io {
        path: what.into(),
        source,
    }
    .into()
}

/// Wall-clock milliseconds (or those of the test hook
/// [`super::TEST_NOW_ENV`]).
pub fn now_ms() -> u64 {
    if let Some(t) = super::test_now_ms() {
        return t;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Prints an event ID: `ID` or `{"event_id"}` (`room invite|remove|leave|
/// promote|demote`, `send`).
pub fn format_event(out: &mut dyn Write, event_id: &str, json: bool) -> Result<(), CliError> {
    let r = if json {
        writeln!(out, "{}", json!({ "event_id": event_id }))
    } else {
        writeln!(out, "{event_id}")
    };
    r.map_err(|e| io_err("-", e))
}

/// Prints a created room: `ID` or `{"room_id"}` (`room create`).
pub fn format_room_created(out: &mut dyn Write, room_id: &str, json: bool) -> Result<(), CliError> {
    let r = if json {
        writeln!(out, "{}", json!({ "room_id": room_id }))
    } else {
        writeln!(out, "{room_id}")
    };
    r.map_err(|e| io_err("-", e))
}

/// `--location LAT,LON`: a clear error for people (exit 2) when malformed.
fn location_arg(s: &str) -> Result<Location, String> {
    Location::parse(s, 0).map_err(|e| e.to_string())
}

/// Prints the room list (`rooms`): one JSON array, or a line per room and
/// an indented line per member.
pub fn format_rooms(out: &mut dyn Write, rooms: &[RoomInfo], json: bool) -> Result<(), CliError> {
    let r = if json {
        serde_json::to_string(rooms)
            .map_err(io::Error::other)
            .and_then(|s| writeln!(out, "{s}"))
    } else {
        rooms.iter().try_for_each(|r| {
            let bridged = if r.members.iter().any(|m| m.bridge) {
                "  [bridged to Matrix: readable on the homeserver]"
            } else {
                ""
            };
            writeln!(out, "{} {}{bridged}", r.room_id, for_terminal(&r.name))?;
            r.members.iter().try_for_each(|m| {
                let admin = if m.admin { " (admin)" } else { "" };
                let bridge = if m.bridge { " (Matrix bridge)" } else { "" };
                writeln!(
                    out,
                    "  {} {}{admin}{bridge}",
                    m.device_id,
                    for_terminal(&m.name)
                )
            })
        })
    };
    r.map_err(|e| io_err("-", e))
}

/// Prints a rotation (`prekey rotate`).
pub fn format_prekey(out: &mut dyn Write, r: &PrekeyRotation, json: bool) -> Result<(), CliError> {
    if json {
        print_json(out, r)
    } else {
        writeln!(
            out,
            "prekey {} is current; told {} rooms; {} old prekeys deleted",
            r.prekey_id, r.rooms, r.pruned
        )
        .map_err(|e| io_err("-", e))
    }
}

/// Prints one `messages --json` line (also each line of `messages
/// --follow --json`).
pub fn write_json_line(out: &mut dyn Write, line: &MessageLine) -> io::Result<()> {
    let s = serde_json::to_string(line).map_err(io::Error::other)?;
    writeln!(out, "{s}")
}

/// Writes what `export` produced to its file (atomically) or standard output.
pub fn write_output(file: &str, bytes: &[u8], out: &mut dyn Write) -> Result<(), CliError> {
    if file == "-" {
        return out.write_all(bytes).map_err(|e| io_err("-", e));
    }
    // Written beside the target and renamed, so a reader never sees half a bundle.
    let path = Path::new(file);
    let tmp = path.with_extension("partial");
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(file, e)
    })
}

/// Runs one rooms command on the data directory `dir` without a daemon
/// (the CLI opens the store itself), printing to `out` in `style`.
pub fn run(
    cmd: &RoomsCommand,
    dir: &Path,
    style: Style,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let facts = human::Facts { dir, daemon: false };
    if let RoomsCommand::Messages {
        room_id,
        json,
        follow: true,
        utc,
        last,
    } = cmd
    {
        let room = match parse_room(room_id) {
            Ok(r) => r,
            Err(_) => exec::resolve_room(&mut Device::open(dir, now_ms())?, room_id)?,
        };
        // JSON lines go out as they come; for people, each poll's lines
        // are one batch (`keep_going` runs once per poll, after them).
        let batch = RefCell::new(Vec::new());
        let out = RefCell::new(out);
        let failed = RefCell::new(None);
        let mut view = (!*json).then(|| human::Follow::new(facts, room_id, *utc, style));
        let r = app::follow_messages(
            dir,
            &room,
            *last,
            Duration::from_millis(FOLLOW_POLL_MS),
            now_ms,
            |l| {
                if *json {
                    let mut o = out.borrow_mut();
                    write_json_line(&mut **o, l).and_then(|()| o.flush())
                } else {
                    batch.borrow_mut().push(l.clone());
                    Ok(())
                }
            },
            || {
                let Some(v) = view.as_mut() else { return true };
                let lines = std::mem::take(&mut *batch.borrow_mut());
                match v.batch(&lines, &mut **out.borrow_mut()) {
                    Ok(()) => true,
                    Err(e) => {
                        *failed.borrow_mut() = Some(e);
                        false
                    }
                }
            },
        );
        let r = match failed.into_inner() {
            Some(source) => Err(AppError::Io {
                path: "-".into(),
                source,
            }),
            None => r,
        };
        return match r {
            // The reader went away (`| head`): a normal end.
            Err(AppError::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
                Ok(())
            }
            other => other.map_err(CliError::from),
        };
    }
    let now = now_ms();
    if let RoomsCommand::Import { file, .. } = cmd {
        // Streamed into the store: never read whole (`super::import`).
        let mut dev = Device::open(dir, now)?;
        let import = Box::new(super::import::import_streaming(&mut dev, file, now)?);
        drop(dev);
        return print_answer(
            cmd,
            &Answer::data(OkData::Import { import }),
            facts,
            None,
            style,
            out,
        );
    }
    let op = to_op(cmd)?.ok_or_else(|| bad("import is streamed".into()))?;
    let mut dev = Device::open(dir, now)?;
    // The rosters for people, read on this open device: before a change
    // that may remove the member it names, else after.
    let want_rooms = !json_flag(cmd) && human::needs_rooms(cmd);
    let before = want_rooms && human::roster_before(cmd);
    let mut rooms = before.then(|| dev.rooms().ok()).flatten();
    let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
    let answer = exec::execute(&op, &mut dev, now, &mut rng)?;
    if let Some((room, marks)) = &answer.read {
        // What this person was shown: the read receipt (with what this
        // device holds) goes out now; a failure to send it is only said.
        if let Err(e) = dev.send_receipt(room, marks, now, &mut rng) {
            tracing::warn!("could not send the read receipt: {e}");
        }
    }
    if want_rooms && !before {
        rooms = dev.rooms().ok();
    }
    drop(dev);
    print_answer(cmd, &answer, facts, rooms, style, out)
}

/// Runs one rooms command through the running daemon on `stream` (it holds
/// the store), printing to `out` what [`run`] would print.
pub fn run_via_daemon(
    cmd: &RoomsCommand,
    dir: &Path,
    stream: std::os::unix::net::UnixStream,
    style: Style,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let facts = human::Facts { dir, daemon: true };
    if let RoomsCommand::Messages {
        room_id,
        json,
        follow: true,
        utc,
        last,
    } = cmd
    {
        let r = if *json {
            let req = Request::new(Op::Follow {
                room: room_id.clone(),
                last: *last,
            });
            control::call(dir, stream, &req, |l| {
                write_json_line(out, &l).and_then(|()| out.flush())
            })
            .map(drop)
        } else {
            follow_via_daemon(facts, stream, room_id, *last, *utc, style, out)
        };
        return match r {
            Ok(()) => Ok(()),
            // The reader went away (`| head`): a normal end.
            Err(ControlError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(ControlError::Output(e)) => Err(io_err("-", e)),
            Err(e) => Err(e.into()),
        };
    }
    if let RoomsCommand::Import { file, .. } = cmd {
        // Streamed in slices: never read whole (`super::import`).
        let import = Box::new(super::import::import_via_daemon(dir, stream, file)?);
        let answer = Answer::data(OkData::Import { import });
        return print_answer(cmd, &answer, facts, None, style, out);
    }
    let op = to_op(cmd)?.ok_or_else(|| bad("import is streamed".into()))?;
    let req = Request::new(control::with_book_card(dir, op));
    // A roster read before the change (on a connection of its own).
    let before = (!json_flag(cmd) && human::roster_before(cmd))
        .then(|| facts.rooms())
        .flatten();
    let mut lines = Vec::new();
    let ok = control::call(dir, stream, &req, |l| {
        lines.push(l);
        Ok(())
    })?;
    print_answer(
        cmd,
        &Answer {
            lines,
            ok,
            read: None,
        },
        facts,
        before,
        style,
        out,
    )
}

/// `messages --follow` for people through the daemon: the history first,
/// as one batch (so earlier messages are summarised), then the daemon's
/// stream, skipping the lines already shown.
fn follow_via_daemon(
    facts: human::Facts<'_>,
    stream: std::os::unix::net::UnixStream,
    room_id: &str,
    last: Option<usize>,
    utc: bool,
    style: Style,
    out: &mut dyn Write,
) -> Result<(), ControlError> {
    let mut history = Vec::new();
    let req = Request::new(Op::Messages {
        room: room_id.to_owned(),
        last,
        mark_read: true,
    });
    control::call(facts.dir, stream, &req, |l| {
        history.push(l);
        Ok(())
    })?;
    // On a terminal, a room still syncing shows a progress bar on
    // standard error, hidden while message lines are printed.
    let bar = io::stderr()
        .is_terminal()
        .then(|| progress::SyncBar::start(facts, room_id));
    let mut view = human::Follow::new(facts, room_id, utc, style);
    {
        let _hidden = bar.as_ref().map(progress::SyncBar::hide);
        view.batch(&history, out).map_err(ControlError::Output)?;
    }
    let mut shown: std::collections::BTreeSet<String> = history
        .iter()
        .filter_map(|l| serde_json::to_string(l).ok())
        .collect();
    drop(history);
    let Some(stream) = control::connect(facts.dir) else {
        return Err(ControlError::Closed);
    };
    let req = Request::new(Op::Follow {
        room: room_id.to_owned(),
        last,
    });
    control::call(facts.dir, stream, &req, |l| {
        let key = serde_json::to_string(&l).map_err(io::Error::other)?;
        if shown.insert(key) {
            let _hidden = bar.as_ref().map(progress::SyncBar::hide);
            view.batch(std::slice::from_ref(&l), out)?;
        }
        Ok(())
    })
    .map(drop)
}

/// Whether `cmd` asked for JSON (`export` has no JSON form: its output is
/// the bundle or a sentence).
pub fn json_flag(cmd: &RoomsCommand) -> bool {
    match cmd {
        RoomsCommand::Room { action } => match action {
            RoomAction::Create { json, .. }
            | RoomAction::Leave { json, .. }
            | RoomAction::Rename { json, .. }
            | RoomAction::Repair { json, .. } => *json,
            RoomAction::Invite(a) => a.json,
            RoomAction::Remove(a) | RoomAction::Promote(a) | RoomAction::Demote(a) => a.json,
        },
        RoomsCommand::Rooms { json }
        | RoomsCommand::Send { json, .. }
        | RoomsCommand::Messages { json, .. }
        | RoomsCommand::Import { json, .. }
        | RoomsCommand::Prekey {
            action: PrekeyAction::Rotate { json },
        } => *json,
        RoomsCommand::Export { .. } | RoomsCommand::Save { .. } => false,
    }
}

/// The control operation of a rooms command (`None` for `import`: it is
/// streamed in slices, `super::import`). `messages --follow` maps to
/// `messages` (the follow loop is the caller's).
pub fn to_op(cmd: &RoomsCommand) -> Result<Option<Op>, CliError> {
    Ok(Some(match cmd {
        RoomsCommand::Room { action } => match action {
            RoomAction::Create { name, .. } => Op::RoomCreate { name: name.clone() },
            RoomAction::Invite(a) => Op::RoomInvite {
                room: a.room_id.clone(),
                contact: a.contact.clone(),
            },
            RoomAction::Remove(a) => Op::RoomRemove {
                room: a.room_id.clone(),
                device: a.device_id.clone(),
            },
            RoomAction::Promote(a) => Op::RoomPromote {
                room: a.room_id.clone(),
                device: a.device_id.clone(),
            },
            RoomAction::Demote(a) => Op::RoomDemote {
                room: a.room_id.clone(),
                device: a.device_id.clone(),
            },
            RoomAction::Leave { room_id, .. } => Op::RoomLeave {
                room: room_id.clone(),
            },
            RoomAction::Rename { room_id, name, .. } => Op::RoomRename {
                room: room_id.clone(),
                name: name.clone(),
            },
            RoomAction::Repair { room_id, .. } => Op::RoomRepair {
                room: room_id.clone(),
            },
        },
        RoomsCommand::Rooms { .. } => Op::Rooms,
        RoomsCommand::Send {
            room_id,
            text,
            location,
            accuracy,
            urgent,
            file,
            ..
        } => Op::Send {
            room: room_id.clone(),
            text: text.clone().unwrap_or_default(),
            location: location.map(|l| Location {
                accuracy_m: accuracy.unwrap_or(0),
                ..l
            }),
            via: None,
            urgent: *urgent,
            file: file.as_deref().map(read_attachment).transpose()?,
        },
        RoomsCommand::Messages { room_id, last, .. } => Op::Messages {
            room: room_id.clone(),
            last: *last,
            mark_read: true,
        },
        RoomsCommand::Export { room, .. } => Op::Export { room: room.clone() },
        RoomsCommand::Save { event_id, file } => Op::Save {
            event: event_id.clone(),
            // Standard output is nowhere to find it again.
            path: (file != "-").then(|| {
                std::path::absolute(file)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| file.clone())
            }),
        },
        RoomsCommand::Import { .. } => return Ok(None),
        RoomsCommand::Prekey {
            action: PrekeyAction::Rotate { .. },
        } => Op::PrekeyRotate,
    }))
}

/// A file to send, read whole (at most `MAX_ATTACHMENT_BYTES`): its name,
/// a media type from its extension, its bytes in base64.
fn read_attachment(path: &Path) -> Result<crate::control::FileData, CliError> {
    use crate::room::attachment::MAX_ATTACHMENT_BYTES;
    let shown = path.display().to_string();
    let f = std::fs::File::open(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", for_terminal(&shown))))?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(f, MAX_ATTACHMENT_BYTES + 1), &mut bytes)
        .map_err(|e| bad(format!("cannot read {}: {e}", for_terminal(&shown))))?;
    if bytes.is_empty() || bytes.len() as u64 > MAX_ATTACHMENT_BYTES {
        return Err(bad(format!(
            "{} is {}; a file to send is 1 byte to 1 MiB ({MAX_ATTACHMENT_BYTES} bytes)",
            for_terminal(&shown),
            if bytes.is_empty() {
                "empty".to_owned()
            } else {
                "over 1 MiB".to_owned()
            }
        )));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(crate::control::FileData {
        media_type: media_type_of(&name).to_owned(),
        name,
        data: BASE64.encode(&bytes),
    })
}

/// A media type from a file name's extension (`application/octet-stream`
/// when unknown).
fn media_type_of(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("gpx") => "application/gpx+xml",
        _ => "application/octet-stream",
    }
}

/// Prints the answer to `cmd`, as the command's contract says: `--json`
/// here, for people through [`human::print`] (with the facts it gathers).
/// The one
/// formatting path of both [`run`] and [`run_via_daemon`].
///
/// `rooms` is the rooms list when the caller already read it (else it is
/// asked for when needed).
pub fn print_answer(
    cmd: &RoomsCommand,
    answer: &Answer,
    facts: human::Facts<'_>,
    rooms: Option<Vec<RoomInfo>>,
    style: Style,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if !json_flag(cmd) {
        return human::print(cmd, answer, facts, rooms, style, out);
    }
    match (cmd, &answer.ok) {
        (
            RoomsCommand::Room {
                action: RoomAction::Repair { .. },
            },
            OkData::Repair { repair },
        ) => super::repair::format_repair(out, repair, true),
        (RoomsCommand::Room { .. }, OkData::Room { room_id }) => {
            format_room_created(out, room_id, true)
        }
        (RoomsCommand::Room { .. } | RoomsCommand::Send { .. }, OkData::Event { event_id }) => {
            format_event(out, event_id, true)
        }
        (RoomsCommand::Send { .. }, sent @ OkData::Sent { .. }) => print_json(out, sent),
        (RoomsCommand::Rooms { .. }, OkData::Rooms { rooms }) => format_rooms(out, rooms, true),
        (RoomsCommand::Messages { .. }, OkData::Lines { .. }) => answer
            .lines
            .iter()
            .try_for_each(|l| write_json_line(out, l))
            .map_err(|e| io_err("-", e)),
        (RoomsCommand::Import { .. }, OkData::Import { import }) => print_json(out, import),
        (RoomsCommand::Prekey { .. }, OkData::Prekey { prekey }) => {
            format_prekey(out, prekey, true)
        }
        (_, other) => Err(CliError {
            code: EXIT_RUNTIME,
            err: CommandError::Unexpected(format!("{other:?}").chars().take(200).collect()),
        }),
    }
}

/// The bundle bytes of an `export` answer.
pub fn bundle_bytes(ok: &OkData) -> Result<Vec<u8>, CliError> {
    let unexpected = |what: String| CliError {
        code: EXIT_RUNTIME,
        err: CommandError::Unexpected(what),
    };
    match ok {
        OkData::Bundle { bundle } => BASE64
            .decode(bundle.as_bytes())
            .map_err(|e| unexpected(format!("bundle: {e}"))),
        other => Err(unexpected(format!("{other:?}").chars().take(200).collect())),
    }
}

/// Prints one JSON value on a line.
pub fn print_json(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<(), CliError> {
    serde_json::to_string(v)
        .map_err(io::Error::other)
        .and_then(|s| writeln!(out, "{s}"))
        .map_err(|e| io_err("-", e))
}

/// Whether an error means the store is in use by another process.
pub fn is_locked(e: &CliError) -> bool {
    matches!(
        e.err,
        CommandError::App(AppError::Store(StoreError::Locked { .. }))
    )
}

/// What `meshrelay decode` prints for a bundle: its framing and, per event,
/// the cleartext envelope fields and whether the event verifies at
/// `now_ms` (signature, encoding, timeliness). Nothing is decrypted.
pub fn bundle_json(bytes: &[u8], now_ms: u64) -> Result<serde_json::Value, CliError> {
    let (created_ms, raw) = crate::bundle::parse(bytes).map_err(AppError::from)?;
    let events: Vec<serde_json::Value> = raw
        .iter()
        .enumerate()
        .map(|(index, b)| match crate::event::Event::decode(b) {
            Ok(ev) => {
                let timely = crate::event::timeliness(&ev, now_ms);
                json!({
                    "index": index,
                    "valid": timely == crate::event::Timeliness::Current,
                    "timeliness": format!("{timely:?}").to_lowercase(),
                    "event_id": ev.id().to_string(),
                    "room": ev.room().to_string(),
                    "sender": ev.sender().to_string(),
                    "seq": ev.seq(),
                    "kind": ev.kind().name(),
                    "origin_ts_ms": ev.origin_ts_ms(),
                    "expires_ms": ev.expires_ms(),
                    "payload_bytes": ev.payload().len(),
                })
            }
            Err(e) => json!({ "index": index, "valid": false, "error": e.to_string() }),
        })
        .collect();
    Ok(json!({
        "bundle": {
            "version": crate::bundle::BUNDLE_VERSION,
            "created_ms": created_ms,
            "events": events,
        }
    }))
}

/// Whether `bytes` look like a bundle (for `decode` to pick a decoder).
pub fn is_bundle(bytes: &[u8]) -> bool {
    crate::bundle::parse(bytes).is_ok()
}
