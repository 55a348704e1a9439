//! Adapters that carry the core's datagrams: LAN (libp2p).

pub mod lan;
