//! Fuzz a decoder: `cargo +nightly fuzz run card` (entry point
//! `meshrelay::fuzz::card`). The corpus in `fuzz/corpus/card/` is replayed
//! by the `fuzz_corpus` integration test on every `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshrelay::fuzz::card(data);
});
