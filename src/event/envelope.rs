//! The signed event envelope (`protocol-spec/event.md`).
//!
//! ```text
//! event = [ version: 1, room: bstr(16), sender: bstr(32), seq: uint,
//!           prev: [* bstr(32)], origin_ts_ms: uint, expires_ms: uint,
//!           kind: uint, payload: bstr, sig: bstr(64) ]
//! digest   = SHA-512("meshrelay/v1/event-digest\0" || cbor(first 9 fields as an array))
//! sig      = Ed25519(sender, "meshrelay/v1/event-sig\0" || digest)   -- verify_strict
//! event_id = SHA-256("meshrelay/v1/event-id\0" || digest || sig)
//! ```
//!
//! Signing the SHA-512 digest means the (possibly 15 KiB) payload is hashed
//! exactly once on the receive path; the signature check and the event ID
//! then work on 64 and 150 bytes. The digest is computed straight from the
//! received bytes: the signed array is the event array with its first byte
//! changed from `0x8a` to `0x89` and the trailing signature removed.
//!
//! ```text
//! ```
//!
//! Every field but the payload is cleartext: relays and the homeserver read
//! the room ID (opaque), sender key, sequence, predecessors, timestamps and
//! kind so they can deduplicate, detect gaps and drop expired events without
//! being able to read the room.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};
use thiserror::Error;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::crypto::domain;
use crate::crypto::identity::Identity;
use crate::crypto::key_cache::KeyCache;
use crate::crypto::keys::{DeviceId, KeyError};
use crate::event::ids::{EventId, RoomId};
use crate::event::kind::EventKind;
use crate::limits::{
    EVENT_FORMAT_VERSION, MAX_EVENT_BYTES, MAX_EVENT_LIFETIME_MS, MAX_PAYLOAD_BYTES,
    MAX_PREV_EVENTS,
};

/// Number of fields in an encoded event.
const EVENT_FIELDS: usize = 10;
/// Nesting depth of an event (the envelope array and the predecessor list).
const EVENT_DEPTH: usize = 2;

/// Why an event was rejected. Structural errors mean a peer sent garbage
/// (penalise it); [`EventError::BadSignature`] means a forgery or corruption.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EventError {
    /// The encoded event exceeds `MAX_EVENT_BYTES`.
    #[error("event is {0} bytes, over the {MAX_EVENT_BYTES}-byte limit")]
    TooLarge(usize),
    /// Malformed or non-canonical CBOR.
    #[error("event encoding: {0}")]
    Cbor(#[from] CborError),
    /// The envelope version is not one this node speaks.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u64),
    /// More predecessors than `MAX_PREV_EVENTS`, or a repeated one.
    #[error("predecessor list is longer than {MAX_PREV_EVENTS} or repeats an ID")]
    BadPrev,
    /// The payload exceeds `MAX_PAYLOAD_BYTES`.
    #[error("payload is {0} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")]
    PayloadTooLarge(usize),
    /// Expiry before origin, or a lifetime over `MAX_EVENT_LIFETIME_MS`.
    #[error("expiry is before the origin time or beyond the maximum lifetime")]
    BadExpiry,
    /// The sender key is not a valid ed25519 public key.
    #[error("sender key: {0}")]
    BadKey(KeyError),
    /// The signature does not verify.
    #[error("event signature does not verify")]
    BadSignature,
}

impl EventError {
    /// Stable error-class name for test vectors and `meshrelay decode`.
    pub fn class(&self) -> &'static str {
        match self {
            EventError::TooLarge(_) | EventError::PayloadTooLarge(_) => "oversize",
            EventError::Cbor(e) => e.class(),
            EventError::UnknownVersion(_) => "unknown_version",
            EventError::BadPrev | EventError::BadExpiry => "schema",
            EventError::BadKey(e) => e.class(),
            EventError::BadSignature => "bad_signature",
        }
    }
}

/// The fields of an event before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsignedEvent {
    /// Opaque room identifier.
    pub room: RoomId,
    /// Sender's device key.
    pub sender: DeviceId,
    /// Sequence number per (room, sender), starting at 1.
    pub seq: u64,
    /// Causal predecessors (DAG heads), sorted and unique, at most
    /// `MAX_PREV_EVENTS`.
    pub prev: Vec<EventId>,
    /// Origin timestamp, ms since the Unix epoch, from the caller's clock.
    pub origin_ts_ms: u64,
    /// Signed expiry, ms since the Unix epoch.
    pub expires_ms: u64,
    /// What the event is.
    pub kind: EventKind,
    /// Payload: ciphertext for encrypted kinds.
    pub payload: Vec<u8>,
}

