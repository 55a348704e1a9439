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
//!         / [1, 4, [lat: uint, lon: uint, accuracy_m: uint, text: tstr]]
//!                                     ; a location pin, with optional text
//! chat    = [1, 0 / 3 / 4, body, flags: uint]
//!                                     ; chat content with flags (bit 0: urgent)
//! ```
//!
//! Chat content (types 0, 3 and 4) may carry a fourth element, `flags`
//! (`protocol-spec/encryption.md` §7, "Urgent messages"): present only when
//! not zero, only known bits ([`FLAG_URGENT`]). It is inside the encryption,
//! so relays that cannot read the room see nothing different.
//!
//! Type 4 (`protocol-spec/encryption.md` §7, "Location pins") carries
//! WGS 84 degrees in units of 10⁻⁷ degree, offset to be unsigned:
//! `lat = (latitude + 90) × 10⁷` (at most [`MAX_LAT_E7`]) and
//! `lon = (longitude + 180) × 10⁷` (at most [`MAX_LON_E7`]);
//! `accuracy_m` 0 means unknown, at most [`MAX_ACCURACY_M`].
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
use crate::room::attachment::{Announcement, AttachmentError};
use crate::room::receipt::{ReceiptBody, ReceiptError};

/// Version of the content format.
pub const CONTENT_VERSION: u64 = 1;
/// Longest room name, in UTF-8 bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 64;
/// Longest Matrix user ID or event ID in attribution, in UTF-8 bytes (the
/// Matrix specification's own limit for user IDs).
pub const MAX_MATRIX_ID_BYTES: usize = 255;
/// Largest encoded latitude: 180° in 10⁻⁷ degree.
pub const MAX_LAT_E7: u64 = 1_800_000_000;
/// Largest encoded longitude: 360° in 10⁻⁷ degree.
pub const MAX_LON_E7: u64 = 3_600_000_000;
/// Largest accuracy radius of a location pin, in metres.
pub const MAX_ACCURACY_M: u32 = 1_000_000;
/// Longest Matrix display name in attribution, in UTF-8 bytes.
pub const MAX_VIA_NAME_BYTES: usize = 256;
/// Content flag: an urgent message (`protocol-spec/encryption.md` §7).
pub const FLAG_URGENT: u64 = 1;

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
    /// A location outside the globe, or an accuracy over its limit.
    #[error("location: {0}")]
    Location(&'static str),
    /// A malformed or out-of-limits attachment announcement.
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    /// Flags that are zero, unknown, or on content that takes none.
    #[error("content flags {0} not allowed here")]
    Flags(u64),
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
    /// A location pin, with optional text.
    Location {
        /// Where.
        at: Location,
        /// What it says (may be empty).
        text: String,
    },
    /// Chat text that a bridge device brought from a Matrix user.
    Bridged {
        /// The text.
        text: String,
        /// Who wrote it on Matrix.
        via: Via,
    },
    /// A file announced with an optional caption
    /// (`protocol-spec/attachments.md` §2).
    Attachment {
        /// The file's name, type, size, hash and key.
        file: Box<Announcement>,
        /// The caption (may be empty).
        text: String,
    },
    /// Chat content marked urgent by its sender (never nested, never a
    /// room name or a receipt: [`Content::urgent`]).
    Urgent(Box<Content>),
}

