//! Opaque identifiers: room IDs and event IDs.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A malformed identifier in text form.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("malformed {what}: expected {len} hex digits")]
pub struct IdParseError {
    what: &'static str,
    len: usize,
}

fn parse_hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], IdParseError> {
    let err = IdParseError { what, len: N * 2 };
    if s.len() != N * 2 {
        return Err(err);
    }
    let v = data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .map_err(|_| err.clone())?;
    v.try_into().map_err(|_| err)
}

macro_rules! hex_id {
    ($(#[$m:meta])* $name:ident, $len:expr, $what:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length of the identifier in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, IdParseError> {
                parse_hex::<$len>(s, $what).map(Self)
            }
        }
    };
}

hex_id!(
    /// An opaque room identifier: 16 random bytes chosen by the room's
    /// creator. It names no one and says nothing about the room.
    RoomId,
    16,
    "room ID"
);

hex_id!(
    /// An event ID: SHA-256 over the domain-separated signed event
    /// (`protocol-spec/event.md`, "Event ID"). It is the deduplication key.
    EventId,
    32,
    "event ID"
);
