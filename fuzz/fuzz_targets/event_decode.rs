//! Fuzz the event decoder: `cargo +nightly fuzz run event_decode`.
//! The corpus in `fuzz/corpus/event_decode/` is replayed by the
//! `fuzz_corpus` integration test on every `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    meshrelay::event::fuzz_decode(data);
});
