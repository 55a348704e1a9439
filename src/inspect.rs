//! Recognise, decode and verify any meshrelay object a user hands us: the
//! logic behind `meshrelay decode`.
//!
//! Input forms:
//! * a contact card as text (`MRC1:…`, case and whitespace ignored),
//! * a signed event as binary canonical CBOR,
//! * a signed event as hexadecimal text (whitespace ignored).
//!
//! Every failure is a typed [`InspectError`] with a stable class; nothing
//! here panics on any input.

use serde_json::{Value, json};
use thiserror::Error;

use crate::crypto::{CardError, ContactCard, fingerprint};
use crate::event::{Event, EventError, Timeliness, timeliness};
use crate::limits::MAX_EVENT_BYTES;

/// Largest input `inspect` accepts: the hex form of the largest event plus
/// generous room for whitespace.
pub const MAX_INSPECT_INPUT: usize = 4 * MAX_EVENT_BYTES + 4096;

/// A decoded and verified object.
#[derive(Debug, Clone)]
pub enum Inspected {
    /// A verified signed event.
    Event(Box<Event>),
    /// A verified contact card.
    Card(Box<ContactCard>),
}

/// Why the input was rejected.
#[derive(Debug, Error)]
pub enum InspectError {
    /// Nothing to decode.
    #[error("empty input")]
    Empty,
    /// More than [`MAX_INSPECT_INPUT`] bytes.
    #[error("input is larger than {MAX_INSPECT_INPUT} bytes")]
    TooLarge,
    /// Text that is neither a card nor hex.
    #[error("text input is neither an MRC1: contact card nor hexadecimal")]
    UnknownText,
    /// An invalid event.
    #[error("invalid event: {0}")]
    Event(#[from] EventError),
    /// An invalid contact card.
    #[error("invalid contact card: {0}")]
    Card(#[from] CardError),
}

impl InspectError {
    /// Stable error class (the vector classes, plus `unrecognised`).
    pub fn class(&self) -> &'static str {
        match self {
            InspectError::Empty | InspectError::UnknownText => "unrecognised",
            InspectError::TooLarge => "oversize",
            InspectError::Event(e) => e.class(),
            InspectError::Card(e) => e.class(),
        }
    }
}

fn is_hex_text(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_hexdigit() || c.is_whitespace())
}

/// Recognises and verifies `input`.
pub fn inspect(input: &[u8]) -> Result<Inspected, InspectError> {
    if input.len() > MAX_INSPECT_INPUT {
        return Err(InspectError::TooLarge);
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(InspectError::Empty);
        }
        if trimmed
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("mrc1:"))
        {
            return Ok(Inspected::Card(Box::new(ContactCard::from_text(trimmed)?)));
        }
        if is_hex_text(trimmed) {
            let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = data_encoding::HEXLOWER_PERMISSIVE
                .decode(compact.as_bytes())
                .map_err(|_| InspectError::UnknownText)?;
            return Ok(Inspected::Event(Box::new(Event::decode(&bytes)?)));
        }
        // Printable text that is neither: a binary event always starts
        // with the non-ASCII byte 0x8a, so this cannot be one.
        if trimmed
            .chars()
            .all(|c| !c.is_control() || c.is_whitespace())
        {
            return Err(InspectError::UnknownText);
        }
    }
    Ok(Inspected::Event(Box::new(Event::decode(input)?)))
}

/// The fields of a card as JSON.
pub fn card_json(card: &ContactCard) -> Value {
    json!({
        "type": "contact_card",
        "device_id": card.device_id.to_string(),
        "name": card.name,
        "fingerprint": fingerprint(&card.device_id),
        "created_ms": card.created_ms,
        "kx_key": data_encoding::HEXLOWER.encode(card.kx_key.as_bytes()),
        "prekey_id": card.prekey_id,
        "prekey": data_encoding::HEXLOWER.encode(card.prekey.as_bytes()),
        "card": card.to_text(),
    })
}

/// The name of a [`Timeliness`] verdict.
pub fn timeliness_name(t: Timeliness) -> &'static str {
    match t {
        Timeliness::Current => "current",
        Timeliness::FromFuture => "from_future",
        Timeliness::Expired => "expired",
    }
}

/// The fields of an event as JSON; `now_ms` (the caller's clock) adds the
/// clock-skew verdict.
pub fn event_json(ev: &Event, now_ms: Option<u64>) -> Value {
    let mut v = json!({
        "type": "event",
        "event_id": ev.id().to_string(),
        "version": crate::limits::EVENT_FORMAT_VERSION,
        "room": ev.room().to_string(),
        "sender": ev.sender().to_string(),
        "seq": ev.seq(),
        "prev": ev.prev().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "origin_ts_ms": ev.origin_ts_ms(),
        "expires_ms": ev.expires_ms(),
        "kind": ev.kind().name(),
        "kind_value": ev.kind().to_u64(),
        "payload_len": ev.payload().len(),
        "payload_hex": data_encoding::HEXLOWER.encode(ev.payload()),
        "size": ev.bytes().len(),
        "signature": data_encoding::HEXLOWER.encode(ev.signature()),
    });
    if let (Some(now), Some(obj)) = (now_ms, v.as_object_mut()) {
        obj.insert(
            "timeliness".into(),
            Value::from(timeliness_name(timeliness(ev, now))),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_inputs_are_typed_errors() {
        assert!(matches!(inspect(b""), Err(InspectError::Empty)));
        assert!(matches!(inspect(b"  \n"), Err(InspectError::Empty)));
        assert!(matches!(inspect(b"hello"), Err(InspectError::UnknownText)));
        assert!(matches!(inspect(b"abc"), Err(InspectError::UnknownText)));
        assert!(matches!(inspect(b"mrc1:"), Err(InspectError::Card(_))));
        assert!(matches!(inspect(&[0x8a]), Err(InspectError::Event(_))));
        assert!(matches!(
            inspect(&vec![0u8; MAX_INSPECT_INPUT + 1]),
            Err(InspectError::TooLarge)
        ));
    }
}
