//! Reassembler: never panics; state stays within its bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = meshrelay::wire::fuzz_reassembly(data);
});
