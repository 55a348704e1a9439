//! One sentence per command that changes something:
//!
//! ```text
//! Sent to north camp.
//! Created north camp with room ID 3f1c…(64 hex digits).
//! Invited Ben (fingerprint 77831 67776 …) to north camp.
//! Removed Ben (fingerprint 77831 67776 …) from north camp.
//! Imported 7 events: 7 new, 0 duplicates, 0 refused.
//! Exported 12 events of north camp to stick.bundle.
//! ```
//!
//! Room names come from [`super::room_label`]; people are named with their
//! full-length short fingerprint, because these are the moments a person
//! confirms whom they let in or out.

use super::{count, short_fingerprint};
use crate::app::ImportSummary;
use crate::crypto::DeviceId;
use crate::safe_text::for_terminal;

/// A person in a sentence: `Ben (fingerprint 77831 67776 …)`, or `a device
/// without a name (fingerprint …)`.
pub fn person(name: Option<&str>, device: &DeviceId) -> String {
    let fp = short_fingerprint(device);
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => format!("{} (fingerprint {fp})", for_terminal(n)),
        None => format!("a device without a name (fingerprint {fp})"),
    }
}

/// `send`.
pub fn sent(room: &str) -> String {
    format!("Sent to {room}.")
}

/// `room create`: the full room ID, which the other commands take.
pub fn created(name: &str, room_id: &str) -> String {
    format!(
        "Created {} with room ID {}.",
        super::room_label(name, room_id),
        for_terminal(room_id)
    )
}

/// `room invite`.
pub fn invited(person: &str, room: &str) -> String {
    format!("Invited {person} to {room}.")
}

/// `room remove`.
pub fn removed(person: &str, room: &str) -> String {
    format!("Removed {person} from {room}.")
}

/// `room leave`.
pub fn left(room: &str) -> String {
    format!("Left {room}.")
}

/// `room rename`.
pub fn renamed(name: &str) -> String {
    format!("Renamed the room to “{name}”.")
}

/// `room promote`.
pub fn promoted(person: &str, room: &str) -> String {
    format!("Made {person} an admin of {room}.")
}

/// `room demote`.
pub fn demoted(person: &str, room: &str) -> String {
    format!("{person} is no longer an admin of {room}.")
}

/// `import`: the counts, then one sentence per room that failed as a whole
/// and a pointer to the reasons when events were refused.
pub fn imported(s: &ImportSummary) -> String {
    let total = s
        .imported
        .saturating_add(s.duplicates)
        .saturating_add(s.rejected);
    let mut out = format!(
        "Imported {}: {} new, {}, {} refused.",
        count(total as u64, "event", "events"),
        s.imported,
        count(s.duplicates as u64, "duplicate", "duplicates"),
        s.rejected
    );
    for f in &s.failed_rooms {
        out.push_str(&format!(
            "\nRoom {} could not be imported: {}.",
            super::room_label("", &f.room_id),
            for_terminal(&f.reason)
        ));
    }
    if s.rejected > 0 {
        out.push_str("\nThe reasons for refusals are in `meshrelay import --json`.");
    }
    out
}

/// `save`: `Saved photo.jpg (512000 bytes) to /tmp/photo.jpg.`
pub fn saved(name: &str, size: u64, file: &str) -> String {
    format!(
        "Saved {} ({}) to {}.",
        for_terminal(name),
        count(size, "byte", "bytes"),
        for_terminal(file)
    )
}

/// `export` to a file (`room` is the room's label with `--room`).
pub fn exported(events: usize, room: Option<&str>, file: &str) -> String {
    let what = count(events as u64, "event", "events");
    match room {
        Some(r) => format!("Exported {what} of {r} to {}.", for_terminal(file)),
        None => format!("Exported {what} to {}.", for_terminal(file)),
    }
}
