//! `meshrelay decode`: verify and describe an event, a contact card or a
//! bundle (`protocol-spec/event.md`, `identity.md`, `app.md`). Nothing is
//! decrypted.

use std::io::{self, Read, Write};
use std::path::Path;

use super::rooms::EXIT_BAD_INPUT;
use super::{CmdError, now_ms};
use crate::crypto::fingerprint;
use crate::event::{Event, timeliness};
use crate::inspect::{self, Inspected, MAX_INSPECT_INPUT};
use crate::safe_text::for_terminal;

fn read_input(file: Option<&Path>) -> Result<Vec<u8>, CmdError> {
    let limit = MAX_INSPECT_INPUT as u64 + 1;
    let mut buf = Vec::new();
    match file {
        None => {
            io::stdin().take(limit).read_to_end(&mut buf)?;
        }
        Some(p) if p == Path::new("-") => {
            io::stdin().take(limit).read_to_end(&mut buf)?;
        }
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| {
                let mut c = CmdError::context(format!("cannot open {}", p.display()), &e);
                c.code = EXIT_BAD_INPUT;
                c
            })?;
            f.take(limit)
                .read_to_end(&mut buf)
                .map_err(|e| CmdError::context(format!("cannot read {}", p.display()), &e))?;
        }
    }
    Ok(buf)
}

/// `meshrelay decode [FILE|-] [--json]`: an event (binary or hex), a
/// contact card or a bundle, verified and described.
pub fn decode(file: Option<&Path>, json: bool, out: &mut dyn Write) -> Result<(), CmdError> {
    let input = read_input(file)?;
    let now = now_ms().ok();
    if super::rooms::is_bundle(&input) {
        let v = super::rooms::bundle_json(&input, now.unwrap_or(0))
            .map_err(|e| CmdError::bad(e.err))?;
        if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        } else {
            let events = v["bundle"]["events"].as_array().map_or(&[][..], |a| a);
            writeln!(
                out,
                "bundle of {} events (signatures checked one by one)",
                events.len()
            )?;
            for e in events {
                match e.get("error") {
                    Some(err) => writeln!(out, "  #{}: invalid: {err}", e["index"])?,
                    None => writeln!(
                        out,
                        "  #{}: {} {} seq {} from {} room {} ({})",
                        e["index"],
                        e["event_id"].as_str().unwrap_or(""),
                        e["kind"].as_str().unwrap_or(""),
                        e["seq"],
                        e["sender"].as_str().unwrap_or(""),
                        e["room"].as_str().unwrap_or(""),
                        e["timeliness"].as_str().unwrap_or(""),
                    )?,
                }
            }
        }
        return Ok(());
    }
    let inspected = inspect::inspect(&input).map_err(|e| {
        let class = e.class();
        CmdError::bad(format!("{e} [{class}]"))
    })?;
    match inspected {
        Inspected::Event(ev) => {
            let v = inspect::event_json(&ev, now);
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                writeln!(out, "valid event (signature verified)")?;
                print_event(&ev, now, out)?;
            }
        }
        Inspected::Card(card) => {
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&inspect::card_json(&card))?
                )?;
            } else {
                writeln!(out, "valid contact card (signatures verified)")?;
                writeln!(out, "  device ID:   {}", card.device_id)?;
                writeln!(out, "  name:        {}", for_terminal(&card.name))?;
                writeln!(out, "  fingerprint: {}", fingerprint(&card.device_id))?;
                writeln!(out, "  created_ms:  {}", card.created_ms)?;
                writeln!(out, "  prekey id:   {}", card.prekey_id)?;
            }
        }
    }
    Ok(())
}

fn print_event(ev: &Event, now: Option<u64>, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "  event ID:    {}", ev.id())?;
    writeln!(out, "  room:        {}", ev.room())?;
    writeln!(out, "  sender:      {}", ev.sender())?;
    writeln!(out, "  seq:         {}", ev.seq())?;
    if ev.prev().is_empty() {
        writeln!(out, "  prev:        (none)")?;
    }
    for p in ev.prev() {
        writeln!(out, "  prev:        {p}")?;
    }
    writeln!(out, "  origin_ts:   {} ms", ev.origin_ts_ms())?;
    writeln!(out, "  expires:     {} ms", ev.expires_ms())?;
    writeln!(out, "  kind:        {}", ev.kind().name())?;
    writeln!(out, "  payload:     {} bytes", ev.payload().len())?;
    writeln!(out, "  size:        {} bytes", ev.bytes().len())?;
    if let Some(now) = now {
        writeln!(
            out,
            "  timeliness:  {} (by this machine's clock)",
            inspect::timeliness_name(timeliness(ev, now))
        )?;
    }
    Ok(())
}
