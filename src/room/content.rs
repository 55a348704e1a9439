//! Encrypted message content (`protocol-spec/encryption.md`, "Content").
//!
//! The plaintext inside a `Message` event, before padding:
//!
//! ```text
//! content = [1, 0, text: tstr]        ; chat text
//!         / [1, 1, room_name: tstr]   ; sets the room's display name
//!         / [1, 2, receipt]           ; only in `Receipt` events
//!         / [1, 3, [text: tstr, matrix_user: tstr, name: tstr, matrix_event: tstr]]
//!                                     ; chat text a bridge brought from Matrix
//! ```
//!
//! Type 3 is what a bridge device sends for a Matrix user
//! (`protocol-spec/bridge.md`, "Attribution"): the text, the Matrix user's
//! ID and display name, and the Matrix event ID it came from (so the bridge
//! can tell after a crash whether it already sent it).
//!
//! `receipt` is [`crate::room::receipt`]'s body.
//!
//! The room name lives here, encrypted, so relays never see it.

use thiserror::Error;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::room::receipt::{ReceiptBody, ReceiptError};

/// Version of the content format.
pub const CONTENT_VERSION: u64 = 1;
/// Longest room name, in UTF-8 bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 64;
/// Longest Matrix user ID or event ID in attribution, in UTF-8 bytes (the
/// Matrix specification's own limit for user IDs).
pub const MAX_MATRIX_ID_BYTES: usize = 255;
/// Longest Matrix display name in attribution, in UTF-8 bytes.
pub const MAX_VIA_NAME_BYTES: usize = 256;

/// Why content did not parse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ContentError {
    /// Malformed encoding.
    #[error("content encoding: {0}")]
    Cbor(#[from] CborError),
    /// Unknown version.
    #[error("unknown content version {0}")]
    UnknownVersion(u64),
    /// Unknown content type (newer sender); shown as unsupported.
    #[error("unknown content type {0}")]
    UnknownType(u64),
    /// Room name longer than [`MAX_ROOM_NAME_BYTES`].
    #[error("room name longer than {MAX_ROOM_NAME_BYTES} bytes")]
    NameTooLong,
    /// A malformed receipt.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
    /// Attribution longer than its limits, or an empty Matrix ID.
    #[error("attribution: {0}")]
    Via(&'static str),
}

/// Deepest nesting of content (a receipt's exception list).
const MAX_CONTENT_DEPTH: usize = 5;

/// Decrypted message content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Chat text.
    Text(String),
    /// Sets the room name.
    RoomName(String),
    /// Delivery and read figures (the content of a `Receipt` event).
    Receipt(ReceiptBody),
    /// Chat text that a bridge device brought from a Matrix user.
    Bridged {
        /// The text.
        text: String,
        /// Who wrote it on Matrix.
        via: Via,
    },
}

/// Who wrote a bridged message on Matrix (`protocol-spec/bridge.md`,
/// "Attribution"). Shown by `messages` as `"via":{"matrix_user","name"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Via {
    /// The Matrix user ID (`@user:domain`).
    pub matrix_user: String,
    /// Their display name on Matrix (may be empty).
    pub name: String,
    /// The Matrix event the text came from (not shown to people).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub matrix_event: String,
}

