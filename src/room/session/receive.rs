//! Incoming events of a room: admission into the DAG, key shares through
//! the key-share channel from members only, decryption at the sender's
//! causal position, and the keys derived again by `room repair`
//! (`protocol-spec/rooms.md` §5, `protocol-spec/encryption.md`).

use super::*;

impl RoomSession {
    /// Decrypts one message event again (for example after
    /// [`Received::KeysInstalled`]).
    /// The sender's authorisation at the event's causal position is
    /// checked first (`rooms.md` §5): a removed member's later message is
    /// never decrypted, whatever keys this device holds.
    pub fn decrypt(&mut self, event: &Event) -> Result<Content, String> {
        if !self.dag.sender_authorized_at(&event.id(), &event.sender()) {
            return Err(UNAUTHORIZED_REASON.to_owned());
        }
        let pt = decrypt_message(&mut self.keys, event).map_err(|e| e.to_string())?;
        let content = Content::from_bytes(&pt).map_err(|e| e.to_string())?;
        // A receipt's content only in a `Receipt` event, and only there.
        if matches!(content, Content::Receipt(_)) != (event.kind() == EventKind::Receipt) {
            return Err("the content does not match the event's kind".to_owned());
        }
        Ok(content)
    }

    /// Derives the room-key state again from the events the DAG holds
    /// (`room repair`, `protocol-spec/app.md` §7): starts from empty keys,
    /// accepts the key shares sealed to this device (in display order, so
    /// a chain is installed before the messages that use it), decrypts
    /// every message of another member, and forgets the chains of senders
    /// who are no longer members. This device's own sending chain cannot be
    /// derived from events: the next send starts a new one. `events` are
    /// the events the DAG holds ([`Rebuild::replay`]).
    pub fn rederive_keys(&mut self, prekeys: &PrekeyRing, events: &[Event]) -> Rederived {
        let roster = std::mem::take(&mut self.keys.roster);
        self.keys = RoomKeys::new(self.room());
        self.keys.roster = roster;
        self.needs_epoch = true;
        self.share_pending.clear();
        let by_id: BTreeMap<EventId, &Event> = events.iter().map(|e| (e.id(), e)).collect();
        let mut out = Rederived::default();
        for id in self.dag.display_order() {
            let Some(ev) = by_id.get(&id) else { continue };
            if ev.sender() == self.me {
                continue;
            }
            match ev.kind() {
                EventKind::KeyShare => match accept_key_share(&mut self.dag, ev, &self.me, prekeys)
                {
                    Ok(accepted) => self.install_share(accepted),
                    Err(KeyError::Share(KeyShareError::NotForMe)) => {}
                    Err(_) => out.shares_refused += 1,
                },
                EventKind::Message | EventKind::Receipt => match self.decrypt(ev) {
                    Ok(content) => out.readable.push((id, content)),
                    Err(reason) => out.unreadable.push((id, reason)),
                },
                EventKind::Membership => {
                    self.take_roster_secret(ev, prekeys);
                }
                _ => {}
            }
        }
        let now = self.dag.members();
        let gone: Vec<DeviceId> = self
            .keys
            .senders()
            .into_iter()
            .filter(|d| !now.is_member(d))
            .collect();
        for d in &gone {
            self.keys.forget_sender(d);
        }
        self.members_seen = now;
        out
    }

    /// Handles one verified-or-not incoming event of this room. The caller
    /// stores the event (if the DAG accepted or holds it) and persists
    /// [`RoomSession::keys_bytes`] afterwards.
    pub fn receive(
        &mut self,
        prekeys: &PrekeyRing,
        event: &Event,
    ) -> Result<Vec<Received>, SessionError> {
        if event.sender() == self.me
            && !self.dag.contains(&event.id())
            && event.seq() >= self.next_seq
        {
            // Another copy of this device used our sequence numbers: continue
            // above them and start a new chain before the next message.
            self.next_seq = event.seq() + 1;
            self.needs_epoch = true;
        }
        let accepted = match self.dag.insert_full(event)? {
            (Inserted::Duplicate, _) => return Ok(Vec::new()),
            (Inserted::Pending { missing }, _) => {
                return Ok(vec![Received::Pending {
                    event_id: event.id(),
                    missing,
                }]);
            }
            (Inserted::Accepted(_), events) => events,
        };
        let mut out = Vec::new();
        let mut membership_changed = false;
        for ev in accepted {
            let id = ev.id();
            if id != event.id() {
                out.push(Received::Released { event_id: id });
            }
            if ev.sender() == self.me {
                continue;
            }
            match ev.kind() {
                EventKind::KeyShare => {
                    match accept_key_share(&mut self.dag, &ev, &self.me, prekeys) {
                        Ok(accepted) => {
                            let sender = accepted.chain.sender();
                            self.install_share(accepted);
                            out.push(Received::KeysInstalled { sender });
                        }
                        Err(KeyError::Share(KeyShareError::NotForMe)) => {}
                        Err(e) => out.push(Received::KeyRejected {
                            event_id: id,
                            reason: e.to_string(),
                        }),
                    }
                }
                EventKind::PrekeyUpdate => match accept_prekey_update(&mut self.dag, &ev) {
                    Ok(u) => self.note_prekey_update(ev.sender(), u),
                    Err(e) => out.push(Received::KeyRejected {
                        event_id: id,
                        reason: e.to_string(),
                    }),
                },
                EventKind::Message | EventKind::Receipt => {
                    let (sender, ts) = (ev.sender(), ev.origin_ts_ms());
                    out.push(match self.decrypt(&ev) {
                        Ok(content) => Received::Message {
                            event_id: id,
                            sender,
                            ts,
                            content,
                        },
                        Err(reason) => Received::Undecryptable {
                            event_id: id,
                            sender,
                            ts,
                            reason,
                        },
                    });
                }
                EventKind::Membership => {
                    membership_changed = true;
                    self.take_roster_secret(&ev, prekeys);
                    out.push(Received::Membership {
                        event_id: id,
                        rejected: None,
                    });
                }
                _ => {}
            }
        }
        if membership_changed {
            let res = self.dag.resolve().clone();
            for r in &mut out {
                if let Received::Membership { event_id, rejected } = r {
                    *rejected = res
                        .verdicts
                        .get(event_id)
                        .and_then(|v| v.as_ref().err())
                        .map(|e| e.to_string());
                }
            }
            let now = res.state;
            if needs_new_epoch(&self.members_seen, &now) {
                self.needs_epoch = true;
            }
            // A removed (or departed) member's chains are forgotten: its
            // messages at later positions can no longer be decrypted here.
            for d in self.members_seen.members.keys() {
                if !now.is_member(d) {
                    self.keys.forget_sender(d);
                }
            }
            for d in now.members.keys() {
                if *d != self.me && !self.members_seen.is_member(d) {
                    self.share_pending.insert(*d);
                }
            }
            self.share_pending.retain(|d| now.is_member(d));
            self.members_seen = now;
        }
        Ok(out)
    }
}
