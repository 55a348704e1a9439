//! `meshrelay import FILE|-` without a daemon: the bundle is streamed into
//! the store (`protocol-spec/app.md` §3), never read whole, so the
//! command's memory stays bounded whatever the input (measured by
//! `tests/it/cli_rooms.rs`, reported in `reports/admission.md`).
//!
//! A regular file (also one redirected to standard input) larger than
//! [`MAX_BUNDLE_BYTES`] is refused from its metadata before anything is
//! read. Otherwise a file's framing is checked in a first pass and the
//! events are imported in a second, so a malformed bundle stores nothing;
//! a pipe can be read once only, so its events are imported as they come
//! and a framing error at its end fails the command after the earlier
//! batches were stored (they are verified events).

use std::fs::File;
use std::io::{self, BufReader, Seek};

use super::rooms::CliError;
use crate::app::{AppError, Device, ImportSummary};
use crate::bundle::{self, MAX_BUNDLE_BYTES};
use crate::store::Store;

/// Read buffer of a streamed import.
const READ_BUFFER: usize = 64 * 1024;

fn io_err(what: &str, source: io::Error) -> CliError {
    AppError::Io {
        path: what.into(),
        source,
    }
    .into()
}

/// Imports the bundle `file` names (`-`: standard input) into `dev`.
pub fn import_streaming<S: Store>(
    dev: &mut Device<S>,
    file: &str,
    now_ms: u64,
) -> Result<ImportSummary, CliError> {
    let f = if file == "-" {
        let stdin = io::stdin();
        let fd = std::os::fd::AsFd::as_fd(&stdin)
            .try_clone_to_owned()
            .map_err(|e| io_err(file, e))?;
        File::from(fd)
    } else {
        File::open(file).map_err(|e| io_err(file, e))?
    };
    let meta = f.metadata().map_err(|e| io_err(file, e))?;
    if meta.is_file() && meta.len() > MAX_BUNDLE_BYTES as u64 {
        return Err(AppError::BadInput(format!(
            "{file} is larger than the {MAX_BUNDLE_BYTES}-byte bundle limit"
        ))
        .into());
    }
    let mut f = f;
    if meta.is_file() {
        let start = f.stream_position().map_err(|e| io_err(file, e))?;
        bundle::check_framing(BufReader::with_capacity(READ_BUFFER, &f)).map_err(AppError::from)?;
        f.seek(io::SeekFrom::Start(start))
            .map_err(|e| io_err(file, e))?;
    }
    Ok(dev.import_from(BufReader::with_capacity(READ_BUFFER, f), now_ms)?)
}
