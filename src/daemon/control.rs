//! The control socket (`protocol-spec/daemon.md`, "Control socket").
//!
//! A running daemon holds the store (redb allows one process at a time), so
//! the CLI talks to it over a Unix domain socket, [`SOCKET_NAME`] in the
//! data directory, mode 0600 inside the 0700 data directory.
//!
//! The protocol is JSON lines. A client connects, writes one [`Request`]
//! line, and reads [`Reply`] lines: any number of `out` chunks (bytes for
//! the CLI's standard output, base64) and then one `done` with the exit
//! code. A `follow` request streams `out` chunks until the client hangs
//! up. The daemon answers a command only after its writes are committed.
//!
//! A socket file whose daemon died (SIGKILL) refuses connections: the CLI
//! then opens the store directly, and the next daemon replaces the file.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use data_encoding::BASE64;
use serde::{Deserialize, Serialize};

/// File name of the control socket in the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Largest request line: a base64 bundle of the largest size plus headroom.
pub const MAX_REQUEST_BYTES: usize = crate::bundle::MAX_BUNDLE_BYTES / 3 * 4 + 64 * 1024;

/// Largest reply line the CLI accepts (an `out` chunk is at most
/// [`MAX_CHUNK_BYTES`] before base64).
pub const MAX_REPLY_BYTES: usize = MAX_CHUNK_BYTES / 3 * 4 + 1024;

/// Largest piece of output sent in one `out` reply.
pub const MAX_CHUNK_BYTES: usize = 256 * 1024;

/// Most control connections served at once; more wait for a free slot.
pub const MAX_CONTROL_CONNECTIONS: usize = 16;

/// One request from the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// A rooms command (`room …`, `rooms`, `send`, `messages`, `export`,
    /// `import`) given as its arguments after the binary name and global
    /// flags. `input` is the bundle `import` reads, base64.
    Cli {
        /// Arguments, e.g. `["send", ROOM_ID, "text", "--json"]`.
        argv: Vec<String>,
        /// Base64 of what the command reads (import).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// `messages ROOM_ID --follow`: stream new lines until the client hangs up.
    Follow {
        /// Room ID (hex).
        room_id: String,
        /// JSON lines rather than human lines.
        json: bool,
    },
    /// `meshrelay peers`.
    Peers {
        /// Print JSON.
        json: bool,
    },
    /// `meshrelay status`.
    Status {
        /// Print JSON.
        json: bool,
    },
    /// Stop the daemon gracefully (as SIGTERM does).
    Shutdown,
}

/// One reply line from the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Bytes for the CLI's standard output, base64.
    Out {
        /// Base64 data.
        data: String,
    },
    /// The command finished.
    Done {
        /// Exit code: 0 ok, 1 runtime failure, 2 bad input.
        code: u8,
        /// What went wrong, for standard error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl Reply {
    /// Output bytes, split into chunks of at most [`MAX_CHUNK_BYTES`].
    pub fn out(bytes: &[u8]) -> Vec<Reply> {
        bytes
            .chunks(MAX_CHUNK_BYTES)
            .map(|c| Reply::Out {
                data: BASE64.encode(c),
            })
            .collect()
    }

    /// A successful end.
    pub fn ok() -> Reply {
        Reply::Done {
            code: 0,
            error: None,
        }
    }

    /// A failed end.
    pub fn fail(code: u8, error: impl std::fmt::Display) -> Reply {
        Reply::Done {
            code,
            error: Some(error.to_string()),
        }
    }
}

/// Why talking to the daemon failed.
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
    /// The daemon sent something that is not a reply.
    #[error("control socket {path}: bad reply from the daemon: {reason}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The daemon closed the connection before finishing the command.
    #[error("the daemon closed the connection before the command finished (it may be stopping)")]
    Closed,
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

/// How long a command that found the store locked but no control socket
/// waits for a starting daemon's socket (the daemon opens the store first).
pub const STARTUP_WAIT: Duration = Duration::from_secs(10);
/// How long a starting daemon waits for a command that holds the store
/// (with no daemon's socket up) to finish before giving up.
pub const STORE_LOCK_WAIT: Duration = Duration::from_secs(10);
/// Polling interval of both waits.
pub const LOCK_POLL: Duration = Duration::from_millis(100);

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

/// Sends `req` on `stream` and passes each output chunk to `out` until the
/// daemon reports the end. Returns the exit code and error text.
pub fn call(
    dir: &Path,
    stream: UnixStream,
    req: &Request,
    mut out: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(u8, Option<String>), ControlError> {
    let path = socket_path(dir);
    let io_err = |source| ControlError::Io {
        path: path.clone(),
        source,
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
            return Err(ControlError::Protocol {
                path: path.clone(),
                reason: "reply line too long".into(),
            });
        }
        let reply: Reply = serde_json::from_slice(&buf).map_err(|e| ControlError::Protocol {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        match reply {
            Reply::Out { data } => {
                let bytes = BASE64
                    .decode(data.as_bytes())
                    .map_err(|e| ControlError::Protocol {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                out(&bytes).map_err(io_err)?;
            }
            Reply::Done { code, error } => return Ok((code, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_have_the_documented_json_shape() {
        let r = Request::Cli {
            argv: vec!["send".into(), "ab".into(), "hi".into()],
            input: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"cli","argv":["send","ab","hi"]}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Status { json: true }).unwrap(),
            r#"{"op":"status","json":true}"#
        );
        let done: Reply = serde_json::from_str(r#"{"type":"done","code":2,"error":"x"}"#).unwrap();
        assert_eq!(done, Reply::fail(2, "x"));
        let chunks = Reply::out(&vec![7u8; MAX_CHUNK_BYTES + 1]);
        assert_eq!(chunks.len(), 2);
        assert!(serde_json::from_str::<Request>(r#"{"op":"rm -rf"}"#).is_err());
    }
}
