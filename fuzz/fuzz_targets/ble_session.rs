//! BLE link session: handshake and transport records from hostile ATT
//! values never panic (`protocol-spec/ble.md`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = meshrelay::transport::ble::session::fuzz_session(data);
});
