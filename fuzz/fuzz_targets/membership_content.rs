//! Fuzz a decoder: `cargo +nightly fuzz run membership_content` (entry point
//! `meshrelay::fuzz::membership_content`). The corpus in `fuzz/corpus/membership_content/` is replayed
//! by the `fuzz_corpus` integration test on every `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshrelay::fuzz::membership_content(data);
});
