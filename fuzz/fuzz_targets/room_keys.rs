//! Fuzz a decoder: `cargo +nightly fuzz run room_keys` (entry point
//! `meshrelay::fuzz::room_keys`). The corpus in `fuzz/corpus/room_keys/` is replayed
//! by the `fuzz_corpus` integration test on every `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshrelay::fuzz::room_keys(data);
});
