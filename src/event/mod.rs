//! Room events: identifiers, kinds, the signed envelope and its canonical
//! encoding, and the clock-skew rules (`protocol-spec/event.md`).

pub mod clock;
pub mod envelope;
pub mod fuzz;
pub mod ids;
pub mod kind;

pub use clock::{ClockFloor, Timeliness, timeliness};
pub use envelope::{Event, EventError, UnsignedEvent};
pub use fuzz::fuzz_decode;
pub use ids::{EventId, RoomId};
pub use kind::EventKind;
