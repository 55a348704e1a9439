//! All integration tests, in one binary (ruma style): one module per area.

mod admission;
mod app;
mod ble;
mod ble_vectors;
mod cli;
mod cli_rooms;
mod control_api;
mod daemon;
mod daemon_hostile;
mod daemon_mdns;
mod field;
mod frame_vectors;
mod fuzz_corpus;
mod harden;
mod homeserver;
mod homeserver_sync;
mod import_memory;
mod lan;
mod reconcile;
mod rooms;
mod rooms_vectors;
mod roundtrip;
mod store_crash;
mod store_flood;
mod vectors;
mod wire;
