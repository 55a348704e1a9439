//! Reconciliation sessions as the node drives them: a thin adapter so the
//! node does not depend on the algorithm's internals.
//!
//! PLACEHOLDER algorithm until `crate::reconcile` lands: a digest of the
//! whole set settles identical sets in one round trip; otherwise the
//! responder lists its IDs and the initiator computes both differences.

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::cbor::{self, CborError, Reader, Writer};
use crate::event::EventId;
use crate::store::ItemKey;

/// Most IDs a responder lists in one reply.
pub const MAX_RECON_IDS: usize = 1000;

/// A malformed reconciliation message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReconError {
    /// Bad encoding.
    #[error("reconciliation encoding: {0}")]
    Cbor(#[from] CborError),
    /// A message that does not fit the session state.
    #[error("unexpected reconciliation message")]
    Unexpected,
}

/// What the session produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconOutcome {
    /// Send this payload to the peer.
    Reply(Vec<u8>),
    /// Finished: the differences.
    Done {
        /// IDs the peer has and this node lacks.
        we_lack: Vec<EventId>,
        /// IDs this node has and the peer lacks.
        they_lack: Vec<EventId>,
    },
}

/// An initiator's session.
#[derive(Debug, Clone)]
pub struct Recon {
    items: Vec<ItemKey>,
}

fn digest(items: &[ItemKey]) -> [u8; 32] {
    let mut h = Sha256::new();
    for i in items {
        h.update(i.id.as_bytes());
    }
    h.finalize().into()
}

impl Recon {
    /// Starts a session over the initiator's sorted items.
    pub fn initiate(items: Vec<ItemKey>) -> (Recon, Vec<u8>) {
        let mut w = Writer::new();
        w.array(2).u64(0).bytes(&digest(&items));
        (Recon { items }, w.into_bytes())
    }

    /// Responder side: answers one message statelessly.
    pub fn respond(items: &[ItemKey], msg: &[u8]) -> Result<ReconOutcome, ReconError> {
        cbor::validate(msg, 2)?;
        let mut r = Reader::new(msg);
        r.array_of(2, "recon [tag, body]")?;
        if r.u64()? != 0 {
            return Err(ReconError::Unexpected);
        }
        let theirs: [u8; 32] = r.byte_array("32-byte digest")?;
        let mut w = Writer::new();
        if theirs == digest(items) {
            w.array(2).u64(1).array(0);
        } else {
            let n = items.len().min(MAX_RECON_IDS);
            w.array(2).u64(2).array(n);
            for i in items.iter().rev().take(n) {
                w.bytes(i.id.as_bytes());
            }
        }
        Ok(ReconOutcome::Reply(w.into_bytes()))
    }

    /// Initiator side: handles the responder's reply.
    pub fn handle(&mut self, msg: &[u8]) -> Result<ReconOutcome, ReconError> {
        cbor::validate(msg, 2)?;
        let mut r = Reader::new(msg);
        r.array_of(2, "recon [tag, body]")?;
        let tag = r.u64()?;
        let n = r.array()?;
        if tag == 1 {
            return Ok(ReconOutcome::Done {
                we_lack: vec![],
                they_lack: vec![],
            });
        }
        if tag != 2 || n > MAX_RECON_IDS {
            return Err(ReconError::Unexpected);
        }
        let mut theirs = std::collections::BTreeSet::new();
        for _ in 0..n {
            theirs.insert(EventId(r.byte_array("32-byte event ID")?));
        }
        let ours: std::collections::BTreeSet<EventId> = self.items.iter().map(|i| i.id).collect();
        Ok(ReconOutcome::Done {
            we_lack: theirs.difference(&ours).copied().collect(),
            they_lack: ours.difference(&theirs).copied().collect(),
        })
    }
}
