//! When the device core sends receipts (`protocol-spec/rooms.md` §9):
//! a room's receipt is due [`RECEIPT_DELAY_MS`](crate::room::receipt::RECEIPT_DELAY_MS) after the first message
//! that became readable or the first view a person was shown since its
//! last receipt, so one receipt covers everything of that delay. Receiving
//! a receipt never makes one due.

use std::collections::BTreeMap;

use rand_core::{CryptoRng, Rng};

use super::{CoreError, CoreOutput, DeviceCore};
use crate::app::ReadMarks;
use crate::event::RoomId;
use crate::store::Store;

/// A receipt a room is owed.
#[derive(Debug)]
pub(super) struct Due {
    /// When it is sent.
    at_ms: u64,
    /// What people were shown since the last one.
    read: ReadMarks,
}

/// The rooms owed a receipt.
pub(super) type DueReceipts = BTreeMap<RoomId, Due>;

impl<S: Store, R: Rng + CryptoRng> DeviceCore<S, R> {
    /// How long a room's receipt gathers before it is sent
    /// ([`RECEIPT_DELAY_MS`](crate::room::receipt::RECEIPT_DELAY_MS) by default; the simulator sweeps it).
    pub fn set_receipt_delay(&mut self, ms: u64) {
        self.receipt_delay_ms = ms;
    }

    /// Whether this core sends receipts (on by default; the simulator
    /// measures the network without them).
    pub fn set_receipts(&mut self, on: bool) {
        self.receipts_on = on;
        if !on {
            self.receipts.clear();
        }
    }

    /// A receipt for `room` is due (if it is not already), with `read`
    /// marks of what a person was shown. Only rooms where this device
    /// decrypted a message or a person read become due, so the map stays
    /// within the rooms it holds.
    pub(super) fn receipt_due(&mut self, room: RoomId, read: Option<ReadMarks>, now_ms: u64) {
        if !self.receipts_on {
            return;
        }
        let due = self.receipts.entry(room).or_insert_with(|| Due {
            at_ms: now_ms.saturating_add(self.receipt_delay_ms),
            read: ReadMarks::new(),
        });
        for (sender, seq) in read.into_iter().flatten() {
            let m = due.read.entry(sender).or_default();
            *m = (*m).max(seq);
        }
    }

    /// The earliest time a receipt is due.
    pub(super) fn receipts_timeout(&self) -> Option<u64> {
        self.receipts.values().map(|d| d.at_ms).min()
    }

    /// Sends the receipts due by `now_ms` (only with nothing staged: the
    /// driver's next cycle commits first and feeds the timeout again).
    pub(super) fn send_due_receipts(&mut self, now_ms: u64) -> Result<(), CoreError> {
        if self.needs_commit() {
            return Ok(());
        }
        let rooms: Vec<RoomId> = self
            .receipts
            .iter()
            .filter(|(_, d)| d.at_ms <= now_ms)
            .map(|(r, _)| *r)
            .collect();
        for room in rooms {
            let Some(due) = self.receipts.remove(&room) else {
                continue;
            };
            let sent = self.on_device(|dev, rng| dev.send_receipt(&room, &due.read, now_ms, rng));
            match sent {
                Ok((_, events)) => {
                    self.dirty = true;
                    if let Some(id) = self.publish(now_ms, events)? {
                        self.abandon(now_ms)?;
                        self.out.push_back(CoreOutput::ProcessingFailed(format!(
                            "the store refused this device's receipt {id}"
                        )));
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.abandon(now_ms)?;
                    self.out.push_back(CoreOutput::ProcessingFailed(format!(
                        "sending a receipt: {e}"
                    )));
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}
