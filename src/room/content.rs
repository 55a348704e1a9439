//! Encrypted message content (`protocol-spec/encryption.md`, "Content").
//!
//! The plaintext inside a `Message` event, before padding:
//!
//! ```text
//! content = [1, 0, text: tstr]        ; chat text
//!         / [1, 1, room_name: tstr]   ; sets the room's display name
//!         / [1, 2, receipt]           ; only in `Receipt` events
//! ```
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
}

impl Content {
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
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Content::from_bytes(&bytes);
        }
    }
}
