//! The bridge's durable state (`protocol-spec/bridge.md`, "Exactly
//! once"): which Matrix room mirrors which mesh room, which mesh events
//! reached Matrix (and which were being sent when the bridge stopped),
//! which Matrix messages wait for the mesh, the homeserver's transactions
//! already answered, and the puppets made. One redb file, `bridge.redb`,
//! owned by the bridge task; every change is one committed transaction.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::BridgeError;

/// The state file in the data directory.
pub const STATE_FILE: &str = "bridge.redb";
/// Most homeserver transaction IDs remembered (the oldest are forgotten;
/// the homeserver retries only its latest transactions).
pub const MAX_REMEMBERED_TXNS: u64 = 4096;

type T = TableDefinition<'static, &'static str, &'static [u8]>;
/// Mesh room (hex) → [`RoomMap`].
const ROOMS: T = TableDefinition::new("rooms");
/// Matrix room ID → mesh room (hex).
const MATRIX_ROOMS: T = TableDefinition::new("matrix_rooms");
/// Mesh event ID → Matrix event ID: on Matrix, committed after the
/// homeserver accepted it.
const POSTED: T = TableDefinition::new("posted");
/// Mesh event ID → Matrix room ID: a send was started (checked against
/// the room after a crash before it is sent again).
const POSTING: T = TableDefinition::new("posting");
/// Matrix event ID → sequence number: a Matrix message waiting for the
/// mesh (or being sent).
const INBOUND_IDS: T = TableDefinition::new("inbound_ids");
/// Sequence number (zero-padded) → [`Inbound`], in arrival order.
const INBOUND: T = TableDefinition::new("inbound");
/// Matrix event ID → mesh event ID: sent to the mesh.
const TO_MESH: T = TableDefinition::new("to_mesh");
/// Homeserver transaction ID → sequence number (answered).
const TXNS: T = TableDefinition::new("txns");
/// Sequence number (zero-padded) → transaction ID, to forget the oldest.
const TXN_ORDER: T = TableDefinition::new("txn_order");
/// Puppet user ID → display name set.
const PUPPETS: T = TableDefinition::new("puppets");
/// `MATRIX_ROOM \0 USER` → (): puppets joined to a Matrix room.
const JOINED: T = TableDefinition::new("joined");
/// Counters (`inbound_next`, `txn_next`).
const META: T = TableDefinition::new("meta");

const ALL: [T; 12] = [
    ROOMS,
    MATRIX_ROOMS,
    POSTED,
    POSTING,
    INBOUND_IDS,
    INBOUND,
    TO_MESH,
    TXNS,
    TXN_ORDER,
    PUPPETS,
    JOINED,
    META,
];

/// A bridged room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMap {
    /// The Matrix room ID.
    pub matrix_room_id: String,
    /// Its alias.
    pub alias: String,
    /// The mesh room name last set on it.
    pub name: String,
}

/// A Matrix message waiting for the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// The Matrix event ID.
    pub matrix_event: String,
    /// The mesh room (hex).
    pub room: String,
    /// The Matrix sender.
    pub user: String,
    /// The text.
    pub text: String,
    /// A send to the mesh was started (checked after a crash).
    #[serde(default)]
    pub sending: bool,
}

/// The figures `bridge status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Puppets made.
    pub puppets: u64,
    /// Mesh messages on Matrix.
    pub to_matrix: u64,
    /// Matrix messages sent to the mesh.
    pub to_mesh: u64,
    /// Matrix messages waiting for the mesh plus mesh messages whose send
    /// to Matrix was started but not confirmed.
    pub pending: u64,
}

