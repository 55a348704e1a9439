//! The rooms part of `meshrelay demo --basics`: three devices in a
//! temporary directory share a room through a bundle, narrated.

use std::io::Write;
use std::path::Path;

use super::{CliError, io_err, now_ms};
use crate::app::{self, Device, MessageLine};
use crate::safe_text::for_terminal;

/// The rooms part of `meshrelay demo`: three devices in a temporary
/// directory share a room through a bundle, narrated on `out`. The
/// temporary directory is removed afterwards.
pub fn demo(out: &mut dyn Write) -> Result<(), CliError> {
    let base = std::env::temp_dir().join(format!(
        "meshrelay-demo-{}-{}",
        std::process::id(),
        now_ms()
    ));
    let r = demo_in(&base, out);
    let _ = std::fs::remove_dir_all(&base);
    r
}

fn demo_in(base: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(|e| io_err("-", e));
    let dirs = [base.join("ana"), base.join("bo"), base.join("cy")];
    let [da, db, dc] = &dirs;
    let mut now = now_ms();
    for (d, name) in dirs.iter().zip(["Ana", "Bo", "Cy"]) {
        let id = app::init(d, name, now, &mut rng)?;
        w(out, format!("{name}: new device {id} in {}", d.display()))?;
    }
    let open = |d: &Path, now: u64| Device::open(d, now).map_err(CliError::from);
    let bo_card = open(db, now)?.card().to_text();
    let room = open(da, now)?.room_create("north camp", now, &mut rng)?;
    w(
        out,
        format!("Ana creates room {room} (\"north camp\", the name is encrypted) and is its admin"),
    )?;
    now += 1;
    open(da, now)?.room_invite(&room, &bo_card, now, &mut rng)?;
    w(
        out,
        "Ana invites Bo with Bo's contact card; the invite carries the card to every member".into(),
    )?;
    now += 1;
    let sent = open(da, now)?.send(&room, "Water point at the north gate", now, &mut rng)?;
    w(
        out,
        format!("Ana sends a message; stored durably as event {sent} before anything leaves"),
    )?;
    let stick = open(da, now)?.export(Some(&room), now)?;
    w(
        out,
        format!(
            "Ana exports a {}-byte signed bundle to a USB stick",
            stick.len()
        ),
    )?;
    now += 1;
    let sum = open(db, now)?.import(&stick, now)?;
    w(
        out,
        format!(
            "Bo imports it: {} new, {} duplicates, {} rejected",
            sum.imported, sum.duplicates, sum.rejected
        ),
    )?;
    for l in open(db, now)?.messages(&room)? {
        if let MessageLine::Text { text, .. } = &l {
            w(out, format!("  Bo reads: {}", for_terminal(text)))?;
        }
    }
    let again = open(db, now)?.import(&stick, now)?;
    w(
        out,
        format!(
            "Bo imports the same stick again: {} new, {} duplicates",
            again.imported, again.duplicates
        ),
    )?;
    let sum = open(dc, now)?.import(&stick, now)?;
    let readable = open(dc, now)?
        .messages(&room)?
        .iter()
        .filter(|l| matches!(l, MessageLine::Text { .. }))
        .count();
    w(
        out,
        format!(
            "Cy, not a member, carries {} events and can read {readable} of them",
            sum.imported
        ),
    )?;
    now += 1;
    let bo = open(db, now)?.device_id();
    open(da, now)?.room_remove(&room, &bo, now, &mut rng)?;
    now += 1;
    open(da, now)?.send(&room, "Moving to the south camp", now, &mut rng)?;
    w(
        out,
        "Ana removes Bo and sends again, on a new chain shared only with the remaining members"
            .into(),
    )?;
    let stick = open(da, now)?.export(Some(&room), now)?;
    open(db, now)?.import(&stick, now)?;
    for l in open(db, now)?.messages(&room)? {
        if let MessageLine::Undecryptable { reason, .. } = &l {
            w(
                out,
                format!(
                    "  Bo sees a message it cannot read: {}",
                    for_terminal(reason)
                ),
            )?;
        }
    }
    Ok(())
}