/// A point on the globe (WGS 84), in 10⁻⁷ degree, with an accuracy radius.
/// JSON: `{"lat":52.52,"lon":13.405,"accuracy_m":10}` (degrees; `accuracy_m`
/// left out when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "LocationJson", into = "LocationJson")]
pub struct Location {
    /// Latitude in 10⁻⁷ degree, −90° to 90°.
    pub lat_e7: i64,
    /// Longitude in 10⁻⁷ degree, −180° to 180°.
    pub lon_e7: i64,
    /// Accuracy radius in metres (0: unknown).
    pub accuracy_m: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LocationJson {
    lat: f64,
    lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    accuracy_m: Option<u32>,
}

impl From<Location> for LocationJson {
    fn from(l: Location) -> Self {
        LocationJson {
            lat: l.lat_e7 as f64 / 1e7,
            lon: l.lon_e7 as f64 / 1e7,
            accuracy_m: (l.accuracy_m > 0).then_some(l.accuracy_m),
        }
    }
}

impl TryFrom<LocationJson> for Location {
    type Error = ContentError;
    fn try_from(j: LocationJson) -> Result<Self, ContentError> {
        Location::from_degrees(j.lat, j.lon, j.accuracy_m.unwrap_or(0))
    }
}

impl Location {
    /// A location from degrees, rounded to 10⁻⁷ degree (about 1 cm).
    pub fn from_degrees(lat: f64, lon: f64, accuracy_m: u32) -> Result<Self, ContentError> {
        if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
            return Err(ContentError::Location(
                "latitude must be between -90 and 90",
            ));
        }
        if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
            return Err(ContentError::Location(
                "longitude must be between -180 and 180",
            ));
        }
        if accuracy_m > MAX_ACCURACY_M {
            return Err(ContentError::Location("accuracy over 1,000 km"));
        }
        Ok(Location {
            lat_e7: (lat * 1e7).round() as i64,
            lon_e7: (lon * 1e7).round() as i64,
            accuracy_m,
        })
    }

    /// Parses `LAT,LON` in decimal degrees (as `send --location` takes it).
    pub fn parse(s: &str, accuracy_m: u32) -> Result<Self, ContentError> {
        let bad =
            ContentError::Location("expected LAT,LON in decimal degrees, e.g. 52.5200,13.4050");
        let (lat, lon) = s.split_once(',').ok_or(bad.clone())?;
        let num = |t: &str| t.trim().parse::<f64>().map_err(|_| bad.clone());
        Location::from_degrees(num(lat)?, num(lon)?, accuracy_m)
    }

    /// `52.5200000, 13.4050000` for people.
    pub fn degrees(&self) -> String {
        format!(
            "{:.5}, {:.5}",
            self.lat_e7 as f64 / 1e7,
            self.lon_e7 as f64 / 1e7
        )
    }

    fn encoded(&self) -> (u64, u64) {
        (
            (self.lat_e7 + 900_000_000) as u64,
            (self.lon_e7 + 1_800_000_000) as u64,
        )
    }

    fn decode(lat: u64, lon: u64, accuracy_m: u64) -> Result<Self, ContentError> {
        if lat > MAX_LAT_E7 || lon > MAX_LON_E7 {
            return Err(ContentError::Location("outside the globe"));
        }
        let accuracy_m = u32::try_from(accuracy_m)
            .ok()
            .filter(|a| *a <= MAX_ACCURACY_M)
            .ok_or(ContentError::Location("accuracy over 1,000 km"))?;
        Ok(Location {
            lat_e7: lat as i64 - 900_000_000,
            lon_e7: lon as i64 - 1_800_000_000,
            accuracy_m,
        })
    }
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

/// Chat content taken apart for display: text, attribution, location pin
/// and the urgent mark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatParts {
    /// The text (may be empty for a pin).
    pub text: String,
    /// Who wrote it on Matrix (bridged text).
    pub via: Option<Via>,
    /// Where (a location pin).
    pub location: Option<Location>,
    /// A file (an attachment's announcement).
    pub attachment: Option<Box<Announcement>>,
    /// Whether its sender marked it urgent.
    pub urgent: bool,
}

impl Content {
    /// Whether this is chat text people read (plain, bridged or a pin,
    /// urgent or not).
    pub fn is_chat(&self) -> bool {
        match self {
            Content::Text(_)
            | Content::Bridged { .. }
            | Content::Location { .. }
            | Content::Attachment { .. } => true,
            Content::Urgent(c) => c.is_chat(),
            Content::RoomName(_) | Content::Receipt(_) => false,
        }
    }

    /// `content` marked urgent; content that cannot carry the mark (a room
    /// name, a receipt) or carries it already is returned as it is.
    pub fn urgent(content: Content) -> Content {
        match content {
            c @ (Content::Text(_)
            | Content::Bridged { .. }
            | Content::Location { .. }
            | Content::Attachment { .. }) => Content::Urgent(Box::new(c)),
            other => other,
        }
    }

    /// Whether its sender marked it urgent.
    pub fn is_urgent(&self) -> bool {
        matches!(self, Content::Urgent(_))
    }

