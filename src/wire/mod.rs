//! The wire layer: frames and fragments (`protocol-spec/wire.md`).
//!
//! Bytes travel through three layers, each bytes-in/bytes-out, so a link
//! cipher can sit between framing and fragmentation and is paid once per frame:
//!
//! ```text
//!  Frame ──encode──▶ frame bytes ──(link encryption)──▶ sealed bytes ──fragment──▶ packets ≤ MTU
//!  Frame ◀─decode─── frame bytes ◀─(link decryption)─── sealed bytes ◀─reassemble─ packets
//! ```
//!
//! * [`frame`]: a [`Frame`] is one canonical CBOR array
//!   `[version, type, fields…]`; [`Frame::decode`] checks the structure,
//!   version, type tag and every count limit before allocating.
//! * [`fragment`]: [`Fragmenter`] splits a byte string for a link MTU;
//!   [`Reassembler`] puts fragments back together with bounded state: at
//!   most [`MAX_REASSEMBLIES_PER_LINK`] in progress, each capped in size and
//!   expiring after [`REASSEMBLY_TIMEOUT_MS`] of the caller's clock.
//!
//! Nothing here does I/O or reads a clock: time arrives as `now_ms`.

pub mod fragment;
pub mod frame;
pub mod token;

pub use fragment::{
    FRAGMENT_ACCOUNTING_OVERHEAD, FRAGMENT_HEADER_BYTES, FragmentError, Fragmenter, MAX_MTU,
    MAX_REASSEMBLIES_PER_LINK, MAX_REASSEMBLY_BYTES_PER_LINK, MIN_MTU, REASSEMBLY_TIMEOUT_MS,
    Reassembler,
};
pub use frame::{
    CloseReason, FEATURE_ROLES, FRAME_MAX_DEPTH, Frame, FrameError, MAX_CLOSE_DETAIL_BYTES,
    MAX_COPY_BUDGET, MAX_EVENTS_PER_FRAME, MAX_FRAME_BYTES, MAX_HELLO_ROOMS, MAX_IDS_PER_FRAME,
    WIRE_VERSION,
};
pub use token::{ROOM_TOKEN_BYTES, RoomToken, device_token, room_token, tokens_of};

/// Fuzz entry point for the frame decoder (`fuzz/fuzz_targets/frame_decode.rs`).
///
/// Decodes arbitrary bytes; anything that decodes must re-encode to the very
/// same bytes (frames are canonical). Never panics on any input.
pub fn fuzz_frame(data: &[u8]) -> Option<Frame> {
    let frame = Frame::decode(data).ok()?;
    let again = frame.encode();
    debug_assert_eq!(
        again.as_slice(),
        data,
        "decoded frame must re-encode identically"
    );
    Some(frame)
}

/// Fuzz entry point for reassembly (`fuzz/fuzz_targets/reassembly.rs`).
///
/// Interprets `data` as a sequence of packets, each preceded by a one-byte
/// length and a one-byte clock step, fed to one [`Reassembler`]. Returns how
/// many whole payloads came out. Never panics; state stays within its bounds.
pub fn fuzz_reassembly(data: &[u8]) -> usize {
    let mut r = Reassembler::new();
    let mut now = 0u64;
    let mut done = 0;
    let mut rest = data;
    while let [len, step, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (packet, next) = tail.split_at(len);
        now += u64::from(*step) * 250;
        if let Ok(Some(_)) = r.receive(now, packet) {
            done += 1;
        }
        debug_assert!(r.in_progress() <= MAX_REASSEMBLIES_PER_LINK);
        debug_assert!(r.buffered_bytes() <= MAX_REASSEMBLY_BYTES_PER_LINK);
        rest = next;
    }
    done
}