/// A display name cut to [`MAX_VIA_NAME_BYTES`] at a character boundary.
pub fn truncate_name(name: &str) -> String {
    let mut end = name.len().min(MAX_VIA_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

impl Via {
    /// Checks the limits of `protocol-spec/limits.md`, "Bridge".
    pub fn check(&self) -> Result<(), ContentError> {
        if self.matrix_user.is_empty() || self.matrix_user.len() > MAX_MATRIX_ID_BYTES {
            return Err(ContentError::Via("Matrix user ID empty or too long"));
        }
        if self.matrix_event.len() > MAX_MATRIX_ID_BYTES {
            return Err(ContentError::Via("Matrix event ID too long"));
        }
        if self.name.len() > MAX_VIA_NAME_BYTES {
            return Err(ContentError::Via("display name too long"));
        }
        Ok(())
    }
}

impl Content {
    /// Whether this is chat text people read (plain or bridged).
    pub fn is_chat(&self) -> bool {
        matches!(self, Content::Text(_) | Content::Bridged { .. })
    }

    /// Chat text and its attribution (empty text for other content).
    pub fn into_chat(self) -> (String, Option<Via>) {
        match self {
            Content::Text(text) => (text, None),
            Content::Bridged { text, via } => (text, Some(via)),
            Content::RoomName(_) | Content::Receipt(_) => (String::new(), None),
        }
    }

    /// The bytes of chat content that count against the message size limit:
    /// the text plus, for bridged text, its attribution's strings.
    pub fn chat_len(&self) -> usize {
        match self {
            Content::Text(t) => t.len(),
            Content::Bridged { text, via } => {
                text.len() + via.matrix_user.len() + via.name.len() + via.matrix_event.len()
            }
            Content::RoomName(n) => n.len(),
            Content::Receipt(_) => 0,
        }
    }

    /// Canonical CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Content::Text(t) => w.array(3).u64(CONTENT_VERSION).u64(0).text(t),
            Content::RoomName(n) => w.array(3).u64(CONTENT_VERSION).u64(1).text(n),
            Content::Receipt(b) => {
                w.array(3).u64(CONTENT_VERSION).u64(2);
                b.write(&mut w);
                &mut w
            }
            Content::Bridged { text, via } => w
                .array(3)
                .u64(CONTENT_VERSION)
                .u64(3)
                .array(4)
                .text(text)
                .text(&via.matrix_user)
                .text(&via.name)
                .text(&via.matrix_event),
        };
        w.into_bytes()
    }

    /// Strict decoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ContentError> {
        cbor::validate(bytes, MAX_CONTENT_DEPTH)?;
        let mut r = Reader::new(bytes);
        r.array_of(3, "content array of 3")?;
        let v = r.u64()?;
        if v != CONTENT_VERSION {
            return Err(ContentError::UnknownVersion(v));
        }
        let ty = r.u64()?;
        if ty == 2 {
            let body = ReceiptBody::read(&mut r)?;
            r.finish()?;
            return Ok(Content::Receipt(body));
        }
        if ty == 3 {
            r.array_of(4, "bridged text array of 4")?;
            let text = r.text()?.to_owned();
            let via = Via {
                matrix_user: r.text()?.to_owned(),
                name: r.text()?.to_owned(),
                matrix_event: r.text()?.to_owned(),
            };
            r.finish()?;
            via.check()?;
            return Ok(Content::Bridged { text, via });
        }
        let s = r.text()?;
        r.finish()?;
        match ty {
            0 => Ok(Content::Text(s.to_owned())),
            1 if s.len() > MAX_ROOM_NAME_BYTES => Err(ContentError::NameTooLong),
            1 => Ok(Content::RoomName(s.to_owned())),
            other => Err(ContentError::UnknownType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn content_round_trips(t in ".{0,40}", name in any::<bool>()) {
            let c = if name && t.len() <= MAX_ROOM_NAME_BYTES { Content::RoomName(t) } else { Content::Text(t) };
            prop_assert_eq!(Content::from_bytes(&c.to_bytes()).unwrap(), c);
        }

        #[test]
        fn bridged_round_trips(t in ".{0,40}", user in "@[a-z]{1,20}:[a-z]{1,10}", name in ".{0,20}", ev in "[$a-zA-Z0-9]{0,40}") {
            let c = Content::Bridged { text: t, via: Via { matrix_user: user, name, matrix_event: ev } };
            prop_assert_eq!(Content::from_bytes(&c.to_bytes()).unwrap(), c);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Content::from_bytes(&bytes);
        }
    }

    #[test]
    fn attribution_limits_are_checked_on_decode() {
        let via = |user: &str, name: &str| Via {
            matrix_user: user.into(),
            name: name.into(),
            matrix_event: String::new(),
        };
        for bad in [
            via("", "x"),
            via(&"u".repeat(MAX_MATRIX_ID_BYTES + 1), "x"),
            via("@a:b", &"n".repeat(MAX_VIA_NAME_BYTES + 1)),
        ] {
            let c = Content::Bridged {
                text: "hi".into(),
                via: bad,
            };
            assert!(matches!(
                Content::from_bytes(&c.to_bytes()),
                Err(ContentError::Via(_))
            ));
        }
    }
}
