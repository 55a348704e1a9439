//! The control API, version 1 (`protocol-spec/daemon.md`, "Control API").
//!
//! A running daemon (`meshrelay run`) holds the store (redb allows one
//! process at a time), so every other client — the CLI today, the web app
//! and a Matrix bridge later — talks to it over a Unix domain socket,
//! [`SOCKET_NAME`] in the data directory, mode 0600 inside the 0700 data
//! directory.
//!
//! The protocol is JSON lines. A client connects, writes **one**
//! [`Request`] line (`{"v":1,"op":…, fields}`) and reads [`Reply`] lines:
//! `{"v":1,"line":…}` items of a stream (`messages`, `follow`), then one
//! final `{"v":1,"ok":…}` or `{"v":1,"error":{"code","message"}}`. The
//! daemon answers a request that writes only after its writes are
//! committed.
//!
//! This module is the typed form of that protocol and depends on the
//! application layer only (never on the CLI):
//!
//! - [`Request`] / [`Op`]: one variant per operation, checked by
//!   [`decode_request`] (version, operation name, fields) into a typed
//!   [`ApiError`] rather than a failure;
//! - [`Reply`] / [`ReplyBody`] / [`OkData`]: typed replies whose data are
//!   the application's serde types ([`RoomInfo`], [`MessageLine`],
//!   [`ImportSummary`], [`PrekeyRotation`], [`RepairReport`]);
//! - [`exec`]: runs an operation on an open [`crate::app::Device`], shared
//!   by the daemon and by the CLI when no daemon runs;
//! - [`client`]: connecting and calling, for clients.
//!
//! A socket file whose daemon died (SIGKILL) refuses connections: the CLI
//! then opens the store directly, and the next daemon replaces the file.

#[cfg(feature = "runtime")]
pub mod client;
pub mod exec;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::{AppError, ImportSummary, MessageLine, PrekeyRotation, RepairReport, RoomInfo};
use crate::contacts::ContactError;
use crate::datadir::DataDirError;

#[cfg(feature = "runtime")]
pub use client::{ControlError, call, connect, socket_path, wait_for, with_book_card};

/// The control API version this build speaks (the `v` of every line).
pub const API_VERSION: u32 = 1;

/// File name of the control socket in the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Largest request line: a base64 bundle of the largest size plus headroom.
pub const MAX_REQUEST_BYTES: usize = crate::bundle::MAX_BUNDLE_BYTES / 3 * 4 + 64 * 1024;

/// Largest reply line (an `export` reply carries a base64 bundle of the
/// largest size); a reply that would be longer is replaced by a
/// `too_large` error.
pub const MAX_REPLY_BYTES: usize = crate::bundle::MAX_BUNDLE_BYTES / 3 * 4 + 64 * 1024;

/// Most control connections served at once; more wait for a free slot.
pub const MAX_CONTROL_CONNECTIONS: usize = 16;

/// How long a command that found the store locked but no control socket
/// waits for a starting daemon's socket (the daemon opens the store first).
pub const STARTUP_WAIT: Duration = Duration::from_secs(10);
/// How long a starting daemon waits for a command that holds the store
/// (with no daemon's socket up) to finish before giving up.
pub const STORE_LOCK_WAIT: Duration = Duration::from_secs(10);
/// Polling interval of both waits.
pub const LOCK_POLL: Duration = Duration::from_millis(100);

/// One request line: the version and the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Always [`API_VERSION`].
    pub v: u32,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    /// A version-1 request.
    pub fn new(op: Op) -> Self {
        Request { v: API_VERSION, op }
    }
}

