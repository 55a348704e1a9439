//! The identity commands: `meshrelay init`, `id`, `contact add`,
//! `contacts` (`protocol-spec/identity.md`).

use std::io::Write;

use serde_json::json;

use super::{CmdError, chain, dd_failure, now_ms};
use crate::contacts::{AddOutcome, ContactBook, ContactError};
use crate::crypto::{ContactCard, Identity, fingerprint};
use crate::datadir::{DataDir, DataDirError};
use crate::limits::MAX_NAME_BYTES;
use crate::safe_text::for_terminal;

/// `meshrelay init [--name NAME]`: a new identity from the OS RNG.
pub fn init(dir: &DataDir, name: &str, out: &mut dyn Write) -> Result<(), CmdError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(CmdError::bad(format!(
            "--name is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if dir.has_identity() {
        return Err(dd_failure(DataDirError::AlreadyInitialized(
            dir.root().to_owned(),
        )));
    }
    let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
    let identity = Identity::generate(&mut rng);
    let card =
        ContactCard::create(&identity, name, now_ms()?).map_err(|e| CmdError::bad(chain(&e)))?;
    dir.init(&identity, &card).map_err(dd_failure)?;
    writeln!(out, "Created identity in {}", dir.root().display())?;
    writeln!(out, "device ID:   {}", identity.device_id())?;
    writeln!(out, "fingerprint: {}", fingerprint(&identity.device_id()))?;
    writeln!(
        out,
        "Share your contact card with `meshrelay id` (or `meshrelay id --qr`)."
    )?;
    Ok(())
}

/// `meshrelay id [--json] [--qr]` (with `--json`, the QR code goes to `err`).
pub fn id(
    dir: &DataDir,
    json: bool,
    qr: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), CmdError> {
    let (identity, card) = dir.load().map_err(dd_failure)?;
    let device_id = identity.device_id();
    let fp = fingerprint(&device_id);
    let text = card.to_text();
    if json {
        let v = json!({
            "device_id": device_id.to_string(),
            "name": card.name,
            "fingerprint": fp,
            "card": text,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "device ID:   {device_id}")?;
        writeln!(out, "name:        {}", for_terminal(&card.name))?;
        writeln!(out, "fingerprint: {fp}")?;
        writeln!(out, "card:        {text}")?;
    }
    if qr {
        // Uppercase base32 and ':' are QR alphanumeric: a compact code.
        let image = super::web::qr_for_terminal(&text)?;
        if json {
            writeln!(err, "{image}")?;
        } else {
            writeln!(out, "{image}")?;
        }
    }
    Ok(())
}

/// `meshrelay contact add CARD`: verify and store a card.
pub fn contact_add(dir: &DataDir, text: &str, out: &mut dyn Write) -> Result<(), CmdError> {
    let card = ContactCard::from_text(text).map_err(|e| CmdError::bad(chain(&e)))?;
    let (identity, _) = dir.load().map_err(dd_failure)?;
    let outcome =
        ContactBook::store_card(dir, &identity.device_id(), card.clone()).map_err(|e| match e {
            ContactError::Full | ContactError::OwnCard => CmdError::bad(chain(&e)),
            other => book_failure(other),
        })?;
    let verb = match outcome {
        AddOutcome::Added => "Added",
        AddOutcome::Updated => "Updated",
        AddOutcome::Unchanged => "Already have (same or newer card)",
    };
    writeln!(
        out,
        "{verb} contact {} ({})",
        for_terminal(&card.name),
        card.device_id
    )?;
    writeln!(
        out,
        "fingerprint: {}  (compare it in person before trusting this contact)",
        fingerprint(&card.device_id)
    )?;
    Ok(())
}

/// `meshrelay contacts [--json]`.
pub fn contacts(dir: &DataDir, json: bool, out: &mut dyn Write) -> Result<(), CmdError> {
    let book = ContactBook::load(dir).map_err(book_failure)?;
    if json {
        let list: Vec<_> = book
            .iter()
            .map(|c| {
                json!({
                    "device_id": c.device_id.to_string(),
                    "name": c.name,
                    "fingerprint": fingerprint(&c.device_id),
                    "created_ms": c.created_ms,
                    "card": c.to_text(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else if book.is_empty() {
        writeln!(
            out,
            "No contacts yet. Add one with `meshrelay contact add MRC1:...`."
        )?;
    } else {
        for c in book.iter() {
            writeln!(
                out,
                "{:<20} {}  {}",
                for_terminal(&c.name),
                c.device_id,
                fingerprint(&c.device_id)
            )?;
        }
    }
    Ok(())
}

/// A contact book that cannot be loaded; one written by a newer meshrelay
/// is a refused downgrade (exit 2).
fn book_failure(e: ContactError) -> CmdError {
    if e.is_too_new() {
        CmdError::bad(chain(&e))
    } else {
        CmdError::from(e)
    }
}
