//! Fuzz a decoder: `cargo +nightly fuzz run homeserver_bundle` (entry point
//! `meshrelay::fuzz::homeserver_bundle`). The corpus in `fuzz/corpus/homeserver_bundle/` is replayed
//! by the `fuzz_corpus` integration test on every `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshrelay::fuzz::homeserver_bundle(data);
});