/// The operations (`op`), with their fields. Room IDs are hex, device IDs
/// `mr1…`; both are checked by the daemon (`bad_input` when malformed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create a room with this device as its first admin → [`OkData::Room`].
    RoomCreate {
        /// Room name (encrypted; members only).
        name: String,
    },
    /// Invite a contact → [`OkData::Event`].
    RoomInvite {
        /// Room ID.
        room: String,
        /// A contact card (`MRC1:…`) or a stored contact's device ID.
        contact: String,
    },
    /// Remove a member (admins only) → [`OkData::Event`].
    RoomRemove {
        /// Room ID.
        room: String,
        /// The member's device ID.
        device: String,
    },
    /// Make a member an admin → [`OkData::Event`].
    RoomPromote {
        /// Room ID.
        room: String,
        /// The member's device ID.
        device: String,
    },
    /// Take admin rights away → [`OkData::Event`].
    RoomDemote {
        /// Room ID.
        room: String,
        /// The member's device ID.
        device: String,
    },
    /// Leave a room → [`OkData::Event`].
    RoomLeave {
        /// Room ID.
        room: String,
    },
    /// Rename a room (the name is encrypted content; members only) →
    /// [`OkData::Event`].
    RoomRename {
        /// Room ID.
        room: String,
        /// The new name.
        name: String,
    },
    /// Rebuild a room's state from its stored events and report what the
    /// rebuild left out → [`OkData::Repair`] (`protocol-spec/app.md` §7).
    RoomRepair {
        /// Room ID.
        room: String,
    },
    /// The rooms this device is or was in → [`OkData::Rooms`].
    Rooms,
    /// Encrypt, sign and store a message → [`OkData::Event`].
    Send {
        /// Room ID.
        room: String,
        /// Message text.
        text: String,
        /// Text a bridge brought from Matrix: who wrote it there
        /// (`protocol-spec/bridge.md`, "Attribution").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<crate::room::content::Via>,
        /// A location pin (`{"lat","lon","accuracy_m"}`, degrees); `text`
        /// may then be empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<crate::room::content::Location>,
        /// Marked urgent (`protocol-spec/wire.md`, "Urgent messages");
        /// default false.
        #[serde(default, skip_serializing_if = "is_false")]
        urgent: bool,
        /// A file sent with `text` as its caption
        /// (`protocol-spec/attachments.md`) → [`OkData::Sent`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<FileData>,
    },
    /// A complete attachment, checked against its hash, to be written to
    /// `path` (recorded as where it was saved) → [`OkData::File`].
    Save {
        /// The announcement's event ID.
        event: String,
        /// Where the client writes it (shown as the line's `path`); absent
        /// for a download that is not written anywhere known (the web app).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// A room's messages in display order: one `line` reply each, then
    /// [`OkData::Lines`].
    Messages {
        /// Room ID.
        room: String,
        /// Only the lines of the last this many messages (absent: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<usize>,
        /// Whether a person sees these lines, so a read receipt is due
        /// (default true; `false` for counting unread messages).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        mark_read: bool,
    },
    /// Stream the room's lines, then new ones as they arrive, until either
    /// side hangs up (or the daemon stops: then [`OkData::Done`]).
    Follow {
        /// Room ID.
        room: String,
        /// Start with the lines of the last this many messages (absent:
        /// all), then every new line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<usize>,
    },
    /// A bundle of signed events → [`OkData::Bundle`].
    Export {
        /// Only this room (every event when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// Verify and store the events of a bundle → [`OkData::Import`].
    Import {
        /// The bundle, base64 (standard alphabet, padded).
        bundle: String,
    },
    /// The daemon's state → [`OkData::Status`].
    Status,
    /// Connected links → [`OkData::Peers`].
    Peers,
    /// Make a new prekey now and tell every room → [`OkData::Prekey`].
    PrekeyRotate,
    /// Stop the daemon gracefully (as SIGTERM does) → [`OkData::Done`].
    Shutdown,
}

impl Op {
    /// A plain text message to `room` (no file, pin, urgency or Matrix
    /// attribution).
    pub fn send_text(room: &str, text: &str) -> Op {
        Op::Send {
            room: room.into(),
            text: text.into(),
            via: None,
            location: None,
            urgent: false,
            file: None,
        }
    }

    /// Every operation name, as `op` spells it.
    pub const NAMES: [&str; 19] = [
        "room_create",
        "room_invite",
        "room_remove",
        "room_promote",
        "room_demote",
        "room_leave",
        "room_rename",
        "room_repair",
        "rooms",
        "send",
        "save",
        "messages",
        "follow",
        "export",
        "import",
        "status",
        "peers",
        "prekey_rotate",
        "shutdown",
    ];

    /// Whether the operation may write (its reply then waits for the
    /// commit).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Op::RoomCreate { .. }
                | Op::RoomInvite { .. }
                | Op::RoomRemove { .. }
                | Op::RoomPromote { .. }
                | Op::RoomDemote { .. }
                | Op::RoomLeave { .. }
                | Op::RoomRename { .. }
                | Op::RoomRepair { .. }
                | Op::Send { .. }
                | Op::Save { .. }
                | Op::Import { .. }
                | Op::PrekeyRotate
        )
    }
}

