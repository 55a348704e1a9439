//! Fuzz a decoder: `cargo +nightly fuzz run bundle` (entry point
//! `meshrelay::fuzz::bundle`). The corpus in `fuzz/corpus/bundle/` is replayed
//! by the `fuzz_corpus` integration test on every `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshrelay::fuzz::bundle(data);
});
