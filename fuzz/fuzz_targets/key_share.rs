//! Fuzz a decoder: `cargo +nightly fuzz run key_share` (entry point
//! `meshrelay::fuzz::key_share`). The corpus in `fuzz/corpus/key_share/` is replayed
//! by the `fuzz_corpus` integration test on every `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshrelay::fuzz::key_share(data);
});