/// One reply line: the version and the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Always [`API_VERSION`].
    pub v: u32,
    /// What it says.
    #[serde(flatten)]
    pub body: ReplyBody,
}

impl Reply {
    /// The final success reply.
    pub fn ok(data: OkData) -> Self {
        Reply {
            v: API_VERSION,
            body: ReplyBody::Ok(data),
        }
    }

    /// One streamed line.
    pub fn line(line: MessageLine) -> Self {
        Reply {
            v: API_VERSION,
            body: ReplyBody::Line(line),
        }
    }

    /// The final failure reply.
    pub fn error(code: ErrorCode, message: impl std::fmt::Display) -> Self {
        Reply {
            v: API_VERSION,
            body: ReplyBody::Error(ApiError::new(code, message)),
        }
    }

    /// Whether this reply ends the exchange.
    pub fn is_final(&self) -> bool {
        !matches!(self.body, ReplyBody::Line(_))
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply {
            v: API_VERSION,
            body: ReplyBody::Error(e),
        }
    }
}

/// The body of a reply: `{"ok":…}`, `{"line":…}` or `{"error":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyBody {
    /// The operation succeeded (final).
    Ok(OkData),
    /// One item of a stream (`messages`, `follow`).
    Line(MessageLine),
    /// The operation failed (final).
    Error(ApiError),
}

/// What a successful operation returns. Each shape has its own key, so a
/// reply is self-describing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OkData {
    /// `{"event_id","attachment":{"size","chunks"}}`: a file sent (the
    /// announcement's event ID).
    Sent {
        /// The announcement's event ID (hex).
        event_id: String,
        /// The file's size and chunk count.
        attachment: SentFile,
    },
    /// `{"file":FileData}`: a complete attachment (`save`).
    File {
        /// The file.
        file: FileData,
    },
    /// `{"event_id"}`: the stored (and committed) event.
    Event {
        /// Event ID (hex).
        event_id: String,
    },
    /// `{"room_id"}`: the created room.
    Room {
        /// Room ID (hex).
        room_id: String,
    },
    /// `{"rooms":[RoomInfo…]}`.
    Rooms {
        /// The rooms.
        rooms: Vec<RoomInfo>,
    },
    /// `{"lines":N}`: the end of a `messages` stream of N lines.
    Lines {
        /// How many `line` replies came before.
        lines: usize,
    },
    /// `{"bundle":B64}`: an exported bundle.
    Bundle {
        /// The bundle, base64.
        bundle: String,
    },
    /// `{"import":ImportSummary}`.
    Import {
        /// What the import did (boxed: the largest reply data).
        import: Box<ImportSummary>,
    },
    /// `{"repair":RepairReport}`.
    Repair {
        /// What the repair did.
        repair: RepairReport,
    },
    /// `{"prekey":PrekeyRotation}`.
    Prekey {
        /// What the rotation did.
        prekey: PrekeyRotation,
    },
    /// `{"peers":[PeerInfo…]}`.
    Peers {
        /// One entry per connected link.
        peers: Vec<PeerInfo>,
    },
    /// `{"status":{…}}` (the shape is in `protocol-spec/daemon.md`,
    /// "Status").
    Status {
        /// The status object.
        status: serde_json::Value,
    },
    /// `{}`: done, nothing to report (`shutdown`, the end of `follow`).
    Done {},
}

/// A file's size and chunk count, as `send --file` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentFile {
    /// Bytes.
    pub size: u64,
    /// Chunk events.
    pub chunks: u64,
}

/// A file in a request or a reply: `{"name","media_type","data"}`, `data`
/// base64 (standard alphabet, padded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileData {
    /// The file's name (no path).
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Its bytes, base64.
    pub data: String,
}

/// One connected link, as `peers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The daemon's link number.
    pub link: u64,
    /// `lan` or `ble`.
    pub kind: String,
    /// Remote address (a multiaddr or a BLE address; empty if unknown).
    pub address: String,
    /// When the link came up (Unix milliseconds).
    pub since: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

