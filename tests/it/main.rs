//! All integration tests, in one binary (ruma style): one module per area.

mod app;
mod cli;
mod cli_rooms;
mod fuzz_corpus;
mod homeserver;
mod rooms;
mod rooms_vectors;
mod roundtrip;
mod vectors;