/// A signed event, as it travels and is stored. Holds its canonical bytes
/// and ID, so re-encoding never happens on the relay path.
///
/// It remembers whether its signature was verified (by [`Event::decode`],
/// [`Event::verify_once`], or because this device signed it): an event
/// cannot change after it is made, so [`Event::verify`] then costs nothing,
/// and an event verified where it entered the device (a bundle, a link) is
/// not verified again by the node and the rooms layer.
#[derive(Debug, Clone)]
pub struct Event {
    fields: UnsignedEvent,
    sig: [u8; 64],
    bytes: Vec<u8>,
    id: EventId,
    digest: [u8; 64],
    /// The sender key, decompressed once when the event was decoded or
    /// signed, so verification does not decompress it again. Boxed: the
    /// decompressed point is 192 bytes and events travel inside enums.
    /// `None` only for an event read back from this device's store
    /// ([`Event::decode_stored`]), which is verified already.
    sender_key: Option<Box<VerifyingKey>>,
    /// The signature verified over these bytes (never set otherwise).
    verified: bool,
}

/// Two events are equal when their canonical bytes are (whether either
/// was verified yet does not matter).
impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Event {}

impl UnsignedEvent {
    fn check_limits(&self) -> Result<(), EventError> {
        if self.prev.len() > MAX_PREV_EVENTS || self.prev.windows(2).any(|w| w[0] >= w[1]) {
            return Err(EventError::BadPrev);
        }
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EventError::PayloadTooLarge(self.payload.len()));
        }
        if self.expires_ms < self.origin_ts_ms
            || self.expires_ms - self.origin_ts_ms > MAX_EVENT_LIFETIME_MS
        {
            return Err(EventError::BadExpiry);
        }
        Ok(())
    }

    fn write_fields(&self, w: &mut Writer) {
        w.u64(EVENT_FORMAT_VERSION)
            .bytes(self.room.as_bytes())
            .bytes(self.sender.as_bytes())
            .u64(self.seq)
            .array(self.prev.len());
        for p in &self.prev {
            w.bytes(p.as_bytes());
        }
        w.u64(self.origin_ts_ms)
            .u64(self.expires_ms)
            .u64(self.kind.to_u64())
            .bytes(&self.payload);
    }

    /// The canonical CBOR of the nine signed fields (an array of 9).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.payload.len() + 128 + 34 * self.prev.len());
        w.array(EVENT_FIELDS - 1);
        self.write_fields(&mut w);
        w.into_bytes()
    }

    /// Signs the event. `prev` is sorted and deduplicated first. Fails if a
    /// limit is exceeded or the identity is not the sender.
    pub fn sign(mut self, identity: &Identity) -> Result<Event, EventError> {
        if identity.device_id() != self.sender {
            return Err(EventError::BadSignature);
        }
        self.prev.sort();
        self.prev.dedup();
        // `Other(1)` encodes like `Message`: store the variant a decoder
        // will produce, so a signed event equals its decoded form.
        self.kind = EventKind::from_u64(self.kind.to_u64());
        self.check_limits()?;
        let mut bytes = self.signing_bytes();
        let digest = signing_digest(&bytes[1..]);
        let sig = identity.sign(domain::EVENT_SIG, &digest);
        // Turn the 9-array into the 10-array by appending the signature.
        bytes[0] = ARRAY_10_HEAD;
        let mut w = Writer::with_capacity(SIG_ITEM_LEN);
        w.bytes(&sig);
        bytes.extend_from_slice(&w.into_bytes());
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(bytes.len()));
        }
        let id = event_id(&digest, &sig);
        Ok(Event {
            fields: self,
            sig,
            bytes,
            id,
            digest,
            sender_key: Some(Box::new(identity.device_id().verifying_key())),
            // Signed here, with the key the sender field names.
            verified: true,
        })
    }
}

/// CBOR head of a 9-item array (the signed fields).
const ARRAY_9_HEAD: u8 = 0x89;
/// CBOR head of a 10-item array (the signed event).
const ARRAY_10_HEAD: u8 = 0x8a;
/// Encoded length of the signature item: a 2-byte head and 64 bytes.
const SIG_ITEM_LEN: usize = 66;
/// Length of the signed message: the signature domain and the digest.
const EVENT_SIG_MSG_LEN: usize = domain::EVENT_SIG.len() + 64;

/// SHA-512 over the domain and the signed 9-array, given the array's body
/// (everything after its one-byte head).
fn signing_digest(body: &[u8]) -> [u8; 64] {
    Sha512::new()
        .chain_update(domain::EVENT_DIGEST)
        .chain_update([ARRAY_9_HEAD])
        .chain_update(body)
        .finalize()
        .into()
}