/// A failed request: a machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl std::fmt::Display) -> Self {
        ApiError {
            code,
            message: message.to_string(),
        }
    }
}

impl From<&AppError> for ApiError {
    fn from(e: &AppError) -> Self {
        ApiError::new(error_code(e), e)
    }
}

/// Error codes (`code`). The first five concern the request line itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not a JSON object, or a field is missing or mistyped.
    BadRequest,
    /// `v` is not a version this daemon speaks.
    UnsupportedVersion,
    /// `op` names no operation.
    UnknownOp,
    /// The request line (or the reply it would get) exceeds its limit.
    TooLarge,
    /// The daemon serves this operation only without a daemon, or not at
    /// all (reserved).
    Unsupported,
    /// A field's value is invalid (malformed ID, text too long, a refused
    /// room operation, a rejected bundle, no identity).
    BadInput,
    /// The room is unknown to this device.
    NotFound,
    /// A limit of the daemon is reached (too many followers, a slow
    /// follower); trying again later may work.
    Busy,
    /// The daemon failed (storage, files).
    Runtime,
    /// The daemon's disk is full: nothing new is stored (own messages
    /// included); what is held stays readable. Free space and retry.
    DiskFull,
}

impl ErrorCode {
    /// Every code, as `code` spells it.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownOp,
        ErrorCode::TooLarge,
        ErrorCode::Unsupported,
        ErrorCode::BadInput,
        ErrorCode::NotFound,
        ErrorCode::Busy,
        ErrorCode::Runtime,
        ErrorCode::DiskFull,
    ];

    /// Whether the client's request (rather than the daemon) is at fault.
    pub fn is_client_error(self) -> bool {
        !matches!(
            self,
            ErrorCode::Busy | ErrorCode::Runtime | ErrorCode::DiskFull
        )
    }
}

/// The code of an application error.
pub fn error_code(e: &AppError) -> ErrorCode {
    match e {
        AppError::UnknownRoom(_) => ErrorCode::NotFound,
        // A downgrade: the files are fine, this build is too old (exit 2).
        e if e.is_too_new() => ErrorCode::BadInput,
        AppError::DataDir(
            DataDirError::NotInitialized(_) | DataDirError::AlreadyInitialized(_),
        )
        | AppError::Contacts(ContactError::BadCard(_))
        | AppError::Session(_)
        | AppError::Bundle(_)
        | AppError::BadContact(_)
        | AppError::BadInput(_) => ErrorCode::BadInput,
        _ => ErrorCode::Runtime,
    }
}

/// The two fields every line is checked for before its operation is
/// parsed (other fields are skipped, not kept).
#[derive(Deserialize)]
struct Header {
    v: Option<serde_json::Value>,
    op: Option<serde_json::Value>,
}

/// Checks and parses one request line (without its newline): a line that
/// is not a JSON object, names another version or an unknown operation,
/// or lacks a field gets a typed error, never a failure of the daemon.
pub fn decode_request(line: &[u8]) -> Result<Request, ApiError> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("request line longer than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    // A struct also deserializes from a JSON array: insist on an object.
    if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "bad request: not a JSON object",
        ));
    }
    let h: Header = serde_json::from_slice(line)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad request: {e}")))?;
    match h.v {
        Some(v) if v.as_u64() == Some(u64::from(API_VERSION)) => {}
        Some(v) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "unsupported control API version {} (this daemon speaks {API_VERSION})",
                    excerpt(&v)
                ),
            ));
        }
        None => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "bad request: missing field `v`",
            ));
        }
    }
    match h.op {
        Some(serde_json::Value::String(op)) if Op::NAMES.contains(&op.as_str()) => {}
        Some(op) => {
            return Err(ApiError::new(
                ErrorCode::UnknownOp,
                format!("unknown operation {}", excerpt(&op)),
            ));
        }
        None => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "bad request: missing field `op`",
            ));
        }
    }
    serde_json::from_slice(line)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("bad request: {e}")))
}

/// At most 40 characters of a JSON value, for error messages.
fn excerpt(v: &serde_json::Value) -> String {
    v.to_string().chars().take(40).collect()
}

#[cfg(test)]
mod tests;

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}
