//! `meshrelay demo --basics`: a narrated walk-through in memory
//! (identities, contact cards, signed events, what relays cannot do), then
//! three devices sharing a room through a bundle.

use std::io::{self, Write};

use super::{CmdError, chain, now_ms};
use crate::contacts::ContactBook;
use crate::crypto::{ContactCard, Identity, fingerprint};
use crate::event::{Event, EventId, EventKind, RoomId, UnsignedEvent, timeliness};
use crate::inspect;
use crate::limits::DEFAULT_EVENT_LIFETIME_MS;

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn step(o: &mut dyn Write, n: u32, title: &str) -> io::Result<()> {
    writeln!(o)?;
    writeln!(o, "== {n}. {title}")
}

/// `meshrelay demo --basics`: identities, cards and signed events in
/// memory, then the rooms walk-through ([`super::rooms::demo`]).
pub fn demo(o: &mut dyn Write) -> Result<(), CmdError> {
    let now = now_ms()?;
    writeln!(
        o,
        "meshrelay demo: identities, contact cards and signed events."
    )?;
    writeln!(
        o,
        "Everything below runs in memory; no data directory is touched."
    )?;

    step(o, 1, "Create two device identities")?;
    writeln!(
        o,
        "   (Seeded from fixed bytes so every run shows the same keys; `meshrelay init`\n    uses the OS random number generator instead.)"
    )?;
    let alice = Identity::from_seed(&[0xa1; 32]);
    let bob = Identity::from_seed(&[0xb0; 32]);
    for (who, idn) in [("Alice", &alice), ("Bob", &bob)] {
        writeln!(o, "   {who}: device ID   {}", idn.device_id())?;
        writeln!(o, "   {who}: fingerprint {}", fingerprint(&idn.device_id()))?;
    }

    step(o, 2, "Exchange contact cards")?;
    let alice_card = ContactCard::create(&alice, "Alice", now).map_err(CmdError::from)?;
    let bob_card = ContactCard::create(&bob, "Bob", now).map_err(CmdError::from)?;
    let alice_text = alice_card.to_text();
    writeln!(
        o,
        "   Alice's card ({} characters, fits a QR code):\n   {alice_text}",
        alice_text.len()
    )?;
    let mut bob_book = ContactBook::default();
    let (got, _) = bob_book.add_text(&alice_text)?;
    writeln!(
        o,
        "   Bob verifies it: name {:?}, fingerprint {}",
        got.name,
        fingerprint(&got.device_id)
    )?;
    writeln!(
        o,
        "   Bob reads the fingerprint aloud; Alice confirms it matches her screen."
    )?;
    let mut alice_book = ContactBook::default();
    alice_book.add_text(&bob_card.to_text())?;
    writeln!(o, "   Alice verifies and stores Bob's card the same way.")?;

    step(o, 3, "A tampered contact card is rejected")?;
    let mut forged = alice_card.clone();
    forged.name = "Mallory".into();
    match ContactCard::from_text(&forged.to_text()) {
        Ok(_) => return Err(CmdError::msg("a tampered card was accepted")),
        Err(e) => writeln!(
            o,
            "   Renaming Alice's card to \"Mallory\": rejected ({e}) [{}]",
            e.class()
        )?,
    }

    step(o, 4, "Alice signs an event")?;
    let room = RoomId([0x42; 16]);
    let first = UnsignedEvent {
        room,
        sender: alice.device_id(),
        seq: 1,
        prev: vec![],
        origin_ts_ms: now,
        expires_ms: now + DEFAULT_EVENT_LIFETIME_MS,
        kind: EventKind::Message,
        // Until the encryption layer lands, the demo payload is plain text.
        payload: b"Water point at the north gate is working again.".to_vec(),
    }
    .sign(&alice)
    .map_err(CmdError::from)?;
    writeln!(
        o,
        "   room {room}, seq 1, kind message, {} payload bytes",
        first.payload().len()
    )?;
    writeln!(
        o,
        "   canonical CBOR: {} bytes; event ID {}",
        first.bytes().len(),
        first.id()
    )?;
    writeln!(
        o,
        "   first bytes: {}...",
        hex(first.bytes().get(..24).unwrap_or_default())
    )?;

    step(
        o,
        5,
        "Bob decodes and verifies it (any relay could have carried it)",
    )?;
    let received = Event::decode(first.bytes()).map_err(CmdError::from)?;
    let known = bob_book.get(&received.sender()).map(|c| c.name.clone());
    writeln!(
        o,
        "   signature OK (verify_strict); sender is {}",
        known.as_deref().unwrap_or("an unknown device")
    )?;
    writeln!(
        o,
        "   same event ID on both sides: {}",
        received.id() == first.id()
    )?;
    writeln!(
        o,
        "   timeliness at Bob's clock: {}",
        inspect::timeliness_name(timeliness(&received, now))
    )?;

    step(
        o,
        6,
        "Bob replies, citing Alice's event as its causal predecessor",
    )?;
    let reply = UnsignedEvent {
        room,
        sender: bob.device_id(),
        seq: 1,
        prev: vec![first.id()],
        origin_ts_ms: now + 1_000,
        expires_ms: now + 1_000 + DEFAULT_EVENT_LIFETIME_MS,
        kind: EventKind::Message,
        payload: b"Copy. Heading there with the filters.".to_vec(),
    }
    .sign(&bob)
    .map_err(CmdError::from)?;
    let back = Event::decode(reply.bytes()).map_err(CmdError::from)?;
    writeln!(
        o,
        "   event {} (seq 1 for Bob in this room), prev = [{}]",
        back.id(),
        back.prev()
            .iter()
            .map(EventId::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )?;

    step(o, 7, "Relays cannot alter or forge events")?;
    let mut altered = first.bytes().to_vec();
    let last = altered.len() - 70; // a byte inside the payload
    if let Some(b) = altered.get_mut(last) {
        *b ^= 0x20;
    }
    match Event::decode(&altered) {
        Ok(_) => return Err(CmdError::msg("an altered event was accepted")),
        Err(e) => writeln!(
            o,
            "   one payload byte changed: rejected ({e}) [{}]",
            e.class()
        )?,
    }
    let mallory = Identity::from_seed(&[0x66; 32]);
    let fake = UnsignedEvent {
        sender: mallory.device_id(),
        ..first.fields().clone()
    }
    .sign(&mallory)
    .map_err(CmdError::from)?;
    // Splice Alice's key in as the sender, keeping Mallory's signature.
    let mut spoofed = fake.bytes().to_vec();
    // array head (1) + version (1) + room item (1 + 16) + sender head (2)
    let sender_at = 1 + 1 + 17 + 2;
    if let Some(dst) = spoofed.get_mut(sender_at..sender_at + 32) {
        dst.copy_from_slice(alice.device_id().as_bytes());
    }
    match Event::decode(&spoofed) {
        Ok(_) => return Err(CmdError::msg("a spoofed event was accepted")),
        Err(e) => writeln!(
            o,
            "   Mallory signs an event claiming to be Alice: rejected ({e}) [{}]",
            e.class()
        )?,
    }
    let mut grown = first.bytes().to_vec();
    grown.push(0);
    match Event::decode(&grown) {
        Ok(_) => return Err(CmdError::msg("trailing bytes were accepted")),
        Err(e) => writeln!(o, "   one byte appended: rejected ({e}) [{}]", e.class())?,
    }

    step(
        o,
        8,
        "Expiry is signed, so relays drop stale events without reading them",
    )?;
    let later = first.expires_ms() + crate::limits::EXPIRY_GRACE_MS + 1;
    writeln!(
        o,
        "   at expiry + grace + 1 ms the verdict is: {}",
        inspect::timeliness_name(timeliness(&first, later))
    )?;

    writeln!(o)?;
    writeln!(
        o,
        "Rooms: three devices share an encrypted room through a bundle file \
         (in temporary data directories, removed afterwards)."
    )?;
    super::rooms::demo(o).map_err(|e| CmdError {
        code: e.code,
        message: chain(&e.err),
    })?;

    writeln!(o)?;
    writeln!(
        o,
        "Demo complete: every check behaved as the protocol requires."
    )?;
    Ok(())
}
