//! The client side of the control API (`protocol-spec/daemon.md`,
//! "Control API"): find the daemon's socket, send one typed request, read
//! typed replies.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    API_VERSION, ApiError, LOCK_POLL, MAX_REPLY_BYTES, OkData, Op, Reply, ReplyBody, Request,
    SOCKET_NAME,
};
use crate::app::MessageLine;

/// Why a call to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The daemon sent something that is not a version-1 reply.
    #[error("control socket {path}: bad reply from the daemon: {reason}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The daemon closed the connection before its final reply.
    #[error("the daemon closed the connection before the command finished (it may be stopping)")]
    Closed,
    /// The line handler failed (for example standard output is closed).
    #[error("{0}")]
    Output(io::Error),
    /// The daemon refused or failed the request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No daemon answers on the data directory's control socket.
    #[error("the daemon is not running")]
    NotRunning,
}

/// The control socket path of a data directory.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_NAME)
}

/// A connection to a running daemon, or `None` when none runs (no socket,
/// or a stale socket that refuses connections).
pub fn connect(dir: &Path) -> Option<UnixStream> {
    UnixStream::connect(socket_path(dir)).ok()
}

/// Waits up to `timeout` for a daemon's control socket to accept.
pub fn wait_for(dir: &Path, timeout: Duration) -> Option<UnixStream> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(s) = connect(dir) {
            return Some(s);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(LOCK_POLL);
    }
}

/// Sends `req` on `stream`, passes each streamed line to `on_line`, and
/// returns the final reply's data (or its error as [`ControlError::Api`]).
pub fn call(
    dir: &Path,
    stream: UnixStream,
    req: &Request,
    mut on_line: impl FnMut(MessageLine) -> io::Result<()>,
) -> Result<OkData, ControlError> {
    let path = socket_path(dir);
    let io_err = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let protocol = |reason: String| ControlError::Protocol {
        path: path.clone(),
        reason,
    };
    let mut line = serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io_err)?;
    let mut reader = BufReader::new(&stream);
    loop {
        let mut buf = Vec::new();
        let n = (&mut reader)
            .take(MAX_REPLY_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io_err)?;
        if n == 0 {
            return Err(ControlError::Closed);
        }
        if buf.len() > MAX_REPLY_BYTES {
            return Err(protocol("reply line too long".into()));
        }
        let reply: Reply = serde_json::from_slice(&buf).map_err(|e| protocol(e.to_string()))?;
        if reply.v != API_VERSION {
            return Err(protocol(format!("reply of version {}", reply.v)));
        }
        match reply.body {
            ReplyBody::Line(l) => on_line(l).map_err(ControlError::Output)?,
            ReplyBody::Ok(data) => return Ok(data),
            ReplyBody::Error(e) => return Err(ControlError::Api(e)),
        }
    }
}

/// Connects to the daemon of `dir`, runs `op`, and returns its streamed
/// lines with its final data (blocking: async callers use
/// `spawn_blocking`).
pub fn run(dir: &Path, op: Op) -> Result<(Vec<MessageLine>, OkData), ControlError> {
    let stream = connect(dir).ok_or(ControlError::NotRunning)?;
    let mut lines = Vec::new();
    let ok = call(dir, stream, &Request::new(op), |l| {
        lines.push(l);
        Ok(())
    })?;
    Ok((lines, ok))
}

/// An invite naming a contact of the data directory's contact book by
/// device ID carries the card itself: the daemon's device core reads no
/// file, so the client resolves what only the file knows.
pub fn with_book_card(dir: &Path, op: Op) -> Op {
    let Op::RoomInvite { room, contact } = op else {
        return op;
    };
    let card = contact
        .trim()
        .parse::<crate::crypto::DeviceId>()
        .ok()
        .and_then(|d| {
            let book =
                crate::contacts::ContactBook::load(&crate::datadir::DataDir::new(dir)).ok()?;
            book.get(&d).map(|c| c.to_text())
        });
    Op::RoomInvite {
        room,
        contact: card.unwrap_or(contact),
    }
}
