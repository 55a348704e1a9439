//! Adapters that carry the core's datagrams and events beyond it: LAN links
//! (libp2p) and the Matrix homeserver.

pub mod homeserver;
pub mod lan;
