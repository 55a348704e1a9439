//! What the application layer reports, with the JSON shapes of the CLI
//! contract (`protocol-spec/app.md`).

use serde::{Deserialize, Serialize};

/// One member as `rooms` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Device ID (`mr1…`).
    pub device_id: String,
    /// Display name from the member's contact card.
    pub name: String,
    /// Whether the member is an admin.
    pub admin: bool,
    /// The member's card says it is a Matrix bridge
    /// (`protocol-spec/bridge.md`): what it sends came from Matrix, and
    /// the room is readable on the homeserver.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bridge: bool,
}

/// One room as `rooms` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Room ID (hex).
    pub room_id: String,
    /// Room name (from the latest readable name event; empty if none).
    pub name: String,
    /// Current members, by device ID.
    pub members: Vec<MemberInfo>,
}

/// A detected per-sender sequence gap.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GapInfo {
    /// Sender device ID.
    pub sender: String,
    /// First missing sequence number.
    pub from_seq: u64,
    /// Last missing sequence number.
    pub to_seq: u64,
}

/// One line of `messages` output (serialises to the CLI's JSON shapes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageLine {
    /// A readable message:
    /// `{"event_id","sender","ts","text","delivered_to","read_by"}`, and
    /// `"next_hop":true` on an own message a peer or the homeserver holds.
    Text {
        /// Event ID.
        event_id: String,
        /// Sender device ID.
        sender: String,
        /// Origin timestamp (ms).
        ts: u64,
        /// The text.
        text: String,
        /// Devices whose delivered receipts cover it (never the sender),
        /// ascending.
        #[serde(default)]
        delivered_to: Vec<String>,
        /// Devices whose read receipts cover it (never the sender),
        /// ascending.
        #[serde(default)]
        read_by: Vec<String>,
        /// An own message that a peer showed it holds (delivered to the
        /// mesh) or that the homeserver accepted: stored on the next hop.
        #[serde(default, skip_serializing_if = "is_false")]
        next_hop: bool,
        /// Text a bridge brought from Matrix: who wrote it there
        /// (`"via":{"matrix_user","name"}`, `protocol-spec/bridge.md`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<crate::room::content::Via>,
        /// A location pin: `"location":{"lat","lon","accuracy_m"}`
        /// (degrees; `accuracy_m` left out when unknown).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<crate::room::content::Location>,
        /// Marked urgent by its sender, within the sender's burst
        /// (`"urgent":true`, left out otherwise; `protocol-spec/wire.md`,
        /// "Urgent messages").
        #[serde(default, skip_serializing_if = "is_false")]
        urgent: bool,
        /// A file announced with the text as its caption
        /// (`protocol-spec/attachments.md` §7).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment: Option<Box<AttachmentInfo>>,
    },
    /// A message this device cannot read:
    /// `{"event_id","sender","ts","undecryptable":true,"reason"}`.
    Undecryptable {
        /// Event ID.
        event_id: String,
        /// Sender device ID.
        sender: String,
        /// Origin timestamp (ms).
        ts: u64,
        /// Always true.
        undecryptable: bool,
        /// Why.
        reason: String,
    },
    /// A message whose sender was not a member at its causal position (a
    /// removed member's message, concurrent with or after the removal):
    /// `{"event_id","sender","ts","unauthorized":true,"reason"}`, never its
    /// text (`protocol-spec/rooms.md` §5).
    Unauthorized {
        /// Event ID.
        event_id: String,
        /// Sender device ID.
        sender: String,
        /// Origin timestamp (ms).
        ts: u64,
        /// Always true.
        unauthorized: bool,
        /// Why.
        reason: String,
    },
    /// A detected gap: `{"gap":{"sender","from_seq","to_seq"}}`.
    Gap {
        /// The gap.
        gap: GapInfo,
    },
    /// A sender signed more than one event at one sequence number:
    /// `{"fork":{"sender","seq","event_ids":[…]}}`, printed before the
    /// copy that counts (the lowest event ID, `protocol-spec/rooms.md`
    /// §7.1).
    Fork {
        /// The fork.
        fork: ForkInfo,
    },
}

/// A fork shown to people (`protocol-spec/app.md` §4).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ForkInfo {
    /// Sender device ID.
    pub sender: String,
    /// The sequence number signed more than once.
    pub seq: u64,
    /// The copies' event IDs, ascending: the first is the one that counts.
    pub event_ids: Vec<String>,
}

/// One event an import rejected (never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedInfo {
    /// Position in the bundle.
    pub index: usize,
    /// Event ID, when the event decoded far enough.
    pub event_id: Option<String>,
    /// Why.
    pub reason: String,
}

/// A stored event that changes nothing: a membership change no valid admin
/// signed, or a key share or prekey update from a non-member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnauthorizedInfo {
    /// Event ID.
    pub event_id: String,
    /// Why it has no effect.
    pub reason: String,
}

