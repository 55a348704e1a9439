//! `meshrelay store check [--json]`: redb's integrity check plus every
//! signature, ID and index row (`protocol-spec/store.md`).

use std::io::Write;

use super::CmdError;
use crate::control;
use crate::datadir::DataDir;
use crate::store::StoreConfig;
use crate::store::redb_backend::{STORE_FILE_NAME, check_file};

/// `meshrelay store check [--json]`: exit 0 when every check passed, 1 when
/// the store is damaged (the report names what).
pub fn store_check(dir: &DataDir, json: bool, out: &mut dyn Write) -> Result<(), CmdError> {
    let path = dir.root().join(STORE_FILE_NAME);
    if control::connect(dir.root()).is_some() {
        // A full check needs the file to itself (redb's integrity check).
        return Err(CmdError::msg(format!(
            "a daemon is running for {}: stop it first (`meshrelay stop`); \
             `meshrelay status` shows the store's usage meanwhile",
            dir.root().display()
        )));
    }
    if !path.exists() {
        return Err(CmdError::bad(format!(
            "no store at {} (nothing has been stored yet)",
            path.display()
        )));
    }
    let report = check_file(&path, StoreConfig::default()).map_err(|e| {
        let mut c = CmdError::context(format!("cannot check {}", path.display()), &e);
        if e.is_too_new() {
            c.code = super::EXIT_BAD_INPUT;
        }
        c
    })?;
    if json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        let s = &report.stats;
        writeln!(out, "store:     {}", path.display())?;
        writeln!(
            out,
            "integrity: {}",
            if report.ok { "ok" } else { "DAMAGED" }
        )?;
        writeln!(out, "events:    {} ({} bytes)", s.events, s.bytes)?;
        writeln!(
            out,
            "evicted:   {} expired, {} from the stranger pool, {} over budget, \
             {} carried copies every member holds",
            s.evictions.expired,
            s.evictions.stranger_pool,
            s.evictions.budget,
            s.evictions.delivered
        )?;
        writeln!(out, "forks:     {}", s.forks)?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(CmdError::msg(format!(
            "store check found damage in {}",
            path.display()
        )))
    }
}
