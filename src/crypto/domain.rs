//! Domain-separation prefixes for every signature and hash meshrelay makes.
//!
//! Each signed or hashed byte string begins with one of these prefixes, so a
//! signature made for one purpose can never be replayed as another
//! (`protocol-spec/identity.md`, `protocol-spec/event.md`). Each prefix ends in
//! a NUL byte so no prefix is a prefix of another.

/// Signature binding an x25519 key-agreement key to a device signing key.
pub const KX_BINDING: &[u8] = b"meshrelay/v1/kx-binding\0";
/// Signature over a contact card.
pub const CARD: &[u8] = b"meshrelay/v1/card\0";
/// Hash of an event's signed fields (the digest that is signed).
pub const EVENT_DIGEST: &[u8] = b"meshrelay/v1/event-digest\0";
/// Signature over an event digest.
pub const EVENT_SIG: &[u8] = b"meshrelay/v1/event-sig\0";
/// Hash of a signed event, giving its event ID.
pub const EVENT_ID: &[u8] = b"meshrelay/v1/event-id\0";
/// Hash input for the human-comparable fingerprint.
pub const FINGERPRINT: &[u8] = b"meshrelay/v1/fingerprint\0";
/// HKDF salt of the sender-chain ratchet (`protocol-spec/encryption.md`).
pub const SENDER_CHAIN: &[u8] = b"meshrelay/v1/sender-chain\0";
/// Associated data prefix of a room message ciphertext.
pub const MESSAGE_AAD: &[u8] = b"meshrelay/v1/message-aad\0";
/// HPKE `info` prefix of a key share.
pub const KEY_SHARE_INFO: &[u8] = b"meshrelay/v1/key-share\0";
/// HKDF info and AEAD prefix of a sealed contact card
/// (`protocol-spec/encryption.md`, "Sealed roster").
pub const ROSTER_CARD: &[u8] = b"meshrelay/v2/roster-card\0";
/// HPKE `info` prefix of a roster secret sealed to an invitee.
pub const ROSTER_SECRET_INFO: &[u8] = b"meshrelay/v2/roster-secret\0";
/// Hash input binding a room ID to its creator (`protocol-spec/rooms.md`).
pub const ROOM_ID: &[u8] = b"meshrelay/v1/room-id\0";
/// SipHash input label of a room token in a link's announcements
/// (`protocol-spec/wire.md`, "Room tokens").
pub const ROOM_TOKEN: &[u8] = b"meshrelay/v5/room-token\0";
/// SipHash input label of a device token in a link's `Rooms` frame
/// (`protocol-spec/wire.md`, "Invitees").
pub const DEVICE_TOKEN: &[u8] = b"meshrelay/v5/device-token\0";
/// Hash of a homeserver bundle, giving its Matrix transaction ID.
pub const BUNDLE_TXN: &[u8] = b"meshrelay/v1/bundle-txn\0";
/// Hash of a whole item set in set reconciliation (the equality check).
pub const RECONCILE_SET: &[u8] = b"meshrelay/v1/reconcile-set\0";
/// Salted hash of one item in set reconciliation (short ID and sketch hashes).
pub const RECONCILE_ITEM: &[u8] = b"meshrelay/v1/reconcile-item\0";