    /// Chat content taken apart (empty text for other content).
    pub fn into_chat(self) -> ChatParts {
        match self {
            Content::Text(text) => ChatParts {
                text,
                ..ChatParts::default()
            },
            Content::Bridged { text, via } => ChatParts {
                text,
                via: Some(via),
                ..ChatParts::default()
            },
            Content::Location { at, text } => ChatParts {
                text,
                location: Some(at),
                ..ChatParts::default()
            },
            Content::Attachment { file, text } => ChatParts {
                text,
                attachment: Some(file),
                ..ChatParts::default()
            },
            Content::Urgent(c) => ChatParts {
                urgent: true,
                ..c.into_chat()
            },
            Content::RoomName(_) | Content::Receipt(_) => ChatParts::default(),
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
            // The pin's three numbers and inner array take up to 16 bytes
            // more than a plain text's encoding.
            Content::Location { text, .. } => text.len() + 16,
            Content::RoomName(n) => n.len(),
            Content::Receipt(_) => 0,
            // The flags element takes one byte more.
            Content::Urgent(c) => c.chat_len() + 1,
            // Its numbers, hash and key take up to 80 bytes more.
            Content::Attachment { file, text } => {
                file.name.len() + file.media_type.len() + text.len() + 80
            }
        }
    }

    /// Canonical CBOR encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w, 0);
        w.into_bytes()
    }

    /// Writes the content array, with `flags` as a fourth element when
    /// not zero.
    fn write(&self, w: &mut Writer, flags: u64) {
        let len = if flags == 0 { 3 } else { 4 };
        match self {
            Content::Urgent(c) => return c.write(w, flags | FLAG_URGENT),
            Content::Text(t) => w.array(len).u64(CONTENT_VERSION).u64(0).text(t),
            Content::RoomName(n) => w.array(len).u64(CONTENT_VERSION).u64(1).text(n),
            Content::Receipt(b) => {
                w.array(len).u64(CONTENT_VERSION).u64(2);
                b.write(w);
                &mut *w
            }
            Content::Location { at, text } => {
                let (lat, lon) = at.encoded();
                w.array(len)
                    .u64(CONTENT_VERSION)
                    .u64(4)
                    .array(4)
                    .u64(lat)
                    .u64(lon)
                    .u64(u64::from(at.accuracy_m))
                    .text(text)
            }
            Content::Attachment { file, text } => {
                w.array(len).u64(CONTENT_VERSION).u64(5).array(6);
                file.write(w);
                w.text(text)
            }
            Content::Bridged { text, via } => w
                .array(len)
                .u64(CONTENT_VERSION)
                .u64(3)
                .array(4)
                .text(text)
                .text(&via.matrix_user)
                .text(&via.name)
                .text(&via.matrix_event),
        };
        if flags != 0 {
            w.u64(flags);
        }
    }

    /// Strict decoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ContentError> {
        cbor::validate(bytes, MAX_CONTENT_DEPTH)?;
        let mut r = Reader::new(bytes);
        let len = r.array()?;
        if len != 3 && len != 4 {
            return Err(CborError::WrongType {
                expected: "content array of 3 or 4",
            }
            .into());
        }
        let v = r.u64()?;
        if v != CONTENT_VERSION {
            return Err(ContentError::UnknownVersion(v));
        }
        let ty = r.u64()?;
        let content = Self::read_body(&mut r, ty)?;
        let flags = if len == 4 { Some(r.u64()?) } else { None };
        r.finish()?;
        match flags {
            None => Ok(content),
            // Zero is written by leaving the element out.
            Some(0) => Err(ContentError::Flags(0)),
            Some(FLAG_URGENT) if content.is_chat() => Ok(Content::Urgent(Box::new(content))),
            Some(other) => Err(ContentError::Flags(other)),
        }
    }

    /// The body of content of type `ty`.
    fn read_body(r: &mut Reader<'_>, ty: u64) -> Result<Self, ContentError> {
        match ty {
            0 => Ok(Content::Text(r.text()?.to_owned())),
            1 => {
                let s = r.text()?;
                if s.len() > MAX_ROOM_NAME_BYTES {
                    return Err(ContentError::NameTooLong);
                }
                Ok(Content::RoomName(s.to_owned()))
            }
            2 => Ok(Content::Receipt(ReceiptBody::read(r)?)),
            3 => {
                r.array_of(4, "bridged text array of 4")?;
                let text = r.text()?.to_owned();
                let via = Via {
                    matrix_user: r.text()?.to_owned(),
                    name: r.text()?.to_owned(),
                    matrix_event: r.text()?.to_owned(),
                };
                via.check()?;
                Ok(Content::Bridged { text, via })
            }
            5 => {
                r.array_of(6, "attachment array of 6")?;
                let file = Box::new(Announcement::read(r)?);
                let text = r.text()?.to_owned();
                Ok(Content::Attachment { file, text })
            }
            4 => {
                r.array_of(4, "location array of 4")?;
                let (lat, lon, acc) = (r.u64()?, r.u64()?, r.u64()?);
                let text = r.text()?.to_owned();
                let at = Location::decode(lat, lon, acc)?;
                Ok(Content::Location { at, text })
            }
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
        fn locations_round_trip(lat in -90.0f64..=90.0, lon in -180.0f64..=180.0, acc in 0u32..=MAX_ACCURACY_M, t in ".{0,20}") {
            let at = Location::from_degrees(lat, lon, acc).unwrap();
            let c = Content::Location { at, text: t };
            prop_assert_eq!(Content::from_bytes(&c.to_bytes()).unwrap(), c);
            let json = serde_json::to_string(&at).unwrap();
            prop_assert_eq!(serde_json::from_str::<Location>(&json).unwrap(), at);
        }

        #[test]
        fn urgent_chat_round_trips(t in ".{0,40}", pin in any::<bool>()) {
            let inner = if pin {
                Content::Location { at: Location::from_degrees(1.0, 2.0, 3).unwrap(), text: t }
            } else {
                Content::Text(t)
            };
            let c = Content::urgent(inner.clone());
            let bytes = c.to_bytes();
            prop_assert_eq!(bytes.len(), inner.to_bytes().len() + 1);
            prop_assert_eq!(Content::from_bytes(&bytes).unwrap(), c.clone());
            let parts = c.into_chat();
            prop_assert!(parts.urgent);
            prop_assert_eq!(parts.location.is_some(), pin);
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

    #[test]
    fn flags_are_canonical_and_only_on_chat() {
        let flagged = |ty: u64, flags: u64| {
            let mut w = Writer::new();
            w.array(4).u64(CONTENT_VERSION).u64(ty).text("x").u64(flags);
            Content::from_bytes(&w.into_bytes())
        };
        assert_eq!(
            flagged(0, FLAG_URGENT),
            Ok(Content::urgent(Content::Text("x".into())))
        );
        // Zero is written by leaving the element out; unknown bits and
        // flags on a room name are refused.
        for (ty, flags) in [(0, 0), (0, 2), (0, 3), (1, FLAG_URGENT)] {
            assert_eq!(
                flagged(ty, flags),
                Err(ContentError::Flags(flags)),
                "{ty} {flags}"
            );
        }
        // The vector of `protocol-spec/encryption.md` §7, "Flags".
        assert_eq!(
            Content::urgent(Content::Text("help".into())).to_bytes(),
            [0x84, 0x01, 0x00, 0x64, b'h', b'e', b'l', b'p', 0x01]
        );
        // A room name or a receipt cannot be made urgent.
        let name = Content::RoomName("n".into());
        assert_eq!(Content::urgent(name.clone()), name);
        assert!(!Content::urgent(name).is_urgent());
    }

    #[test]
    fn an_unknown_type_is_named_whatever_its_body() {
        let mut w = Writer::new();
        w.array(3).u64(CONTENT_VERSION).u64(9).array(0);
        assert_eq!(
            Content::from_bytes(&w.into_bytes()),
            Err(ContentError::UnknownType(9))
        );
    }

    #[test]
    fn locations_outside_the_globe_are_refused() {
        for bad in ["91,0", "0,181", "x,1", "1", "NaN,0", "0,inf"] {
            assert!(Location::parse(bad, 0).is_err(), "{bad}");
        }
        assert!(Location::from_degrees(0.0, 0.0, MAX_ACCURACY_M + 1).is_err());
        let at = Location::parse(" 52.52 , 13.405", 10).unwrap();
        assert_eq!(
            (at.lat_e7, at.lon_e7, at.accuracy_m),
            (525_200_000, 134_050_000, 10)
        );
        assert_eq!(at.degrees(), "52.52000, 13.40500");
        // Encoded values past the globe do not decode.
        let mut w = Writer::new();
        w.array(3)
            .u64(CONTENT_VERSION)
            .u64(4)
            .array(4)
            .u64(MAX_LAT_E7 + 1)
            .u64(0)
            .u64(0)
            .text("");
        assert!(matches!(
            Content::from_bytes(&w.into_bytes()),
            Err(ContentError::Location(_))
        ));
    }
}
