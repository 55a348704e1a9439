//! `meshrelay import FILE|-`: the bundle is streamed, never read whole, so
//! the command's memory stays bounded whatever the input (measured by
//! `tests/it/import_memory.rs`, reported in `reports/admission.md`).
//!
//! A regular file (also one redirected to standard input) larger than
//! [`MAX_BUNDLE_BYTES`] is refused from its metadata before anything is
//! read. Otherwise a file's framing is checked in a first pass and the
//! events are imported in a second, so a malformed bundle stores nothing;
//! a pipe can be read once only, so its events are imported as they come
//! and a framing error at its end fails the command after the earlier
//! batches were stored (they are verified events).
//!
//! Without a daemon the events go into the store (`protocol-spec/app.md`
//! §3). Through a daemon the CLI re-frames them in slices of whole events
//! of at most [`IMPORT_BATCH_BYTES`], one `import` request each, and adds
//! up the replies (`protocol-spec/daemon.md`, "The CLI as a client"), so
//! neither process holds the bundle.

use std::fs::File;
use std::io::{self, BufReader, Seek};
use std::os::unix::net::UnixStream;
use std::path::Path;

use data_encoding::BASE64;

use super::rooms::{CliError, CommandError, EXIT_RUNTIME};
use crate::app::{
    AppError, Device, IMPORT_BATCH_BYTES, ImportSummary, RejectedInfo, oversize_reason,
};
use crate::bundle::{self, BundleStream, MAX_BUNDLE_BYTES, RawEvent};
use crate::control::{self, ControlError, OkData, Op, Request};
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

/// Opens the bundle `file` names (`-`: standard input), refusing a regular
/// file over the size limit from its metadata and checking a regular
/// file's framing in a first pass. Returns a reader at the bundle's start.
fn open_checked(file: &str) -> Result<BufReader<File>, CliError> {
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
    Ok(BufReader::with_capacity(READ_BUFFER, f))
}

/// Imports the bundle `file` names (`-`: standard input) into `dev`.
pub fn import_streaming<S: Store>(
    dev: &mut Device<S>,
    file: &str,
    now_ms: u64,
) -> Result<ImportSummary, CliError> {
    let r = open_checked(file)?;
    Ok(dev.import_from(r, now_ms)?)
}

/// Imports the bundle `file` names through the daemon serving `dir`
/// (`first` is a connection to it): slices of whole events, at most
/// [`IMPORT_BATCH_BYTES`] each, one `import` request per slice. The
/// summary is the sum of the replies, with rejections indexed in the whole
/// bundle. As without a daemon, a slice whose rooms all failed does not
/// stop the import; its error is returned only if no slice was stored.
pub fn import_via_daemon(
    dir: &Path,
    first: UnixStream,
    file: &str,
) -> Result<ImportSummary, CliError> {
    let mut slices = Slices {
        dir,
        conn: Some(first),
        sum: ImportSummary::default(),
        stored: false,
        first_err: None,
    };
    let mut stream = BundleStream::new(open_checked(file)?).map_err(AppError::from)?;
    let created = stream.created_ms();
    let mut slice: Vec<Vec<u8>> = Vec::new();
    let mut at: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    let mut index = 0usize;
    while let Some(raw) = stream.next_event().map_err(AppError::from)? {
        let i = index;
        index += 1;
        match raw {
            RawEvent::Oversize(n) => slices.sum.rejections.push(RejectedInfo {
                index: i,
                event_id: None,
                reason: oversize_reason(n),
            }),
            RawEvent::Bytes(b) => {
                bytes += b.len();
                slice.push(b);
                at.push(i);
                if bytes >= IMPORT_BATCH_BYTES {
                    slices.send(created, &std::mem::take(&mut slice), &at)?;
                    at.clear();
                    bytes = 0;
                }
            }
        }
    }
    if !slice.is_empty() {
        slices.send(created, &slice, &at)?;
    }
    slices.finish()
}

/// The slices of an import through the daemon, and their summed replies.
struct Slices<'a> {
    dir: &'a Path,
    /// The connection for the next request (each request takes one).
    conn: Option<UnixStream>,
    sum: ImportSummary,
    /// Some slice was stored.
    stored: bool,
    /// The first refusal of a slice.
    first_err: Option<ControlError>,
}

impl Slices<'_> {
    /// Sends one slice; `at[k]` is the bundle index of its `k`th event.
    fn send(&mut self, created_ms: u64, slice: &[Vec<u8>], at: &[usize]) -> Result<(), CliError> {
        let raw: Vec<&[u8]> = slice.iter().map(Vec::as_slice).collect();
        let req = Request::new(Op::Import {
            bundle: BASE64.encode(&bundle::frame(&raw, created_ms)),
        });
        let conn = match self.conn.take().or_else(|| control::connect(self.dir)) {
            Some(c) => c,
            None => return Err(ControlError::Closed.into()),
        };
        match control::call(self.dir, conn, &req, |_| Ok(())) {
            Ok(OkData::Import { import }) => {
                self.stored = true;
                let s = *import;
                self.sum.imported += s.imported;
                self.sum.duplicates += s.duplicates;
                self.sum
                    .rejections
                    .extend(s.rejections.into_iter().map(|mut r| {
                        r.index = at.get(r.index).copied().unwrap_or(r.index);
                        r
                    }));
                self.sum.unauthorized.extend(s.unauthorized);
                self.sum.failed_rooms.extend(s.failed_rooms);
                Ok(())
            }
            Ok(other) => Err(CliError {
                code: EXIT_RUNTIME,
                err: CommandError::Unexpected(format!("{other:?}")),
            }),
            // Answered, and nothing of this slice stored.
            Err(e @ ControlError::Api(_)) => {
                self.first_err.get_or_insert(e);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn finish(mut self) -> Result<ImportSummary, CliError> {
        if !self.stored
            && let Some(e) = self.first_err
        {
            return Err(e.into());
        }
        self.sum.rejected = self.sum.rejections.len();
        Ok(self.sum)
    }
}
