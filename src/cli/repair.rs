//! How `meshrelay room repair ROOM_ID [--json]` prints its report
//! (`protocol-spec/app.md` §7, "Repair"): one JSON object with `--json`
//! (the [`RepairReport`] contract), else a summary line and one line per
//! event the rebuild left out. Reasons go through
//! [`crate::safe_text::for_terminal`].

use std::io::Write;

use super::rooms::{CliError, print_json};
use crate::app::{AppError, RepairReport};
use crate::safe_text::for_terminal;

/// Prints a repair report.
pub fn format_repair(out: &mut dyn Write, r: &RepairReport, json: bool) -> Result<(), CliError> {
    if json {
        return print_json(out, r);
    }
    let io = |e: std::io::Error| {
        CliError::from(AppError::Io {
            path: "-".into(),
            source: e,
        })
    };
    writeln!(
        out,
        "room {}: {} stored events, {} kept, {} left out; key state {} -> {} bytes",
        r.room_id,
        r.events,
        r.kept,
        r.dropped_count,
        r.key_state.before_bytes,
        r.key_state.after_bytes
    )
    .map_err(io)?;
    for d in &r.dropped {
        writeln!(
            out,
            "  left out {}: {}",
            d.event_id,
            for_terminal(&d.reason)
        )
        .map_err(io)?;
    }
    if r.dropped_count > r.dropped.len() {
        writeln!(out, "  ... and {} more", r.dropped_count - r.dropped.len()).map_err(io)?;
    }
    Ok(())
}