/// The state file.
pub struct State {
    db: Database,
    txn_bound: u64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

fn err(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::State(e.to_string())
}

fn seq_key(n: u64) -> String {
    format!("{n:020}")
}

/// Takes the next number of a counter in `META`.
fn next(
    meta: &mut redb::Table<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, BridgeError> {
    let n = meta
        .get(key)
        .map_err(err)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map_or(0, u64::from_be_bytes);
    meta.insert(key, &(n + 1).to_be_bytes()[..]).map_err(err)?;
    Ok(n)
}

fn joined_key(matrix_room: &str, user: &str) -> String {
    format!("{matrix_room}\0{user}")
}

impl State {
    /// Opens (or creates) the state file at `path` (mode 0600).
    pub fn open(path: &Path) -> Result<Self, BridgeError> {
        let db = Database::create(path).map_err(err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
        let txn = db.begin_write().map_err(err)?;
        for t in ALL {
            txn.open_table(t).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(State {
            db,
            txn_bound: MAX_REMEMBERED_TXNS,
        })
    }

    fn get(&self, t: T, key: &str) -> Result<Option<Vec<u8>>, BridgeError> {
        let r = self.db.begin_read().map_err(err)?;
        let table = r.open_table(t).map_err(err)?;
        Ok(table.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    fn put_remove(
        &self,
        puts: &[(T, &str, &[u8])],
        removes: &[(T, &str)],
    ) -> Result<(), BridgeError> {
        let txn = self.db.begin_write().map_err(err)?;
        for (t, k, v) in puts {
            txn.open_table(*t)
                .map_err(err)?
                .insert(*k, *v)
                .map_err(err)?;
        }
        for (t, k) in removes {
            txn.open_table(*t).map_err(err)?.remove(*k).map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    fn keys(&self, t: T) -> Result<Vec<(String, Vec<u8>)>, BridgeError> {
        let r = self.db.begin_read().map_err(err)?;
        let table = r.open_table(t).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn len(&self, t: T) -> Result<u64, BridgeError> {
        let r = self.db.begin_read().map_err(err)?;
        r.open_table(t).map_err(err)?.len().map_err(err)
    }

    /// Every bridged room: mesh room (hex) → its Matrix room.
    pub fn rooms(&self) -> Result<Vec<(String, RoomMap)>, BridgeError> {
        self.keys(ROOMS)?
            .into_iter()
            .map(|(k, v)| Ok((k, serde_json::from_slice(&v).map_err(err)?)))
            .collect()
    }

    /// The Matrix room of a mesh room.
    pub fn room(&self, room_hex: &str) -> Result<Option<RoomMap>, BridgeError> {
        self.get(ROOMS, room_hex)?
            .map(|v| serde_json::from_slice(&v).map_err(err))
            .transpose()
    }

    /// The mesh room of a Matrix room.
    pub fn mesh_room(&self, matrix_room: &str) -> Result<Option<String>, BridgeError> {
        Ok(self
            .get(MATRIX_ROOMS, matrix_room)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records (or updates) a bridged room.
    pub fn set_room(&self, room_hex: &str, map: &RoomMap) -> Result<(), BridgeError> {
        let v = serde_json::to_vec(map).map_err(err)?;
        self.put_remove(
            &[
                (ROOMS, room_hex, &v),
                (MATRIX_ROOMS, &map.matrix_room_id, room_hex.as_bytes()),
            ],
            &[],
        )
    }

    /// Whether a mesh event is on Matrix.
    pub fn posted(&self, event_id: &str) -> Result<bool, BridgeError> {
        Ok(self.get(POSTED, event_id)?.is_some())
    }

    /// Records that a send of a mesh event to a Matrix room starts.
    pub fn start_posting(&self, event_id: &str, matrix_room: &str) -> Result<(), BridgeError> {
        self.put_remove(&[(POSTING, event_id, matrix_room.as_bytes())], &[])
    }

    /// Sends started and never confirmed: (mesh event ID, Matrix room).
    pub fn posting(&self) -> Result<Vec<(String, String)>, BridgeError> {
        Ok(self
            .keys(POSTING)?
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect())
    }

    /// Records that a mesh event is on Matrix as `matrix_event`.
    pub fn set_posted(&self, event_id: &str, matrix_event: &str) -> Result<(), BridgeError> {
        self.put_remove(
            &[(POSTED, event_id, matrix_event.as_bytes())],
            &[(POSTING, event_id)],
        )
    }

    /// Forgets a started send (it is sent again).
    pub fn clear_posting(&self, event_id: &str) -> Result<(), BridgeError> {
        self.put_remove(&[], &[(POSTING, event_id)])
    }

    /// Whether a homeserver transaction was already answered.
    pub fn txn_done(&self, txn_id: &str) -> Result<bool, BridgeError> {
        Ok(self.get(TXNS, txn_id)?.is_some())
    }

    /// Commits one homeserver transaction: its Matrix messages for the
    /// mesh (those not seen before) and its ID, at once. Returns how many
    /// messages were queued.
    pub fn commit_txn(&self, txn_id: &str, msgs: &[Inbound]) -> Result<usize, BridgeError> {
        let txn = self.db.begin_write().map_err(err)?;
        let mut queued = 0;
        {
            let mut ids = txn.open_table(INBOUND_IDS).map_err(err)?;
            let mut inbound = txn.open_table(INBOUND).map_err(err)?;
            let to_mesh = txn.open_table(TO_MESH).map_err(err)?;
            let mut meta = txn.open_table(META).map_err(err)?;
            let mut txns = txn.open_table(TXNS).map_err(err)?;
            let mut order = txn.open_table(TXN_ORDER).map_err(err)?;
            for m in msgs {
                let id = m.matrix_event.as_str();
                if ids.get(id).map_err(err)?.is_some() || to_mesh.get(id).map_err(err)?.is_some() {
                    continue;
                }
                let key = seq_key(next(&mut meta, "inbound_next")?);
                ids.insert(id, key.as_bytes()).map_err(err)?;
                let v = serde_json::to_vec(m).map_err(err)?;
                inbound.insert(key.as_str(), v.as_slice()).map_err(err)?;
                queued += 1;
            }
            let n = next(&mut meta, "txn_next")?;
            txns.insert(txn_id, &n.to_be_bytes()[..]).map_err(err)?;
            order
                .insert(seq_key(n).as_str(), txn_id.as_bytes())
                .map_err(err)?;
            if n >= self.txn_bound {
                let gone = order
                    .remove(seq_key(n - self.txn_bound).as_str())
                    .map_err(err)?
                    .map(|v| String::from_utf8_lossy(v.value()).into_owned());
                if let Some(old) = gone {
                    txns.remove(old.as_str()).map_err(err)?;
                }
            }
        }
        txn.commit().map_err(err)?;
        Ok(queued)
    }

    /// The Matrix messages waiting for the mesh, oldest first:
    /// (sequence key, message).
    pub fn inbound(&self) -> Result<Vec<(String, Inbound)>, BridgeError> {
        self.keys(INBOUND)?
            .into_iter()
            .map(|(k, v)| Ok((k, serde_json::from_slice(&v).map_err(err)?)))
            .collect()
    }

    /// Marks a waiting message as being sent.
    pub fn start_sending(&self, key: &str, m: &Inbound) -> Result<(), BridgeError> {
        let m = Inbound {
            sending: true,
            ..m.clone()
        };
        let v = serde_json::to_vec(&m).map_err(err)?;
        self.put_remove(&[(INBOUND, key, &v)], &[])
    }

    /// Records that a waiting message is in the mesh as `event_id` (or is
    /// dropped, with `None`).
    pub fn set_sent(
        &self,
        key: &str,
        m: &Inbound,
        event_id: Option<&str>,
    ) -> Result<(), BridgeError> {
        let ev = event_id.unwrap_or("");
        self.put_remove(
            &[(TO_MESH, m.matrix_event.as_str(), ev.as_bytes())],
            &[(INBOUND, key), (INBOUND_IDS, m.matrix_event.as_str())],
        )
    }

    /// The display name a puppet was given (it exists when `Some`).
    pub fn puppet(&self, user: &str) -> Result<Option<String>, BridgeError> {
        Ok(self
            .get(PUPPETS, user)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records a puppet and its display name.
    pub fn set_puppet(&self, user: &str, name: &str) -> Result<(), BridgeError> {
        self.put_remove(&[(PUPPETS, user, name.as_bytes())], &[])
    }

    /// Whether a puppet is joined to a Matrix room.
    pub fn joined(&self, matrix_room: &str, user: &str) -> Result<bool, BridgeError> {
        Ok(self.get(JOINED, &joined_key(matrix_room, user))?.is_some())
    }

    /// Records a puppet's join (`true`) or leave.
    pub fn set_joined(&self, matrix_room: &str, user: &str, on: bool) -> Result<(), BridgeError> {
        let k = joined_key(matrix_room, user);
        if on {
            self.put_remove(&[(JOINED, &k, b"")], &[])
        } else {
            self.put_remove(&[], &[(JOINED, &k)])
        }
    }

    /// The puppets joined to a Matrix room.
    pub fn joined_users(&self, matrix_room: &str) -> Result<Vec<String>, BridgeError> {
        let prefix = format!("{matrix_room}\0");
        Ok(self
            .keys(JOINED)?
            .into_iter()
            .filter_map(|(k, _)| k.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    /// The figures `bridge status` shows.
    pub fn counts(&self) -> Result<Counts, BridgeError> {
        Ok(Counts {
            puppets: self.len(PUPPETS)?,
            to_matrix: self.len(POSTED)?,
            to_mesh: self.len(TO_MESH)?,
            pending: self.len(INBOUND)? + self.len(POSTING)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> Inbound {
        Inbound {
            matrix_event: id.into(),
            room: "ab".into(),
            user: "@hq:x".into(),
            text: "hi".into(),
            sending: false,
        }
    }

    #[test]
    fn a_matrix_message_is_queued_once_whatever_the_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(&dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(s.commit_txn("1", &[msg("$a"), msg("$b")]).unwrap(), 2);
        assert!(s.txn_done("1").unwrap());
        // A retried transaction, or a new one repeating an event.
        assert_eq!(s.commit_txn("2", &[msg("$a")]).unwrap(), 0);
        let q = s.inbound().unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].1.matrix_event, "$a");
        s.set_sent(&q[0].0, &q[0].1, Some("e1")).unwrap();
        assert_eq!(s.commit_txn("3", &[msg("$a")]).unwrap(), 0, "sent already");
        let c = s.counts().unwrap();
        assert_eq!((c.to_mesh, c.pending), (1, 1));
    }

    #[test]
    fn old_transaction_ids_are_forgotten_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join(STATE_FILE)).unwrap();
        s.txn_bound = 8;
        for i in 0..s.txn_bound + 3 {
            s.commit_txn(&i.to_string(), &[]).unwrap();
        }
        assert!(!s.txn_done("0").unwrap() && !s.txn_done("2").unwrap());
        assert!(s.txn_done("3").unwrap());
        assert_eq!(s.len(TXNS).unwrap(), s.txn_bound);
    }

    #[test]
    fn posting_survives_reopening_until_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        {
            let s = State::open(&path).unwrap();
            s.start_posting("e1", "!r").unwrap();
        }
        let s = State::open(&path).unwrap();
        assert_eq!(
            s.posting().unwrap(),
            vec![("e1".to_owned(), "!r".to_owned())]
        );
        s.set_posted("e1", "$m").unwrap();
        assert!(s.posted("e1").unwrap() && s.posting().unwrap().is_empty());
    }
}
