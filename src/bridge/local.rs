//! The bridge's local socket (`bridge.sock` in the data directory, mode
//! 0600; `protocol-spec/bridge.md`, "Commands"): `meshrelay bridge status`
//! and `bridge invite` ask the running bridge, which alone holds its
//! state. One JSON request line, one JSON reply line:
//!
//! ```text
//! {"v":1,"op":"status"}                           → {"v":1,"ok":Status}
//! {"v":1,"op":"invite","user":U,"room":R|null}    → {"v":1,"ok":{"invited":[…]}}
//! any failure                                     → {"v":1,"error":"…"}
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{BridgeError, Shared};

/// The socket's file name.
pub const SOCKET_NAME: &str = "bridge.sock";
/// Longest request line, in bytes.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Version of the socket's requests and replies.
pub const LOCAL_VERSION: u64 = 1;

/// A request to the running bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LocalOp {
    /// The bridged rooms and figures.
    Status,
    /// Invite a Matrix user to the bridged rooms (or one).
    Invite {
        /// The Matrix user ID.
        user: String,
        /// Only this mesh room (hex).
        #[serde(default)]
        room: Option<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct LocalRequest {
    v: u64,
    #[serde(flatten)]
    op: LocalOp,
}

/// What `bridge status --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeStatus {
    /// The bridged rooms.
    pub rooms: Vec<BridgedRoom>,
    /// Puppets made.
    pub puppets: u64,
    /// Mesh messages on Matrix.
    pub to_matrix: u64,
    /// Matrix messages in the mesh.
    pub to_mesh: u64,
    /// Messages waiting or unconfirmed.
    pub pending: u64,
}

/// One bridged room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgedRoom {
    /// The mesh room ID (hex).
    pub room_id: String,
    /// The Matrix room ID.
    pub matrix_room_id: String,
    /// Its alias.
    pub alias: String,
}

/// The socket path of a data directory.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_NAME)
}

/// Serves the socket until the task is aborted.
pub async fn serve(shared: Arc<Shared>) -> Result<tokio::task::JoinHandle<()>, BridgeError> {
    let path = socket_path(&shared.dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| BridgeError::Io(format!("{}: {e}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| BridgeError::Io(format!("{}: {e}", path.display())))?;
    }
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = shared.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = Vec::new();
                let mut reader = BufReader::new(r).take(MAX_REQUEST_BYTES as u64 + 1);
                let reply = match reader.read_until(b'\n', &mut line).await {
                    Ok(_) if line.len() > MAX_REQUEST_BYTES => {
                        json!({"v": LOCAL_VERSION, "error": "request too long"})
                    }
                    Ok(_) => answer(&shared, &line).await,
                    Err(_) => return,
                };
                let mut out = reply.to_string().into_bytes();
                out.push(b'\n');
                let _ = w.write_all(&out).await;
            });
        }
    }))
}

async fn answer(shared: &Arc<Shared>, line: &[u8]) -> Value {
    let req: LocalRequest = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return json!({"v": LOCAL_VERSION, "error": format!("bad request: {e}")}),
    };
    if req.v != LOCAL_VERSION {
        return json!({"v": LOCAL_VERSION, "error": format!("unsupported version {}", req.v)});
    }
    let r = match req.op {
        LocalOp::Status => status(shared).await.map(|s| json!(s)),
        LocalOp::Invite { user, room } => invite(shared, &user, room.as_deref()).await,
    };
    match r {
        Ok(v) => json!({"v": LOCAL_VERSION, "ok": v}),
        Err(e) => json!({"v": LOCAL_VERSION, "error": e.to_string()}),
    }
}

async fn status(shared: &Arc<Shared>) -> Result<BridgeStatus, BridgeError> {
    let s = shared.clone();
    tokio::task::spawn_blocking(move || {
        let rooms = s
            .state
            .rooms()?
            .into_iter()
            .map(|(room_id, m)| BridgedRoom {
                room_id,
                matrix_room_id: m.matrix_room_id,
                alias: m.alias,
            })
            .collect();
        let c = s.state.counts()?;
        Ok(BridgeStatus {
            rooms,
            puppets: c.puppets,
            to_matrix: c.to_matrix,
            to_mesh: c.to_mesh,
            pending: c.pending,
        })
    })
    .await
    .map_err(|e| BridgeError::State(e.to_string()))?
}

async fn invite(
    shared: &Arc<Shared>,
    user: &str,
    room: Option<&str>,
) -> Result<Value, BridgeError> {
    let valid = user.starts_with('@') && user.contains(':') && user.len() <= 255;
    if !valid {
        return Err(BridgeError::BadInput(format!(
            "{user:?} is not a Matrix user ID"
        )));
    }
    let rooms = status(shared).await?.rooms;
    let chosen: Vec<_> = rooms
        .into_iter()
        .filter(|r| room.is_none_or(|want| r.room_id == want))
        .collect();
    if chosen.is_empty() {
        return Err(BridgeError::BadInput(match room {
            Some(r) => format!("room {r} is not bridged (yet)"),
            None => "no room is bridged yet: invite the bridge's device to a mesh room".into(),
        }));
    }
    let mut invited = Vec::new();
    for r in chosen {
        shared.matrix.invite(&r.matrix_room_id, user).await?;
        invited.push(r.matrix_room_id);
    }
    Ok(json!({"invited": invited}))
}

/// Sends one request to the running bridge of `dir` (blocking; for the
/// CLI). `Err(NotRunning)` when no bridge answers.
pub fn request(dir: &Path, op: &LocalOp) -> Result<Value, BridgeError> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket_path(dir))
        .map_err(|_| BridgeError::NotRunning)?;
    let mut line = serde_json::to_vec(&LocalRequest {
        v: LOCAL_VERSION,
        op: op.clone(),
    })
    .map_err(|e| BridgeError::Io(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| BridgeError::Io(e.to_string()))?;
    let mut reply = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| BridgeError::Io(e.to_string()))?;
    let v: Value = serde_json::from_str(&reply)
        .map_err(|e| BridgeError::Io(format!("bad reply from the bridge: {e}")))?;
    match (v.get("ok"), v.get("error")) {
        (Some(ok), _) => Ok(ok.clone()),
        (_, Some(e)) => Err(BridgeError::BadInput(
            e.as_str().unwrap_or("failed").to_owned(),
        )),
        _ => Err(BridgeError::Io("bad reply from the bridge".into())),
    }
}
