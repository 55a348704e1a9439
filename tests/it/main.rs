//! All integration tests, in one binary (ruma style): one module per area.

mod cli;
mod fuzz_corpus;
mod rooms;
mod rooms_vectors;
mod roundtrip;
mod vectors;
