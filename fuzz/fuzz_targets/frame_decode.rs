//! Frame decoder: never panics; whatever decodes re-encodes byte-identically.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = meshrelay::wire::fuzz_frame(data);
});