/// What an import did: `{"imported","duplicates","rejected"}` plus details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// New events stored.
    pub imported: usize,
    /// Events already held (or repeated in the bundle).
    pub duplicates: usize,
    /// Events rejected and not stored.
    pub rejected: usize,
    /// The rejected events with their reasons.
    pub rejections: Vec<RejectedInfo>,
    /// Stored events that were refused by room authorization (a courier
    /// keeps them because others may cite them; they change nothing).
    pub unauthorized: Vec<UnauthorizedInfo>,
    /// Rooms of this device whose members changed (or that it joined), with
    /// their members now: the node's standing for them (not printed).
    #[serde(skip)]
    pub members: std::collections::BTreeMap<
        crate::event::RoomId,
        std::collections::BTreeSet<crate::crypto::DeviceId>,
    >,
    /// Rooms this device carries without being a member, with their
    /// members as verified from the membership chain (not printed): the
    /// node carries those members' events past the per-key stranger
    /// budgets (`Command::CarriedMembers`, `wire.md` "Carried rooms").
    #[serde(skip)]
    pub carried: std::collections::BTreeMap<
        crate::event::RoomId,
        std::collections::BTreeSet<crate::crypto::DeviceId>,
    >,
    /// Rooms (not this device's yet) where an invite of this device waits
    /// for the events it cites (not printed): the node lets their history
    /// in past the stranger budgets (`Command::ExpectRoom`).
    #[serde(skip)]
    pub expecting: std::collections::BTreeSet<crate::event::RoomId>,
    /// Rooms of this device where another member's message became readable
    /// (not printed): a delivered receipt is due (`rooms.md` §9).
    #[serde(skip)]
    pub readable: std::collections::BTreeSet<crate::event::RoomId>,
    /// Rooms whose events could not be processed and were not stored (the
    /// other rooms of the bundle were). Left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_rooms: Vec<FailedRoom>,
}

/// A room of an import that failed as a whole (`protocol-spec/app.md` §3):
/// nothing of it was stored; its events count neither as imported nor as
/// rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRoom {
    /// Room ID.
    pub room_id: String,
    /// Why.
    pub reason: String,
}

impl ImportSummary {
    /// The summary of a verified bundle before anything is stored: its
    /// duplicates and the envelopes it rejected, with reasons.
    pub fn from_report(report: &crate::bundle::ImportReport) -> Self {
        ImportSummary {
            duplicates: report.duplicates,
            rejections: report
                .rejected
                .iter()
                .map(|r| RejectedInfo {
                    index: r.index,
                    event_id: r.event_id.map(|i| i.to_string()),
                    reason: r.reason.clone(),
                })
                .collect(),
            ..ImportSummary::default()
        }
    }
}

/// What `room repair` did (`protocol-spec/app.md` §7, the JSON contract of
/// `meshrelay room repair --json` and of the control API's `room_repair`):
/// `{"room_id","events","kept","dropped_count","dropped":[{"event_id","reason"}],
/// "key_state":{"before_bytes","after_bytes"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Room ID (hex).
    pub room_id: String,
    /// Stored events of the room.
    pub events: usize,
    /// Events the rebuilt history holds (admitted, or waiting for
    /// predecessors from a sender with standing).
    pub kept: usize,
    /// Stored events the rebuild left out (they stay stored).
    pub dropped_count: usize,
    /// The first `MAX_REBUILD_DROPPED_LISTED` of them, with reasons.
    pub dropped: Vec<DroppedInfo>,
    /// The room-key state before and after.
    pub key_state: KeyStateInfo,
}

/// One event `room repair` left out of the rebuilt history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedInfo {
    /// Event ID (hex).
    pub event_id: String,
    /// Why (one line).
    pub reason: String,
}

/// The size of the stored room-key state before and after a repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStateInfo {
    /// Bytes before (0 when none was stored).
    pub before_bytes: usize,
    /// Bytes after.
    pub after_bytes: usize,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A chat message a person composed ([`crate::app::Device::send_draft`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Draft<'a> {
    /// The text (may be empty for a location pin).
    pub text: &'a str,
    /// Who wrote it on Matrix (a bridge's message).
    pub via: Option<&'a crate::room::content::Via>,
    /// A location pin.
    pub location: Option<&'a crate::room::content::Location>,
    /// Marked urgent (`protocol-spec/wire.md`, "Urgent messages").
    pub urgent: bool,
    /// A file sent with the text as its caption
    /// (`protocol-spec/attachments.md`).
    pub file: Option<FileDraft<'a>>,
}

/// A file to send: its bytes, name and media type.
#[derive(Debug, Clone, Copy)]
pub struct FileDraft<'a> {
    /// The file's name (no path).
    pub name: &'a str,
    /// Its media type, e.g. `image/jpeg`.
    pub media_type: &'a str,
    /// Its bytes (at most `MAX_ATTACHMENT_BYTES`).
    pub bytes: &'a [u8],
}

impl<'a> Draft<'a> {
    /// Plain text.
    pub fn text(text: &'a str) -> Self {
        Draft {
            text,
            ..Draft::default()
        }
    }
}

/// A message's file, as `messages --json` shows it:
/// `{"name","size","media_type","complete","path"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// Whether every chunk is held (`save` can write it).
    pub complete: bool,
    /// Where `save` last wrote it (`null` before).
    pub path: Option<String>,
}

/// Where a stored event stands in its room's history at this device
/// ([`crate::app::Device::place_of`]): a check for tools and the
/// simulator, nobody is shown it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPlace {
    /// In the room's history.
    Admitted,
    /// Waiting for these predecessors, which the room's history lacks.
    Pending(Vec<crate::event::EventId>),
    /// Neither: refused by the room's admission, or left out by the
    /// rebuild, with why.
    Absent(String),
}
