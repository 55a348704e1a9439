//! Event kinds (`protocol-spec/event.md`, "Kinds").

/// What an event is. The kind is cleartext so relays can apply retention
/// policy, but the payload of encrypted kinds is opaque to them. Unknown
/// kinds are carried and relayed unchanged (extensibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// An encrypted room message (chat text and other content).
    Message,
    /// A membership change: create, invite, remove, leave, promote, demote.
    Membership,
    /// A key share: sender-chain keys sealed to members' prekeys.
    KeyShare,
    /// A receipt (delivered / read), encrypted.
    Receipt,
    /// A prekey update published by a device.
    PrekeyUpdate,
    /// One chunk of an attachment (`protocol-spec/attachments.md`):
    /// cleartext framing, encrypted data, never cited by other events.
    Chunk,
    /// A kind this implementation does not know; carried opaquely.
    Other(u64),
}

impl EventKind {
    /// Wire value.
    pub fn to_u64(self) -> u64 {
        match self {
            EventKind::Message => 1,
            EventKind::Membership => 2,
            EventKind::KeyShare => 3,
            EventKind::Receipt => 4,
            EventKind::PrekeyUpdate => 5,
            EventKind::Chunk => 6,
            EventKind::Other(v) => v,
        }
    }

    /// From the wire value.
    pub fn from_u64(v: u64) -> Self {
        match v {
            1 => EventKind::Message,
            2 => EventKind::Membership,
            3 => EventKind::KeyShare,
            4 => EventKind::Receipt,
            5 => EventKind::PrekeyUpdate,
            6 => EventKind::Chunk,
            other => EventKind::Other(other),
        }
    }

    /// Whether the payload is encrypted with the sender's chain (messages
    /// and receipts, `protocol-spec/encryption.md` §4): such events are
    /// decrypted in chain order, travel in the message send class and
    /// budget, and are not control events.
    pub fn in_sender_chain(self) -> bool {
        matches!(self, EventKind::Message | EventKind::Receipt)
    }

    /// A short lowercase name for display and JSON.
    pub fn name(self) -> String {
        match self {
            EventKind::Message => "message".into(),
            EventKind::Membership => "membership".into(),
            EventKind::KeyShare => "key_share".into(),
            EventKind::Receipt => "receipt".into(),
            EventKind::PrekeyUpdate => "prekey_update".into(),
            EventKind::Chunk => "chunk".into(),
            EventKind::Other(v) => format!("other({v})"),
        }
    }
}
