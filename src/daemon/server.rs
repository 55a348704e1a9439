//! The control socket's server side (`protocol-spec/daemon.md`, "Control
//! API"): accepts connections, reads one request line each, checks it
//! ([`decode_request`]: a bad line gets a typed error reply, never a
//! failure), hands it to the run loop and writes the replies back, each
//! bounded by [`MAX_REPLY_BYTES`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

use super::DaemonError;
use super::driver::{ControlMsg, REPLY_QUEUE};
use crate::control::{
    ErrorCode, MAX_CONTROL_CONNECTIONS, MAX_REPLY_BYTES, MAX_REQUEST_BYTES, Reply, decode_request,
    socket_path,
};

/// Binds the control socket, replacing a stale one (the store lock, taken
/// before this, proves no other daemon serves this directory), mode 0600.
pub(super) fn bind(dir: &Path) -> Result<UnixListener, DaemonError> {
    let path = socket_path(dir);
    let io = |source| DaemonError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed a stale control socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Serves connections until the run loop goes away.
pub(super) async fn serve(listener: UnixListener, to_driver: mpsc::Sender<ControlMsg>) {
    let slots = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                continue;
            }
        };
        let to_driver = to_driver.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, to_driver).await {
                tracing::debug!(error = %e, "control connection ended");
            }
            drop(permit);
        });
    }
}

async fn connection(
    stream: UnixStream,
    to_driver: mpsc::Sender<ControlMsg>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64 + 1);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).await?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    let req = decode_request(&line);
    drop(line);
    let (tx, mut rx) = mpsc::channel::<Reply>(REPLY_QUEUE);
    match req {
        Ok(req) => {
            if to_driver.send(ControlMsg { req, reply: tx }).await.is_err() {
                return Ok(());
            }
        }
        Err(e) => {
            tracing::debug!(code = ?e.code, error = %e, "control request refused");
            let _ = tx.try_send(Reply::from(e));
            drop(tx);
        }
    }
    // Replies until the final one; a follower's stream ends when either
    // side goes.
    let mut sink = [0u8; 64];
    let mut reader = reader.into_inner();
    loop {
        tokio::select! {
            r = rx.recv() => {
                let Some(reply) = r else { return Ok(()) };
                let mut done = reply.is_final();
                let mut bytes = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
                if bytes.len() >= MAX_REPLY_BYTES {
                    done = true;
                    let e = Reply::error(
                        ErrorCode::TooLarge,
                        format!("the reply is longer than {MAX_REPLY_BYTES} bytes"),
                    );
                    bytes = serde_json::to_vec(&e).map_err(std::io::Error::other)?;
                }
                bytes.push(b'\n');
                write.write_all(&bytes).await?;
                if done {
                    write.flush().await?;
                    return Ok(());
                }
            }
            // The client hung up (or sent more than its one request).
            n = reader.read(&mut sink) => {
                if n.unwrap_or(0) == 0 {
                    return Ok(());
                }
            }
        }
    }
}