/// The event ID from the signing digest and the signature.
fn event_id(digest: &[u8; 64], sig: &[u8; 64]) -> EventId {
    EventId(
        Sha256::new()
            .chain_update(domain::EVENT_ID)
            .chain_update(digest)
            .chain_update(sig)
            .finalize()
            .into(),
    )
}

impl Event {
    /// Decodes an event and checks everything but the signature: size,
    /// canonical CBOR, version, limits and the sender key. Use
    /// [`Event::decode`] unless the signature is checked separately (for
    /// example in a batch).
    pub fn decode_unverified(bytes: &[u8]) -> Result<Event, EventError> {
        Self::decode_with(bytes, |k| {
            DeviceId::from_bytes_with_key(k).map(|(id, vk)| (id, Some(vk)))
        })
    }

    /// [`Event::decode`] with sender keys validated through `cache`, which
    /// saves a point decompression per event from a known sender.
    pub fn decode_cached(bytes: &[u8], cache: &mut KeyCache) -> Result<Event, EventError> {
        let ev = Self::decode_with(bytes, |k| {
            cache.device_key(k).map(|(id, vk)| (id, Some(vk)))
        })?;
        ev.verify()?;
        Ok(ev)
    }

    fn decode_with(
        bytes: &[u8],
        sender_key: impl FnOnce(&[u8; 32]) -> Result<(DeviceId, Option<VerifyingKey>), KeyError>,
    ) -> Result<Event, EventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(bytes.len()));
        }
        cbor::validate(bytes, EVENT_DEPTH)?;
        let mut r = Reader::new(bytes);
        let n = r.array()?;
        let version = r.u64()?;
        if version != EVENT_FORMAT_VERSION {
            return Err(EventError::UnknownVersion(version));
        }
        if n != EVENT_FIELDS {
            return Err(CborError::WrongType {
                expected: "event array of 10",
            }
            .into());
        }
        let room = RoomId(r.byte_array("16-byte room ID")?);
        let (sender, sender_key) =
            sender_key(&r.byte_array("32-byte sender key")?).map_err(EventError::BadKey)?;
        let seq = r.u64()?;
        let n_prev = r.array()?;
        if n_prev > MAX_PREV_EVENTS {
            return Err(EventError::BadPrev);
        }
        let mut prev = Vec::with_capacity(n_prev);
        for _ in 0..n_prev {
            prev.push(EventId(r.byte_array("32-byte event ID")?));
        }
        let origin_ts_ms = r.u64()?;
        let expires_ms = r.u64()?;
        let kind = EventKind::from_u64(r.u64()?);
        let payload = r.bytes()?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(EventError::PayloadTooLarge(payload.len()));
        }
        let sig = r.byte_array("64-byte signature")?;
        r.finish()?;
        let fields = UnsignedEvent {
            room,
            sender,
            seq,
            prev,
            origin_ts_ms,
            expires_ms,
            kind,
            payload: payload.to_vec(),
        };
        fields.check_limits()?;
        // The strict reader only accepts canonical items and the schema is
        // fixed, so the input is the unique encoding of `fields` and `sig`.
        // The signature item is therefore the last SIG_ITEM_LEN bytes.
        let body = &bytes[1..bytes.len() - SIG_ITEM_LEN];
        let digest = signing_digest(body);
        let id = event_id(&digest, &sig);
        Ok(Event {
            fields,
            sig,
            bytes: bytes.to_vec(),
            id,
            digest,
            sender_key: sender_key.map(Box::new),
            verified: false,
        })
    }

    /// Decodes an event this device's own store holds: its signature was
    /// verified before it was stored (the node stores nothing else), so it
    /// counts as verified. Never for bytes from anywhere else.
    /// Its sender key was validated then too: it is not decompressed
    /// again (a history replay decodes every event of a room).
    pub(crate) fn decode_stored(bytes: &[u8]) -> Result<Event, EventError> {
        let mut ev = Self::decode_with(bytes, |k| Ok((DeviceId::from_validated(*k), None)))?;
        ev.verified = true;
        Ok(ev)
    }

    /// Decodes and fully verifies an event.
    pub fn decode(bytes: &[u8]) -> Result<Event, EventError> {
        let mut ev = Self::decode_unverified(bytes)?;
        ev.verify_once()?;
        Ok(ev)
    }

    /// [`Event::verify`], remembering success: later checks of this event
    /// (and its clones) cost nothing.
    pub fn verify_once(&mut self) -> Result<(), EventError> {
        self.verify()?;
        self.verified = true;
        Ok(())
    }

    /// Verifies the signature with `verify_strict` (the same check as
    /// [`DeviceId::verify`], with the sender key already decompressed), or
    /// nothing if that was done already ([`Event`]).
    pub fn verify(&self) -> Result<(), EventError> {
        if self.verified {
            return Ok(());
        }
        let mut msg = [0u8; EVENT_SIG_MSG_LEN];
        msg[..domain::EVENT_SIG.len()].copy_from_slice(domain::EVENT_SIG);
        msg[domain::EVENT_SIG.len()..].copy_from_slice(&self.digest);
        // Only a stored event (verified) has no key: unreachable here.
        let Some(key) = self.sender_key.as_deref() else {
            return Err(EventError::BadSignature);
        };
        key.verify_strict(&msg, &Signature::from_bytes(&self.sig))
            .map_err(|_| EventError::BadSignature)
    }

    /// The event ID.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The canonical signed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.sig
    }

    /// The signed fields.
    pub fn fields(&self) -> &UnsignedEvent {
        &self.fields
    }

    /// Room.
    pub fn room(&self) -> RoomId {
        self.fields.room
    }

    /// Sender.
    pub fn sender(&self) -> DeviceId {
        self.fields.sender
    }

    /// Sequence number per (room, sender).
    pub fn seq(&self) -> u64 {
        self.fields.seq
    }

    /// Kind.
    pub fn kind(&self) -> EventKind {
        self.fields.kind
    }

    /// Payload.
    pub fn payload(&self) -> &[u8] {
        &self.fields.payload
    }

    /// Causal predecessors.
    pub fn prev(&self) -> &[EventId] {
        &self.fields.prev
    }

    /// Origin timestamp (ms).
    pub fn origin_ts_ms(&self) -> u64 {
        self.fields.origin_ts_ms
    }

    /// Signed expiry (ms).
    pub fn expires_ms(&self) -> u64 {
        self.fields.expires_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(identity: &Identity, payload_len: usize) -> Event {
        UnsignedEvent {
            room: RoomId([3; 16]),
            sender: identity.device_id(),
            seq: 1,
            prev: vec![EventId([9; 32]), EventId([1; 32])],
            origin_ts_ms: 1_700_000_000_000,
            expires_ms: 1_700_000_000_000 + 86_400_000,
            kind: EventKind::Message,
            payload: vec![0xab; payload_len],
        }
        .sign(identity)
        .unwrap()
    }

    /// An event remembers a successful verification only: bytes whose
    /// signature does not verify still fail every check after decoding,
    /// and a verified copy equals an unverified one.
    #[test]
    fn an_event_remembers_only_a_verification_that_passed() {
        let id = Identity::from_seed(&[5; 32]);
        let ev = sample(&id, 40);
        let mut bad = ev.bytes().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut forged = Event::decode_unverified(&bad).unwrap();
        assert!(forged.verify().is_err());
        assert!(forged.verify_once().is_err());
        assert!(
            forged.clone().verify().is_err(),
            "a failure is not remembered"
        );
        assert!(Event::decode(&bad).is_err());
        let mut fresh = Event::decode_unverified(ev.bytes()).unwrap();
        assert!(!fresh.verified);
        fresh.verify_once().unwrap();
        assert!(fresh.verified && fresh.clone().verified);
        assert!(ev.verified, "signed here");
        assert_eq!(Event::decode_unverified(ev.bytes()).unwrap(), fresh);
    }

    #[test]
    fn sign_decode_round_trip_keeps_bytes_and_id() {
        let id = Identity::from_seed(&[5; 32]);
        let ev = sample(&id, 300);
        let back = Event::decode(ev.bytes()).unwrap();
        assert_eq!(back, ev);
        assert_eq!(back.id(), ev.id());
        assert_eq!(
            back.fields().signing_bytes()[1..],
            ev.bytes()[1..ev.bytes().len() - 66]
        );
        // prev was sorted on signing
        assert!(back.prev()[0] < back.prev()[1]);
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let id = Identity::from_seed(&[5; 32]);
        let ev = sample(&id, 40);
        for i in 0..ev.bytes().len() {
            let mut b = ev.bytes().to_vec();
            b[i] ^= 0x01;
            assert!(Event::decode(&b).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn oversize_payload_is_refused_at_signing() {
        let id = Identity::from_seed(&[5; 32]);
        let r = UnsignedEvent {
            room: RoomId([3; 16]),
            sender: id.device_id(),
            seq: 1,
            prev: vec![],
            origin_ts_ms: 0,
            expires_ms: 1,
            kind: EventKind::Message,
            payload: vec![0; MAX_PAYLOAD_BYTES + 1],
        }
        .sign(&id);
        assert!(matches!(r, Err(EventError::PayloadTooLarge(_))));
    }
}
