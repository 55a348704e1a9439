//! This device's delivery and read receipts (`protocol-spec/rooms.md` §9):
//! what a room's receipts say ([`Device::receipt_book`]), and the receipt
//! this device owes a room now ([`Device::send_receipt`]): only the
//! senders whose figures moved since its own previous receipts.

use std::collections::BTreeMap;

use super::*;
use crate::room::receipt::{Delivered, MAX_RECEIPT_ENTRIES, MAX_RECEIPT_EXCEPTIONS, ReceiptBody};
use crate::room::{OwnReceipts, ReceiptBook};

/// Per other sender, the highest sequence number of a message a person
/// was shown (what a read receipt says).
pub type ReadMarks = BTreeMap<DeviceId, u64>;

impl<S: Store> Device<S> {
    /// What the receipts the room's history holds say (of `only` the one
    /// device, when given): each admitted receipt of a sender authorised at
    /// its position, its plaintext read from the store. `order` is the
    /// DAG's display order (the caller's, computed once).
    pub(super) fn receipt_book(
        &self,
        s: &mut RoomSession,
        order: &[EventId],
        only: Option<&DeviceId>,
    ) -> Result<ReceiptBook, AppError> {
        let mut book = ReceiptBook::default();
        let ids: Vec<(EventId, DeviceId, u64)> = {
            let dag = s.dag();
            order
                .iter()
                .filter_map(|id| {
                    let h = dag.held(id)?;
                    (h.kind == EventKind::Receipt && only.is_none_or(|d| *d == h.sender))
                        .then_some((*id, h.sender, h.seq))
                })
                .collect()
        };
        for (id, reader, seq) in ids {
            self.fold_receipt(s, &mut book, id, reader, seq)?;
        }
        Ok(book)
    }

    /// Sends the receipt this device owes `room` now, if any: delivered
    /// entries for every other sender whose messages this device holds
    /// further than its previous receipts said, and read entries for the
    /// `read` marks beyond them. Staged and committed like a message
    /// ([`Device::send`]); `None` when there is nothing new to say or this
    /// device is no longer a member.
    pub fn send_receipt<R: CryptoRng + ?Sized>(
        &mut self,
        room: &RoomId,
        read: &ReadMarks,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Option<EventId>, AppError> {
        let mut s = self.cached_session(room)?;
        let me = self.device_id();
        let body = if s.members().is_member(&me) {
            self.owed_receipt(&mut s, read)?
        } else {
            ReceiptBody::default()
        };
        if body.is_empty() {
            self.keep_session(*room, s);
            return Ok(None);
        }
        let content = Content::Receipt(body);
        let out = s.send(&self.keys.identity, &content, now_ms, rng)?;
        let keys = zeroize::Zeroizing::new(out.keys().to_vec());
        let events = out.release();
        let pts = last_message_plaintext(&events, &content);
        let id = pts.first().map(|(id, _)| *id);
        self.persist(room, &keys, &events, &pts, now_ms)?;
        self.keep_session(*room, s);
        Ok(id)
    }

    /// Folds the receipt `id` that `reader` sent at `seq` into `book` when
    /// its sender is authorised at its position, its plaintext read from
    /// the store.
    fn fold_receipt(
        &self,
        s: &mut RoomSession,
        book: &mut ReceiptBook,
        id: EventId,
        reader: DeviceId,
        seq: u64,
    ) -> Result<(), AppError> {
        if s.dag().sender_authorized_at(&id, &reader)
            && let Some(pt) = self.store.get_secret(&pt_key(&id))?
            && let Ok(Content::Receipt(body)) = Content::from_bytes(&pt)
        {
            book.add(reader, seq, &body);
        }
        Ok(())
    }

    /// This device's receipts in the room's session, brought up to date
    /// with the own receipts admitted since the last call (each event is
    /// looked at once per session, so a receipt costs no scan of history).
    fn own_receipts(&self, s: &mut RoomSession) -> Result<OwnReceipts, AppError> {
        let me = self.device_id();
        let mut own = s.take_own_receipts();
        let fresh: Vec<(EventId, u64)> = s
            .dag()
            .admitted_from(own.seen)
            .filter(|(_, h)| h.kind == EventKind::Receipt && h.sender == me)
            .map(|(id, h)| (id, h.seq))
            .collect();
        own.seen = s.dag().len();
        // On an error `own` is dropped, never kept half-folded: the
        // session's next call starts again from the first event.
        for (id, seq) in fresh {
            self.fold_receipt(s, &mut own.book, id, me, seq)?;
        }
        Ok(own)
    }

    /// The entries of a receipt owed now (empty when nothing moved).
    fn owed_receipt(&self, s: &mut RoomSession, read: &ReadMarks) -> Result<ReceiptBody, AppError> {
        let me = self.device_id();
        let own = self.own_receipts(s)?;
        let mine = &own.book;
        // Per other sender with standing: its highest admitted message.
        let standing = s.dag().standing().clone();
        let upto: BTreeMap<DeviceId, u64> = standing
            .iter()
            .filter(|d| **d != me)
            .map(|d| (*d, s.dag().top_message(d)))
            .filter(|(_, top)| *top > 0)
            .collect();
        // What is missing below it (the DAG's gaps, ascending per sender),
        // at most one more than an entry may list.
        let mut missing: BTreeMap<DeviceId, Vec<u64>> = BTreeMap::new();
        for g in s.gaps() {
            let m = missing.entry(g.sender).or_default();
            let mut seq = g.from_seq;
            while seq <= g.to_seq && m.len() <= MAX_RECEIPT_EXCEPTIONS {
                m.push(seq);
                seq += 1;
            }
        }
        let mut body = ReceiptBody::default();
        for (sender, top) in upto {
            let gaps = missing.remove(&sender).unwrap_or_default();
            let Some(entry) = Delivered::new(sender, top, &gaps) else {
                continue;
            };
            if mine.delivered_entry(&me, &sender) != Some(&entry)
                && body.delivered.len() < MAX_RECEIPT_ENTRIES
            {
                body.delivered.push(entry);
            }
        }
        for (sender, seq) in read {
            if *sender != me
                && standing.contains(sender)
                && *seq > mine.read_upto(&me, sender)
                && body.read.len() < MAX_RECEIPT_ENTRIES
            {
                body.read.push((*sender, *seq));
            }
        }
        s.keep_own_receipts(own);
        Ok(body)
    }
}
