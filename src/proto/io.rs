//! The inputs the core accepts and the outputs it produces
//! (`protocol-spec/wire.md`, "The node state machine").

use crate::crypto::keys::DeviceId;
use crate::event::{Event, EventId, RoomId};

/// A link, as numbered by the driver. Link identities are ephemeral by
/// design: penalties attach to [`SourceKey`]s and signing keys instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// What carries a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkKind {
    /// A LAN stream (libp2p over TCP or QUIC).
    Lan,
    /// A Bluetooth LE GATT link.
    Ble,
    /// An in-memory link in tests and the simulator.
    Memory,
}

impl LinkKind {
    /// Lowercase name for status output.
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Lan => "lan",
            LinkKind::Ble => "ble",
            LinkKind::Memory => "memory",
        }
    }
}

/// Something an attacker cannot change cheaply that a link came from (the
/// remote IP address on a LAN, one radio neighbourhood for BLE): penalties,
/// new-link budgets and the store's intake budgets attach to it.
pub use crate::store::SourceKey;

/// A user command fed to the core.
#[derive(Debug, Clone)]
pub enum Command {
    /// Publish an event this device signed. The caller has already made the
    /// event's key material durable (see the store's commit contract).
    Publish(Box<Event>),
    /// An event that arrived from outside the mesh (the homeserver's
    /// downlink, a bundle file): verified like mesh input, stored as an own
    /// room's event or a stranger's, and relayed after the commit.
    Deliver {
        /// The event (not yet verified).
        event: Box<Event>,
        /// Where it came from ([`crate::store::Source::Homeserver`] keeps
        /// it off the homeserver uplink queue).
        source: crate::store::Source,
    },
    /// Start carrying a room as one of this device's own rooms. `members`
    /// are the devices with standing in it (its current members, from the
    /// rooms layer): their events get the own-room class; anyone else's
    /// events of the room stay stranger traffic (`protocol-spec/store.md`,
    /// "Priority classes"). At most `ROOM_CAP` are kept.
    JoinRoom {
        /// The room.
        room: RoomId,
        /// Its members.
        members: std::collections::BTreeSet<DeviceId>,
    },
    /// The members of an own room changed (see [`Command::JoinRoom`]).
    RoomMembers {
        /// The room.
        room: RoomId,
        /// Its members now.
        members: std::collections::BTreeSet<DeviceId>,
    },
    /// The members of a room this device carries without being a member
    /// (the rooms layer verified them from the room's signed membership
    /// chain): their events skip the per-key stranger budgets and stay in
    /// the strangers' class (`protocol-spec/wire.md`, "Carried rooms").
    /// An empty set forgets the room.
    CarriedMembers {
        /// The room.
        room: RoomId,
        /// Its members now.
        members: std::collections::BTreeSet<DeviceId>,
    },
    /// Stop treating a room as one of this device's own rooms.
    LeaveRoom(RoomId),
    /// The rooms layer holds an invite of this device to `room` that
    /// waits for the events it cites: strangers' events of the room skip
    /// the per-key stranger budget (they stay strangers' class) for at most
    /// `EXPECTED_ROOM_EVENTS`, and what that budget refused is asked for
    /// again (`protocol-spec/wire.md`, "A room that becomes an own room").
    ExpectRoom(RoomId),
    /// Messages the rooms layer read as urgent (`protocol-spec/wire.md`,
    /// "Urgent messages"): each, if its sender is within
    /// [`crate::proto::urgent::URGENT_BURST`], goes before everything else
    /// in every link's queues, now and whenever it is queued again.
    Urgent(Vec<crate::proto::urgent::UrgentMark>),
}

/// An input to [`crate::proto::Node::handle`].
#[derive(Debug, Clone)]
pub enum Input {
    /// A link came up.
    LinkUp {
        /// The driver's number for it.
        link: LinkId,
        /// What carries it.
        kind: LinkKind,
        /// Largest datagram the link carries in one write.
        mtu: usize,
        /// Where it came from, for budgets and penalties.
        source: SourceKey,
    },
    /// A link went down.
    LinkDown(LinkId),
    /// Bytes arrived on a link, in order.
    Received {
        /// The link.
        link: LinkId,
        /// One datagram (a fragment) as it arrived.
        bytes: Vec<u8>,
    },
    /// Everything transmitted on the link so far has left the driver's
    /// buffers: the node may send the next window of events.
    Drained(LinkId),
    /// The deadline returned by `poll_timeout` has passed.
    Timeout,
    /// A user command.
    Command(Command),
    /// The driver committed the store: outputs that acknowledge or relay
    /// what was written may now be released.
    CommitDone,
    /// The driver's commit failed (for example the disk is full) and the
    /// staged writes were rolled back: what they would have released is
    /// dropped.
    CommitFailed,
}

/// Something the core noticed that the application may want to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// A new event was durably stored.
    EventStored {
        /// Its ID.
        id: EventId,
        /// Its room.
        room: RoomId,
    },
    /// A per-(room, sender) sequence gap was detected.
    GapDetected {
        /// Room.
        room: RoomId,
        /// Sender.
        sender: DeviceId,
        /// First missing sequence number.
        from_seq: u64,
        /// Last missing sequence number.
        to_seq: u64,
    },
    /// Two different events claim the same (room, sender, seq).
    ForkDetected {
        /// Room.
        room: RoomId,
        /// Sender.
        sender: DeviceId,
        /// The contested sequence number.
        seq: u64,
    },
    /// A reconciliation of one of this device's rooms ended: the peer holds
    /// every item of `items` (this side's set, sorted) but `lacks` (sorted).
    /// The device core acknowledges its own events among them as delivered
    /// to the mesh (`protocol-spec/store.md`, "Delivery to the mesh").
    PeerHolds {
        /// The room.
        room: RoomId,
        /// This side's set in the session.
        items: Vec<crate::reconcile::Item>,
        /// What the peer lacks of it.
        lacks: Vec<crate::reconcile::Item>,
    },
    /// A peer that is not a member of one of this device's rooms (a
    /// carrier) announced (`IHave`) that it holds `ids` of it, events this
    /// side holds too (sorted): as much a
    /// proof as a reconciliation's (`protocol-spec/store.md`, "Delivery to
    /// the mesh").
    PeerHas {
        /// The room.
        room: RoomId,
        /// The announced events held here.
        ids: Vec<EventId>,
    },
    /// A peer was penalised.
    PeerPenalised {
        /// The link.
        link: LinkId,
        /// Why.
        reason: String,
    },
}

/// An output drained from [`crate::proto::Node::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send one datagram on a link.
    Transmit {
        /// The link.
        link: LinkId,
        /// Bytes, at most the link's MTU.
        bytes: Vec<u8>,
    },
    /// Close a link.
    Close {
        /// The link.
        link: LinkId,
        /// Why, for logs.
        reason: String,
    },
    /// Tell the application something.
    App(AppEvent),
}
