//! Adapters that carry the core's datagrams and events beyond it: LAN links
//! (libp2p), Bluetooth LE links, and the Matrix homeserver.

pub mod ble;
pub mod homeserver;
#[cfg(feature = "runtime")]
pub mod lan;
